import { parentPort, workerData } from 'node:worker_threads';
import { TokenFormerError } from '../util/errors.ts';
import { exportCheckpoint } from './export.ts';
import type { Quantization } from './quantize.ts';

/**
 * Worker entry of `exportInBackground` (./background.ts): exports one checkpoint and reports.
 * Building and serializing the graphs is seconds of CPU a serving event loop must not spend.
 */

export interface ExportJob {
  checkpoint: string;
  out: string;
  quantize?: Quantization;
}

export type ExportReply = { ok: true } | { ok: false; code: string | null; message: string };

if (!parentPort) throw new Error('src/export/export-worker.ts must run in a worker thread');
const port = parentPort;
const job = workerData as ExportJob;
exportCheckpoint(job.checkpoint, job.out, job.quantize ? { quantize: job.quantize } : {}).then(
  () => port.postMessage({ ok: true } satisfies ExportReply),
  (err: unknown) =>
    port.postMessage({
      ok: false,
      code: err instanceof TokenFormerError ? err.code : null,
      message: err instanceof Error ? err.message : String(err),
    } satisfies ExportReply),
);

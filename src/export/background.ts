import { type ErrorCode, TokenFormerError } from '../util/errors.ts';
import { startWorker } from '../util/worker.ts';
import type { ExportJob, ExportReply } from './export-worker.ts';
import type { Quantization } from './quantize.ts';

/** Exports a checkpoint in a worker thread, so the caller's event loop keeps serving meanwhile. */
export function exportInBackground(checkpoint: string, out: string, quantize?: Quantization): Promise<void> {
  const worker = startWorker(new URL('./export-worker.ts', import.meta.url), {
    workerData: { checkpoint, out, ...(quantize ? { quantize } : {}) } satisfies ExportJob,
  });
  return new Promise<void>((resolve, reject) => {
    worker.once('message', (r: ExportReply) => {
      if (r.ok) resolve();
      else
        reject(
          r.code
            ? new TokenFormerError(r.code as ErrorCode, r.message)
            : new Error(`export failed: ${r.message}`),
        );
    });
    worker.once('error', reject);
    worker.once('exit', (code) =>
      reject(
        new TokenFormerError('TF_ERR_RUNTIME', `the export worker exited (code ${code}) before finishing`),
      ),
    );
  }).finally(() => void worker.terminate());
}

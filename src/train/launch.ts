import { type ErrorCode, TokenFormerError } from '../util/errors.ts';
import { startWorker } from '../util/worker.ts';
import type { TrainEvent, TrainOptions } from './run.ts';
import type { WorkerMessage } from './worker.ts';

/** Runs `runTraining` in a worker thread, forwarding its events; rejects with its error. */
export function trainInWorker(opts: TrainOptions, onEvent: (e: TrainEvent) => void): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const worker = startWorker(new URL('./worker.ts', import.meta.url), { workerData: opts });
    let failed = false;
    worker.on('message', (m: WorkerMessage) => {
      if (m.type === 'error') {
        failed = true;
        reject(
          m.code
            ? new TokenFormerError(m.code as ErrorCode, m.message)
            : Object.assign(new Error(m.message), { stack: m.stack }),
        );
      } else onEvent(m);
    });
    worker.on('error', (err) => {
      failed = true;
      reject(err);
    });
    worker.on('exit', (code) => {
      if (failed) return;
      if (code === 0) resolvePromise();
      else reject(new Error(`training worker exited with code ${code}`));
    });
  });
}

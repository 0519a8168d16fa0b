import { type ErrorCode, TokenFormerError } from '../util/errors.ts';
import { startWorker } from '../util/worker.ts';
import type { TrainEvent, TrainOptions, TrainOutcome } from './run.ts';
import type { TrainWorkerData, WorkerMessage } from './worker.ts';

/**
 * Runs `runTraining` in a worker thread, forwarding its events; rejects with its error. Aborting
 * `signal` asks the run to stop at the next step boundary with a checkpoint saved ('stopped').
 */
export function trainInWorker(
  opts: TrainOptions,
  onEvent: (e: TrainEvent) => void,
  control: { signal?: AbortSignal } = {},
): Promise<TrainOutcome> {
  return new Promise((resolvePromise, reject) => {
    // Shared memory, not a message: the worker's thread may be busy inside a step when it is set.
    const stop = new Int32Array(new SharedArrayBuffer(4));
    const onAbort = () => Atomics.store(stop, 0, 1);
    if (control.signal?.aborted) onAbort();
    control.signal?.addEventListener('abort', onAbort, { once: true });
    const data: TrainWorkerData = { opts, stop };
    const worker = startWorker(new URL('./worker.ts', import.meta.url), { workerData: data });
    let failed = false;
    let outcome: TrainOutcome = 'done';
    worker.on('message', (m: WorkerMessage) => {
      if (m.type === 'error') {
        failed = true;
        reject(
          m.code
            ? new TokenFormerError(m.code as ErrorCode, m.message)
            : Object.assign(new Error(m.message), { stack: m.stack }),
        );
      } else {
        if (m.type === 'stopped') outcome = 'stopped';
        onEvent(m);
      }
    });
    worker.on('error', (err) => {
      failed = true;
      reject(err);
    });
    worker.on('exit', (code) => {
      control.signal?.removeEventListener('abort', onAbort);
      if (failed) return;
      if (code === 0) resolvePromise(outcome);
      else reject(new Error(`training worker exited with code ${code}`));
    });
  });
}

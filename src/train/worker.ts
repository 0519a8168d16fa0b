import { parentPort, workerData } from 'node:worker_threads';
import { TokenFormerError } from '../util/errors.ts';
import { runTraining, type TrainEvent, type TrainOptions } from './run.ts';

/**
 * Training runs here, off the main thread: onnxruntime's run() blocks its thread for the whole
 * step (DESIGN.md §3), and the main thread keeps drawing progress. Messages are small events.
 */

export type WorkerMessage = TrainEvent | { type: 'error'; message: string; code?: string; stack?: string };

/** `stop[0]` becomes 1 when the run should stop at the next step boundary. */
export interface TrainWorkerData {
  opts: TrainOptions;
  stop: Int32Array;
}

const port = parentPort;
if (!port) throw new Error('src/train/worker.ts must run in a worker thread');

const { opts, stop } = workerData as TrainWorkerData;
runTraining(opts, (e) => port.postMessage(e satisfies WorkerMessage), {
  stopRequested: () => Atomics.load(stop, 0) === 1,
}).catch((err: unknown) => {
  const msg: WorkerMessage =
    err instanceof TokenFormerError
      ? { type: 'error', message: err.message, code: err.code }
      : {
          type: 'error',
          message: String((err as Error)?.message ?? err),
          stack: (err as Error)?.stack ?? '',
        };
  port.postMessage(msg);
});

import { parentPort, workerData } from 'node:worker_threads';
import { TokenFormerError } from '../util/errors.ts';
import type { FromWorker, SequenceUpdate, ToWorker, WorkerConfig } from './protocol.ts';
import { ModelRunner } from './runner.ts';
import { Scheduler } from './scheduler.ts';
import { Scorer } from './scorer.ts';

/**
 * The model worker: one loaded model, its onnxruntime session and KV cache, and the scheduler.
 * onnxruntime's run() blocks this thread for a whole step; the HTTP event loop never calls it.
 * Between steps the worker yields so that new requests and cancellations are taken in.
 */

if (!parentPort) throw new Error('src/engine/worker.ts must run in a worker thread');
const port = parentPort;
const cfg = workerData as WorkerConfig;
const send = (m: FromWorker) => port.postMessage(m);

async function main(): Promise<void> {
  let fallbackReason: string | undefined;
  const runner = await ModelRunner.create(cfg.exportDir, {
    device: cfg.device,
    maxSequences: cfg.maxSequences,
    ...(cfg.threads ? { threads: cfg.threads } : {}),
    onFallback: (r) => {
      fallbackReason = r;
    },
  });
  const scheduler = new Scheduler(runner, cfg);
  const sendStep = (updates: SequenceUpdate[]) => {
    const kv = runner.stats();
    send({
      type: 'step',
      updates,
      stats: {
        running: scheduler.runningCount,
        waiting: scheduler.waitingCount,
        kvUsage: kv.usage,
        kvBytes: kv.totalBytes,
        kvBytesPerToken: kv.bytesPerToken,
      },
    });
  };
  // Opened on the first scoring request (a second session over the full-sequence graph).
  let scorer: Promise<Scorer> | undefined;
  const score = async (m: Extract<ToWorker, { type: 'score' }>) => {
    try {
      scorer ??= Scorer.create(cfg.exportDir, {
        device: runner.device,
        ...(cfg.threads ? { threads: cfg.threads } : {}),
      }).catch((err: unknown) => {
        scorer = undefined; // the next request tries again
        throw err;
      });
      const tokens = await (await scorer).score(m.prompt, m.top);
      send({ type: 'scored', id: m.id, tokens });
    } catch (err) {
      const e = err instanceof TokenFormerError ? err : new TokenFormerError('TF_ERR_RUNTIME', String(err));
      send({ type: 'score-failed', id: m.id, code: e.code, message: e.message });
    }
  };
  let looping = false;
  let closing = false;
  let crashing = false;
  const crash = () =>
    setImmediate(() => {
      throw new Error('injected crash (Engine.kill)');
    });

  const loop = async () => {
    if (looping) return;
    looping = true;
    try {
      while (!scheduler.idle && !closing) {
        const r = await scheduler.step();
        for (const a of r.admitted) send({ type: 'admitted', ...a });
        sendStep(r.updates);
        if (crashing) return crash();
        await new Promise((r) => setImmediate(r)); // take in adds and cancels
      }
    } catch (err) {
      send({ type: 'fatal', message: err instanceof Error ? err.message : String(err) });
    } finally {
      looping = false;
    }
  };

  port.on('message', (m: ToWorker) => {
    switch (m.type) {
      case 'add':
        try {
          scheduler.add(m.id, m.prompt, m.params, m.moved);
          void loop();
        } catch (err) {
          const e =
            err instanceof TokenFormerError ? err : new TokenFormerError('TF_ERR_RUNTIME', String(err));
          send({ type: 'rejected', id: m.id, code: e.code, message: e.message });
        }
        break;
      case 'detach':
        void scheduler.detach(m.id, m.withKv).then((snapshot) => {
          const transfer = snapshot
            ? [...snapshot.keys, ...snapshot.values].map((a) => a.buffer as ArrayBuffer)
            : [];
          port.postMessage({ type: 'detached', id: m.id, snapshot } satisfies FromWorker, transfer);
        });
        void loop();
        break;
      case 'score':
        void score(m);
        break;
      case 'cancel':
        scheduler.cancel(m.id);
        sendStep([]); // the freed slot shows in the stats at once
        break;
      case 'crash':
        // Never mid-run: a worker thread torn down while onnxruntime runs aborts the process.
        crashing = true;
        if (!looping) crash();
        break;
      case 'shutdown':
        closing = true;
        void Promise.all([
          runner.close(),
          scorer?.then(
            (s) => s.close(),
            () => {},
          ),
        ]).then(() => process.exit(0));
        break;
    }
  });
  send({
    type: 'ready',
    device: runner.device,
    ...(fallbackReason ? { fallbackReason } : {}),
    vocabSize: runner.vocabSize,
    maxSeqLen: runner.config.max_seq_len,
  });
}

main().catch((err: unknown) =>
  send({ type: 'fatal', message: err instanceof Error ? err.message : String(err) }),
);

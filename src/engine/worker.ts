import { parentPort, workerData } from 'node:worker_threads';
import { TokenFormerError } from '../util/errors.ts';
import type { FromWorker, SequenceUpdate, ToWorker, WorkerConfig } from './protocol.ts';
import { ModelRunner } from './runner.ts';
import { Scheduler } from './scheduler.ts';
import { Scorer } from './scorer.ts';
import { Speculator } from './speculative.ts';

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
  const { draft, speculator, draftStatus } = await loadDraft(runner, cfg);
  const scheduler = new Scheduler(runner, cfg, speculator);
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
        specDrafted: speculator?.totals.drafted ?? 0,
        specAccepted: speculator?.totals.accepted ?? 0,
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
          send({ type: 'queued', id: m.id });
          void loop();
        } catch (err) {
          const e =
            err instanceof TokenFormerError ? err : new TokenFormerError('TF_ERR_RUNTIME', String(err));
          send({ type: 'rejected', id: m.id, code: e.code, message: e.message });
        }
        break;
      case 'detach':
        void scheduler.detach(m.id, m.withKv).then((detached) => {
          const kv = detached.kv;
          const transfer = kv ? [...kv.keys, ...kv.values].map((a) => a.buffer as ArrayBuffer) : [];
          port.postMessage({ type: 'detached', id: m.id, detached } satisfies FromWorker, transfer);
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
          draft?.close(),
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
    ...(draftStatus ? { draft: draftStatus } : {}),
  });
}

/**
 * Loads the draft model when one is configured. A draft that cannot serve this target (another
 * vocabulary, a shorter context, an export without verification) or fails to load leaves the
 * target serving alone, with the reason reported.
 */
async function loadDraft(
  target: ModelRunner,
  c: WorkerConfig,
): Promise<{
  draft?: ModelRunner;
  speculator?: Speculator;
  draftStatus?: { used: true } | { used: false; reason: string };
}> {
  if (!c.draft) return {};
  let draft: ModelRunner | undefined;
  try {
    draft = await ModelRunner.create(c.draft.exportDir, {
      device: target.device,
      maxSequences: c.maxSequences,
      ...(c.threads ? { threads: c.threads } : {}),
    });
    const why = draftMismatch(target, draft);
    if (why) {
      await draft.close();
      return { draftStatus: { used: false, reason: why } };
    }
    const speculator = new Speculator(target, draft, {
      ...(c.draft.maxDraft !== undefined ? { maxDraft: c.draft.maxDraft } : {}),
      ...(c.draft.maxBatch !== undefined ? { maxBatch: c.draft.maxBatch } : {}),
    });
    return { draft, speculator, draftStatus: { used: true } };
  } catch (err) {
    await draft?.close();
    return { draftStatus: { used: false, reason: err instanceof Error ? err.message : String(err) } };
  }
}

function draftMismatch(target: ModelRunner, draft: ModelRunner): string | undefined {
  if (!target.canVerify)
    return 'the served export has no logit_positions input (exported before speculative decoding)';
  if (!draft.canVerify)
    return 'the draft export has no logit_positions input (exported before speculative decoding)';
  if (draft.vocabSize !== target.vocabSize)
    return `the draft's vocabulary (${draft.vocabSize}) differs from the target's (${target.vocabSize})`;
  if (draft.config.max_seq_len < target.config.max_seq_len)
    return `the draft's context (${draft.config.max_seq_len}) is shorter than the target's (${target.config.max_seq_len})`;
  return undefined;
}

main().catch((err: unknown) =>
  send({ type: 'fatal', message: err instanceof Error ? err.message : String(err) }),
);

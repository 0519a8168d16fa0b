import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Engine, type GenerationEvent } from '../../src/engine/engine.ts';
import { validateSamplingParams } from '../../src/engine/sampling/params.ts';
import { OrtSession } from '../../src/runtime/ort.ts';
import { tempDir } from '../helpers.ts';
import { servedModel } from './served-model.ts';

let engine: Engine;
let exportDir: string;
const cleanups: (() => void)[] = [];

before(async () => {
  const dir = tempDir({ after: (fn) => cleanups.push(fn) });
  exportDir = (await servedModel(dir)).exportDir;
  engine = await Engine.start({
    exportDir,
    device: 'cpu',
    threads: 1,
    maxSequences: 4,
    maxQueue: 3,
    prefillChunk: 16,
  });
});
after(async () => {
  await engine.close();
  for (const c of cleanups) c();
});

async function collect(it: AsyncIterable<GenerationEvent>) {
  let text = '';
  const tokens: number[] = [];
  let done: Extract<GenerationEvent, { type: 'done' }> | undefined;
  for await (const e of it) {
    if (e.type === 'delta') {
      text += e.text;
      tokens.push(...e.tokens.map((t) => t.token));
    } else done = e;
  }
  return { text, tokens, done: done! };
}

/** Greedy continuation by recomputing the full-sequence model.onnx at every step. */
async function referenceGreedy(prompt: number[], n: number): Promise<number[]> {
  const s = await OrtSession.create(join(exportDir, 'model.onnx'), { device: 'cpu' });
  const seq = [...prompt];
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const r = await s.run({ input_ids: [BigInt64Array.from(seq, BigInt), [1, seq.length]] });
    const logits = r.logits!.data as Float32Array;
    const row = logits.subarray((seq.length - 1) * 512, seq.length * 512);
    let best = 0;
    for (let v = 1; v < 512; v++) if (row[v]! > row[best]!) best = v;
    out.push(best);
    seq.push(best);
  }
  await s.release();
  return out;
}

/** Waits (bounded) until the engine's reported stats satisfy `ok`. */
async function until(ok: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end)
      throw new Error(`condition not reached in ${ms} ms; stats ${JSON.stringify(engine.stats)}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const greedy = (over: Record<string, unknown> = {}) =>
  validateSamplingParams({ temperature: 0, max_tokens: 12, ignore_eos: true, ...over });

test('greedy generation through the engine equals recomputing model.onnx at every step', async () => {
  const prompt = engine.tokenizer.encode('Call me Ishmael. Some years ago');
  const r = await collect(engine.generate(prompt, greedy()));
  assert.deepEqual(r.tokens, await referenceGreedy(prompt, 12));
  assert.equal(r.text, engine.tokenizer.decode(r.tokens));
  assert.deepEqual(r.done, {
    type: 'done',
    finishReason: 'length',
    promptTokens: prompt.length,
    completionTokens: 12,
  });
});

test('concurrent requests with different prompt lengths (continuous batching) each match their solo run', async () => {
  const prompts = [
    'It is a way I have',
    'Whenever I find myself growing grim about the mouth; whenever it is a damp, drizzly November in my soul',
    'Now',
  ].map((t) => engine.tokenizer.encode(t));
  const solo = [];
  for (const p of prompts) solo.push((await collect(engine.generate(p, greedy({ max_tokens: 9 })))).tokens);
  const together = await Promise.all(
    prompts.map(async (p, i) => {
      await new Promise((r) => setTimeout(r, i * 15)); // join at different steps
      return (await collect(engine.generate(p, greedy({ max_tokens: 9 })))).tokens;
    }),
  );
  assert.deepEqual(together, solo);
});

test('same seed and request ⇒ same text; stop strings end the text before the match', async () => {
  const prompt = engine.tokenizer.encode('The sea');
  const sampled = validateSamplingParams({
    temperature: 1,
    top_p: 0.95,
    seed: 42,
    max_tokens: 20,
    ignore_eos: true,
  });
  const a = await collect(engine.generate(prompt, sampled));
  const b = await collect(engine.generate(prompt, sampled));
  assert.equal(a.text, b.text);
  assert.ok(a.text.length > 0);
  const stopAt = a.text.slice(3, 5);
  const stopped = await collect(engine.generate(prompt, { ...sampled, stop: [stopAt] }));
  assert.equal(stopped.done.finishReason, 'stop');
  assert.equal(stopped.text, a.text.slice(0, a.text.indexOf(stopAt)));
});

test('aborting a stream frees its sequence; a full queue is refused with TF_ERR_QUEUE_FULL', async () => {
  const ac = new AbortController();
  let deltas = 0;
  for await (const e of engine.generate(
    engine.tokenizer.encode('a'),
    greedy({ max_tokens: 200 }),
    ac.signal,
  )) {
    if (e.type === 'delta' && ++deltas === 3) ac.abort();
  }
  assert.equal(deltas, 3);
  await until(() => engine.stats.running === 0);
  // 4 running + 3 waiting fill the engine; the next request is refused.
  const acs = Array.from({ length: 7 }, () => new AbortController());
  const runs = acs.map((c) =>
    collect(engine.generate(engine.tokenizer.encode('b'), greedy({ max_tokens: 400 }), c.signal)),
  );
  await until(() => engine.stats.running === 4 && engine.stats.waiting === 3);
  await assert.rejects(
    collect(engine.generate(engine.tokenizer.encode('c'), greedy())),
    (err: Error & { code?: string }) => err.code === 'TF_ERR_QUEUE_FULL',
  );
  for (const c of acs) c.abort();
  await Promise.all(runs);
  await until(() => engine.stats.running === 0 && engine.stats.waiting === 0);
  const again = await collect(engine.generate(engine.tokenizer.encode('d'), greedy({ max_tokens: 2 })));
  assert.equal(again.tokens.length, 2);
  assert.equal(engine.stats.running, 0);
  assert.equal(engine.stats.waiting, 0);
});

test('prompts that do not fit the context are refused, not truncated', async () => {
  const long = Array.from({ length: 2048 }, () => 5);
  await assert.rejects(
    collect(engine.generate(long, greedy())),
    /maximum context length is 2048 tokens\. However, the prompt has 2048 tokens/,
  );
});

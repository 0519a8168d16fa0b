import assert from 'node:assert/strict';
import { symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { GenerationEvent } from '../../src/engine/engine.ts';
import { confineModelPath } from '../../src/engine/model-store.ts';
import { ModelRegistry } from '../../src/engine/registry.ts';
import { validateSamplingParams } from '../../src/engine/sampling/params.ts';
import { tempDir } from '../helpers.ts';
import { swapModelsRoot } from './served-model.ts';

let root: string;
let registry: ModelRegistry;
const cleanups: (() => void)[] = [];
const moves: { kvMoved: boolean; reason: string }[] = [];

before(async () => {
  const dir = tempDir({ after: (fn) => cleanups.push(fn) });
  root = await swapModelsRoot(dir);
  registry = await ModelRegistry.open('a', {
    modelsRoot: root,
    cacheDir: join(dir, 'cache'),
    engine: { device: 'cpu', threads: 1, maxSequences: 4, maxQueue: 4, prefillChunk: 64 },
  });
  registry.on('migrated', (e: { kvMoved: boolean; reason: string }) => moves.push(e));
});
after(async () => {
  await registry.close();
  for (const c of cleanups) c();
});

const greedy = (n: number, penalties = {}) =>
  validateSamplingParams({ temperature: 0, max_tokens: n, ignore_eos: true, ...penalties });

/** Text, tokens and, per token, the name of the model that produced it. */
async function collect(it: AsyncIterable<GenerationEvent>, onDelta?: (n: number) => void | Promise<void>) {
  let text = '';
  let n = 0;
  const tokens: number[] = [];
  const models: string[] = [];
  let done: Extract<GenerationEvent, { type: 'done' }> | undefined;
  for await (const e of it) {
    if (e.type === 'done') done = e;
    else if (!e.queued) {
      text += e.text;
      for (const t of e.tokens) {
        tokens.push(t.token);
        models.push(e.model?.name ?? '?');
      }
      await onDelta?.(++n);
    }
  }
  return { text, tokens, models, done: done! };
}

/**
 * Swaps to `to` with a stream in flight: the stream starts once the new model is ready (before
 * traffic moves) and the switch happens after its `after`-th delta, so it surely migrates.
 */
async function swapMidStream(prompt: number[], maxTokens: number, to: string, after: number, penalties = {}) {
  let stream: ReturnType<typeof collect> | undefined;
  const result = await registry.swap(to, 'migrate', {
    beforeSwitch: () =>
      new Promise<void>((reached) => {
        stream = collect(registry.generate(prompt, greedy(maxTokens, penalties)), (n) => {
          if (n === after) reached();
        });
      }),
  });
  return { result, out: await stream! };
}

test("migrate after a zero/keep growth: the KV cache moves as is and the continuation is the old model's", async () => {
  const prompt = registry.model.engine.tokenizer.encode('Call me Ishmael.');
  const reference = await collect(registry.generate(prompt, greedy(200)));
  assert.equal(registry.model.name, 'a');
  const { result, out } = await swapMidStream(prompt, 200, 'b', 5);
  assert.equal(result.to.name, 'b');
  assert.equal(result.migrated, 1);
  assert.equal(registry.model.name, 'b');
  // b was grown from a's exact weights with zero keys and τ kept, and not trained since (its
  // lineage says so): the KV cache moved as is, no re-prefill.
  assert.equal(result.kvMoved, true);
  assert.deepEqual(moves.splice(0), [{ kvMoved: true, reason: 'swap' }]);
  // The greedy continuation is exactly the old model's, and the stream never broke.
  assert.deepEqual(out.tokens, reference.tokens);
  assert.equal(out.text, reference.text);
  assert.equal(out.done.completionTokens, 200);
  // Every token says which model produced it: a's first, then b's.
  const split = out.models.indexOf('b');
  assert.ok(split >= 5 && split < 200, `first token from b at ${split}`);
  assert.ok(out.models.slice(0, split).every((m) => m === 'a'));
  assert.ok(out.models.slice(split).every((m) => m === 'b'));
});

test('migrate to a different function (random keys, τ recomputed): re-prefilled, then exactly what the new model generates for that prefix', async () => {
  assert.equal(registry.model.name, 'b');
  const prompt = registry.model.engine.tokenizer.encode('It was the best of times');
  const { result, out } = await swapMidStream(prompt, 120, 'c', 4);
  assert.equal(result.kvMoved, false);
  assert.equal(result.migrated, 1);
  assert.deepEqual(moves.splice(0), [{ kvMoved: false, reason: 'swap' }]);
  const split = out.models.indexOf('c');
  assert.ok(split >= 4 && split < 120, `first token from c at ${split}`);
  assert.ok(out.models.slice(split).every((m) => m === 'c'));
  // The new model's own greedy continuation of prompt + the old model's tokens.
  const fresh = await collect(
    registry.generate([...prompt, ...out.tokens.slice(0, split)], greedy(120 - split)),
  );
  assert.deepEqual(out.tokens.slice(split), fresh.tokens);
  assert.equal(out.done.completionTokens, 120);
  // Back to a for the tests below (c → a: another function, the KV cache cannot move).
  const back = await registry.swap('a', 'migrate');
  assert.equal(back.kvMoved, false);
});

test('drain: open streams finish on the old model, new requests go to the new one', async () => {
  const prompt = registry.model.engine.tokenizer.encode('The sea');
  const oldEngine = registry.model.engine;
  let swapped: unknown;
  const draining = await collect(registry.generate(prompt, greedy(30)), async (n) => {
    if (n === 3) swapped = await registry.swap('a', 'drain');
  });
  assert.equal((swapped as { draining: number }).draining, 1);
  assert.equal(draining.done.completionTokens, 30);
  assert.equal(registry.model.name, 'a');
  assert.notEqual(registry.model.engine, oldEngine);
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(oldEngine.openStreams, 0);
});

test('a migrated seeded stream goes on with its random stream: after a zero/keep growth the sampled text is unchanged', async () => {
  assert.equal(registry.model.name, 'a');
  const sampled = { temperature: 1.5, seed: 7, frequency_penalty: 1 };
  const prompt = registry.model.engine.tokenizer.encode('Call me Ishmael.');
  const reference = await collect(registry.generate(prompt, greedy(120, sampled)));
  // Another seed gives another text: the test can tell a fresh random stream from the carried one.
  const other = await collect(registry.generate(prompt, greedy(120, { ...sampled, seed: 8 })));
  assert.notDeepEqual(other.tokens, reference.tokens);
  const { result, out } = await swapMidStream(prompt, 120, 'b', 30, sampled);
  assert.equal(result.kvMoved, true);
  assert.ok(out.models.indexOf('b') >= 30, 'the move happened after 30 tokens');
  assert.deepEqual(out.tokens, reference.tokens);
  moves.splice(0);
  await registry.swap('a', 'drain');
});

test('a migrated stream keeps its penalties: tokens generated before the move still count as output', async () => {
  assert.equal(registry.model.name, 'a');
  const penalties = { frequency_penalty: 1.5, presence_penalty: 0.5 };
  const prompt = registry.model.engine.tokenizer.encode('Call me Ishmael.');
  const reference = await collect(registry.generate(prompt, greedy(120, penalties)));
  // Without the penalties the model says something else: the test can tell them apart.
  const plain = await collect(registry.generate(prompt, greedy(120)));
  assert.notDeepEqual(plain.tokens, reference.tokens);
  // b computes a's function (zero keys, τ kept): a move must not change the continuation.
  const { result, out } = await swapMidStream(prompt, 120, 'b', 30, penalties);
  assert.equal(result.migrated, 1);
  assert.ok(out.models.indexOf('b') >= 30, 'the move happened after 30 tokens');
  assert.deepEqual(out.tokens, reference.tokens);
  moves.splice(0);
});

test('a failed swap leaves the old model serving and says why; concurrent swaps are refused', async () => {
  const before = registry.model;
  await assert.rejects(registry.swap('bad', 'drain'), /config.json/);
  assert.equal(registry.model, before);
  const r = await collect(registry.generate(before.engine.tokenizer.encode('x'), greedy(3)));
  assert.equal(r.done.completionTokens, 3);
  const first = registry.swap('b', 'drain');
  await assert.rejects(
    registry.swap('b', 'drain'),
    (err: Error & { code?: string }) => err.code === 'TF_ERR_SWAP_IN_PROGRESS',
  );
  await first;
  await assert.rejects(registry.swap('a', 'sideways' as 'drain'), /policy must be "drain" or "migrate"/);
});

test('model paths are confined to the models root', () => {
  assert.throws(() => confineModelPath(root, '../served'), /not inside the models root/);
  assert.throws(() => confineModelPath(root, '/etc'), /not inside the models root/);
  assert.throws(() => confineModelPath(root, 'nope'), /does not exist/);
  symlinkSync('/tmp', join(root, 'escape'));
  assert.throws(() => confineModelPath(root, 'escape'), /resolves outside the models root/);
  assert.ok(confineModelPath(root, 'a').endsWith('/a'));
  assert.deepEqual(
    registry
      .list()
      .map((m) => m.name)
      .sort(),
    ['a', 'b', 'bad', 'c'],
  );
});

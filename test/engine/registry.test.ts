import assert from 'node:assert/strict';
import { symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { GenerationEvent } from '../../src/engine/engine.ts';
import { confineModelPath, ModelRegistry } from '../../src/engine/registry.ts';
import { validateSamplingParams } from '../../src/engine/sampling/params.ts';
import { tempDir } from '../helpers.ts';
import { swapModelsRoot } from './served-model.ts';

let root: string;
let registry: ModelRegistry;
const cleanups: (() => void)[] = [];

before(async () => {
  const dir = tempDir({ after: (fn) => cleanups.push(fn) });
  root = await swapModelsRoot(dir);
  registry = await ModelRegistry.open('a', {
    modelsRoot: root,
    cacheDir: join(dir, 'cache'),
    engine: { device: 'cpu', threads: 1, maxSequences: 4, maxQueue: 4, prefillChunk: 64 },
  });
});
after(async () => {
  await registry.close();
  for (const c of cleanups) c();
});

const greedy = (n: number) => validateSamplingParams({ temperature: 0, max_tokens: n, ignore_eos: true });

async function collect(it: AsyncIterable<GenerationEvent>, onDelta?: (n: number) => void | Promise<void>) {
  let text = '';
  let n = 0;
  let done: Extract<GenerationEvent, { type: 'done' }> | undefined;
  for await (const e of it) {
    if (e.type === 'done') done = e;
    else {
      text += e.text;
      await onDelta?.(++n);
    }
  }
  return { text, done: done! };
}

test('migrate: a stream open during the swap continues on the new model without a break', async () => {
  const prompt = registry.model.engine.tokenizer.encode('Call me Ishmael.');
  const reference = await collect(registry.generate(prompt, greedy(40)));
  assert.equal(registry.model.name, 'a');
  let swap: Promise<unknown> | undefined;
  const migrated = await collect(registry.generate(prompt, greedy(40)), async (n) => {
    if (n === 5) swap = registry.swap('b', 'migrate');
    if (n === 6) await swap; // keep decoding on "a" while "b" loads, then continue
  });
  const result = (await swap) as { migrated: number; to: { name: string } };
  assert.equal(result.to.name, 'b');
  assert.equal(result.migrated, 1);
  assert.equal(registry.model.name, 'b');
  // b computes the same function as a (growth with zero keys and τ kept): identical text.
  assert.equal(migrated.text, reference.text);
  assert.deepEqual(migrated.done, reference.done);
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
    ['a', 'b', 'bad'],
  );
});

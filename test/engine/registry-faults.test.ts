import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { GenerationEvent } from '../../src/engine/engine.ts';
import { ModelRegistry, type RegistryOptions } from '../../src/engine/registry.ts';
import { validateSamplingParams } from '../../src/engine/sampling/params.ts';
import { tempDir } from '../helpers.ts';
import { swapModelsRoot } from './served-model.ts';

/**
 * The registry's answers to faults: a model worker that dies mid-stream (the supervisor restarts
 * it and the stream goes on), repeated crashes (it gives up and reports failed), a model over the
 * memory budget (refused before loading) and streams outliving the drain timeout (moved on).
 */

let dir: string;
let root: string;
const cleanups: (() => void)[] = [];
const open: ModelRegistry[] = [];

before(async () => {
  dir = tempDir({ after: (fn) => cleanups.push(fn) });
  root = await swapModelsRoot(dir);
});
after(async () => {
  await Promise.all(open.map((r) => r.close()));
  for (const c of cleanups) c();
});

async function openRegistry(extra: Partial<RegistryOptions> = {}): Promise<ModelRegistry> {
  const r = await ModelRegistry.open('a', {
    modelsRoot: root,
    cacheDir: join(dir, 'cache'),
    engine: { device: 'cpu', threads: 1, maxSequences: 4, maxQueue: 4, prefillChunk: 64 },
    ...extra,
  });
  open.push(r);
  return r;
}

const greedy = (n: number) => validateSamplingParams({ temperature: 0, max_tokens: n, ignore_eos: true });

async function tokens(it: AsyncIterable<GenerationEvent>, onDelta?: (n: number) => void | Promise<void>) {
  const out: number[] = [];
  let n = 0;
  let done: Extract<GenerationEvent, { type: 'done' }> | undefined;
  for await (const e of it) {
    if (e.type === 'done') done = e;
    else {
      out.push(...e.tokens.map((t) => t.token));
      await onDelta?.(++n);
    }
  }
  return { tokens: out, done: done! };
}

test('a worker killed mid-stream is restarted and the stream continues (re-prefilled) without a break', async () => {
  const registry = await openRegistry();
  const events: string[] = [];
  registry.on('crash', () => events.push('crash')).on('restarted', () => events.push('restarted'));
  const prompt = registry.model.engine.tokenizer.encode('Call me Ishmael.');
  const reference = await tokens(registry.generate(prompt, greedy(300)));
  const first = registry.model.engine;
  const killed = await tokens(registry.generate(prompt, greedy(300)), async (n) => {
    if (n === 10) await first.kill();
  });
  assert.deepEqual(events, ['crash', 'restarted']);
  assert.notEqual(registry.model.engine, first);
  assert.equal(registry.state, 'ready');
  // Same weights, greedy: the continuation after the restart is the uninterrupted one.
  assert.deepEqual(killed.tokens, reference.tokens);
  assert.equal(killed.done.completionTokens, 300);
  // New requests are served by the restarted worker.
  assert.equal((await tokens(registry.generate(prompt, greedy(3)))).done.completionTokens, 3);
});

test('repeated crashes back off, then give up: the registry reports failed instead of looping', async () => {
  const registry = await openRegistry({ maxRestarts: 1 });
  const failed = new Promise((r) => registry.once('failed', r));
  await registry.model.engine.kill();
  await new Promise((r) => registry.once('restarted', r));
  assert.equal(registry.state, 'ready');
  await registry.model.engine.kill(); // the second crash within a minute: over maxRestarts
  await failed;
  assert.equal(registry.state, 'failed');
  const prompt = registry.model.engine.tokenizer.encode('x');
  await assert.rejects(
    tokens(registry.generate(prompt, greedy(3))),
    (err: Error & { code?: string }) =>
      err.code === 'TF_ERR_NOT_READY' && /crashed 2 times/.test(err.message),
  );
  await assert.rejects(
    registry.swap('b'),
    (err: Error & { code?: string }) => err.code === 'TF_ERR_NOT_READY',
  );
});

test('a swap that would exceed the memory budget is refused before loading; the old model serves on', async () => {
  const probe = await openRegistry();
  const one = probe.model.memory.totalBytes;
  await probe.close();
  // Room for one model and a half: the first loads, a second one (the swap) does not fit.
  const registry = await openRegistry({ memoryBudgetBytes: Math.floor(one * 1.5) });
  const before = registry.model;
  await assert.rejects(
    registry.swap('b'),
    (err: Error & { code?: string }) =>
      err.code === 'TF_ERR_NO_CAPACITY' &&
      /exceeds the memory budget/.test(err.message) &&
      /"b"/.test(err.message),
  );
  assert.equal(registry.model, before);
  assert.equal(registry.loaded.length, 1);
  const prompt = before.engine.tokenizer.encode('x');
  assert.equal((await tokens(registry.generate(prompt, greedy(2)))).done.completionTokens, 2);
  await assert.rejects(
    ModelRegistry.open('a', {
      modelsRoot: root,
      cacheDir: join(dir, 'cache'),
      engine: { device: 'cpu', threads: 1, maxSequences: 4, maxQueue: 4, prefillChunk: 64 },
      memoryBudgetBytes: Math.floor(one / 2),
    }),
    /exceeds the memory budget/,
  );
});

test('prompt scoring counts against the memory budget once its session is open', async () => {
  const probe = await openRegistry();
  const { memory, scorerMemory } = probe.model;
  await probe.close();
  assert.ok(scorerMemory.weightsBytes > 0, 'the full-sequence graph has weights');
  // Room for two models, not for two models and a scoring session.
  const budget = 2 * memory.totalBytes + Math.floor(scorerMemory.totalBytes / 2);
  const fits = await openRegistry({ memoryBudgetBytes: budget });
  await fits.swap('b', 'drain');
  assert.equal(fits.model.name, 'b');
  await fits.close();
  const registry = await openRegistry({ memoryBudgetBytes: budget });
  const prompt = registry.model.engine.tokenizer.encode('Call me Ishmael.');
  assert.equal((await registry.model.engine.score(prompt, 0)).length, prompt.length - 1);
  await assert.rejects(
    registry.swap('b', 'drain'),
    (err: Error & { code?: string }) => err.code === 'TF_ERR_NO_CAPACITY' && /"b"/.test(err.message),
  );
  assert.equal(registry.model.name, 'a');
  await registry.close();
});

test('drain: streams still open at the drain timeout move to the new model, and the old one is released', async () => {
  const registry = await openRegistry({ drainTimeoutMs: 1 });
  const prompt = registry.model.engine.tokenizer.encode('The sea');
  const reference = await tokens(registry.generate(prompt, greedy(400)));
  const old = registry.model;
  const moved: boolean[] = [];
  registry.on('migrated', (e: { kvMoved: boolean }) => moved.push(e.kvMoved));
  let stream: ReturnType<typeof tokens> | undefined;
  const result = await registry.swap('b', 'drain', {
    beforeSwitch: () =>
      new Promise<void>((reached) => {
        stream = tokens(registry.generate(prompt, greedy(400)), (n) => {
          if (n === 3) reached();
        });
      }),
  });
  assert.equal(result.draining, 1);
  const out = await stream!;
  // b is a zero/keep growth of a: the stream moved with its KV cache, and its text is a's.
  assert.deepEqual(moved, [true]);
  assert.deepEqual(out.tokens, reference.tokens);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(old.engine.openStreams, 0);
  assert.deepEqual(
    registry.loaded.map((m) => m.name),
    ['b'],
  );
});

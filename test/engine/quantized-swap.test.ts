import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { GenerationEvent } from '../../src/engine/engine.ts';
import { ModelRegistry } from '../../src/engine/registry.ts';
import { validateSamplingParams } from '../../src/engine/sampling/params.ts';
import { exportCheckpoint } from '../../src/export/export.ts';
import { tempDir } from '../helpers.ts';
import { swapModelsRoot } from './served-model.ts';

let registry: ModelRegistry;
const cleanups: (() => void)[] = [];

before(async () => {
  const dir = tempDir({ after: (fn) => cleanups.push(fn) });
  const root = await swapModelsRoot(dir);
  await exportCheckpoint(join(root, 'b'), join(root, 'b-int8'), {
    quantize: { bits: 8, blockSize: 16, accuracyLevel: 4 },
  });
  await exportCheckpoint(join(root, 'a'), join(root, 'a-int4'), {
    quantize: { bits: 4, blockSize: 16, accuracyLevel: 4 },
  });
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
  const models: string[] = [];
  let done: Extract<GenerationEvent, { type: 'done' }> | undefined;
  let n = 0;
  for await (const e of it) {
    if (e.type === 'done') done = e;
    else if (!e.queued) {
      for (const _ of e.tokens) models.push(e.model?.name ?? '?');
      await onDelta?.(++n);
    }
  }
  return { models, done: done! };
}

test('float → int8 (an exact growth, but another precision): the stream re-prefills and completes on the quantized model', async () => {
  const prompt = registry.model.engine.tokenizer.encode('Call me Ishmael.');
  let stream: ReturnType<typeof collect> | undefined;
  const result = await registry.swap('b-int8', 'migrate', {
    beforeSwitch: () =>
      new Promise<void>((reached) => {
        stream = collect(registry.generate(prompt, greedy(60)), (n) => {
          if (n === 4) reached();
        });
      }),
  });
  const out = await stream!;
  assert.equal(result.migrated, 1);
  assert.equal(result.kvMoved, false, 'quantized keys/values differ from the float ones');
  assert.equal(out.done.completionTokens, 60);
  const split = out.models.indexOf('b-int8');
  assert.ok(split >= 4 && out.models.slice(split).every((m) => m === 'b-int8'));
  assert.equal(registry.model.engine.manifest.quantization?.bits, 8);
});

test('int8 → int4 → float: quantized models swap in and out and serve', async () => {
  for (const [to, bits] of [
    ['a-int4', 4],
    ['a', undefined],
  ] as const) {
    const r = await registry.swap(to, 'drain');
    assert.equal(r.to.name, to);
    assert.equal(registry.model.engine.manifest.quantization?.bits, bits);
    const out = await collect(
      registry.generate(registry.model.engine.tokenizer.encode('The sea'), greedy(12)),
    );
    assert.equal(out.done.completionTokens, 12);
  }
});

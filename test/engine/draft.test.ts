import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { type DraftContext, resolveDraft } from '../../src/engine/draft.ts';
import type { GenerationEvent } from '../../src/engine/engine.ts';
import { resolveExport } from '../../src/engine/model-dir.ts';
import { confineModelPath } from '../../src/engine/model-store.ts';
import { ModelRegistry } from '../../src/engine/registry.ts';
import { validateSamplingParams } from '../../src/engine/sampling/params.ts';
import { readManifest } from '../../src/export/export.ts';
import { TokenFormerError } from '../../src/util/errors.ts';
import { tempDir } from '../helpers.ts';
import { swapModelsRoot } from './served-model.ts';

/**
 * Draft resolution (`--draft-model`) over the swap test models: "b" and "c" were grown from "a"
 * (their lineage records a's path and weights), "a" from a checkpoint outside the root.
 */

let root: string;
let cache: string;
const cleanups: (() => void)[] = [];

before(async () => {
  const dir = tempDir({ after: (fn) => cleanups.push(fn) });
  root = await swapModelsRoot(dir);
  cache = join(dir, 'cache');
});
after(() => {
  for (const c of cleanups) c();
});

async function target(name: string) {
  const dir = confineModelPath(root, name);
  const { exportDir } = await resolveExport(dir, cache);
  return { name, dir, manifest: readManifest(exportDir) };
}

const ctx = (bytesLeft = 1e12): DraftContext => ({
  modelsRoot: root,
  cacheDir: cache,
  maxSequences: 4,
  bytesLeft,
  resolveName: (n) => confineModelPath(root, n),
});

test('auto finds the parent under the models root from the lineage; none and names are honoured', async () => {
  const b = await target('b');
  const auto = await resolveDraft(b, { model: 'auto' }, ctx(), true);
  assert.equal(auto.draft?.name, 'a');
  assert.equal(auto.draft?.memory.overheadBytes, 0, 'the draft shares the served model worker');
  const none = await resolveDraft(b, { model: 'none' }, ctx(), true);
  assert.equal(none.draft, undefined);
  const named = await resolveDraft(b, { model: 'c' }, ctx(), true);
  assert.equal(named.draft?.name, 'c');
  // "a" was grown from a checkpoint outside the root: no draft, and the reason says so.
  const a = await resolveDraft(await target('a'), { model: 'auto' }, ctx(), true);
  assert.equal(a.draft, undefined);
  assert.match(a.reason!, /parent of "a" .* is not under the models root/);
});

test('a draft over the memory budget: auto goes without, a named one is refused', async () => {
  const b = await target('b');
  const auto = await resolveDraft(b, { model: 'auto' }, ctx(1024), true);
  assert.equal(auto.draft, undefined);
  assert.match(auto.reason!, /memory budget/);
  await assert.rejects(
    resolveDraft(b, { model: 'a' }, ctx(1024), true),
    (e: unknown) => e instanceof TokenFormerError && e.code === 'TF_ERR_NO_CAPACITY',
  );
  // Not strict (a swap): dropped with the reason instead.
  const lenient = await resolveDraft(b, { model: 'a' }, ctx(1024), false);
  assert.match(lenient.reason!, /memory budget/);
  await assert.rejects(resolveDraft(b, { model: 'bad' }, ctx(), true), TokenFormerError);
  await assert.rejects(resolveDraft(b, { model: '../x' }, ctx(), true), /not inside the models root/);
});

async function text(it: AsyncIterable<GenerationEvent>): Promise<{ tokens: number[]; n: number }> {
  const tokens: number[] = [];
  let n = 0;
  for await (const e of it) {
    if (e.type === 'delta') tokens.push(...e.tokens.map((t) => t.token));
    else n = e.completionTokens;
  }
  return { tokens, n };
}

test('the registry serves with the parent as draft (same greedy tokens), and a swap re-derives it', async () => {
  const opts = (model: string) => ({
    modelsRoot: root,
    cacheDir: cache,
    engine: { device: 'cpu' as const, threads: 1, maxSequences: 4, maxQueue: 4, prefillChunk: 64 },
    draft: { model },
  });
  const withDraft = await ModelRegistry.open('b', opts('auto'));
  const without = await ModelRegistry.open('b', opts('none'));
  try {
    assert.equal(withDraft.model.draft, 'a');
    assert.equal(without.model.draft, undefined);
    const params = validateSamplingParams({ temperature: 0, max_tokens: 40, ignore_eos: true });
    for (const prompt of [[5, 17, 2], [8, 1, 44, 12, 0, 9, 9], [300]]) {
      const [x, y] = await Promise.all([
        text(withDraft.generate(prompt, params)),
        text(without.generate(prompt, params)),
      ]);
      assert.deepEqual(x, y);
    }
    const stats = withDraft.model.engine.stats;
    assert.ok(stats.specDrafted > 0 && stats.specAccepted > 0, JSON.stringify(stats));
    await withDraft.swap('c', 'drain');
    assert.equal(withDraft.model.draft, 'a', "c's parent is a too");
    await withDraft.swap('a', 'drain');
    assert.equal(withDraft.model.draft, undefined);
  } finally {
    await withDraft.close();
    await without.close();
  }
});

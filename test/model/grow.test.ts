import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import test from 'node:test';
import { exportCheckpoint } from '../../src/export/export.ts';
import { SafeTensorsFile, writeSafeTensors } from '../../src/formats/safetensors.ts';
import { loadCheckpoint, readCheckpointMeta, weightsChecksum } from '../../src/model/checkpoint.ts';
import { PATTENTION_KINDS } from '../../src/model/config.ts';
import { type GrowDirectoryOptions, growCheckpoint, growDirectory } from '../../src/model/grow.ts';
import { valueInitStd } from '../../src/model/init.ts';
import { importOfficial } from '../../src/model/official/import.ts';
import { OPTIMIZER_FILE, readAdamMoments } from '../../src/model/optimizer-state.ts';
import { paramSpecs, pattentionSites } from '../../src/model/params.ts';
import { OrtSession } from '../../src/runtime/ort.ts';
import { TRAINER_STATE_FILE } from '../../src/train/trainer.ts';
import { stateName } from '../../src/train/training-step.ts';
import { TokenFormerError } from '../../src/util/errors.ts';
import { Rng } from '../../src/util/rng.ts';
import { FIXTURES, maxAbsDiff, tempDir } from '../helpers.ts';

const TINY = join(FIXTURES, 'official-tiny');
const TARGET = { qkv: 80, proj: 64, ffn: 160 };
type T = { after: (fn: () => void) => void };

function golden() {
  const f = SafeTensorsFile.open(join(TINY, 'golden.safetensors'));
  try {
    return {
      ids: f.readI64('input_ids'),
      logits: f.readF32('logits'),
      grown: f.readF32('grown_tau_recomputed_logits'),
    };
  } finally {
    f.close();
  }
}

async function importTiny(t: T): Promise<{ dir: string; ck: string }> {
  const dir = tempDir(t, 'tf-grow-');
  const ck = join(dir, 'ck');
  await importOfficial(join(TINY, 'checkpoint'), ck);
  return { dir, ck };
}

/** Exports a checkpoint and runs its model.onnx on the golden ids, as a user would. */
async function logitsOf(ckDir: string, outDir: string, ids: BigInt64Array): Promise<Float32Array> {
  await exportCheckpoint(ckDir, outDir);
  const session = await OrtSession.create(join(outDir, 'model.onnx'), { device: 'cpu' });
  try {
    const out = await session.run({ input_ids: [ids, [2, 24]] });
    return out.logits!.data as Float32Array;
  } finally {
    await session.release();
  }
}

function std(a: Float32Array): number {
  let s = 0;
  for (const x of a) s += x * x;
  return Math.sqrt(s / a.length);
}

function assertRefused(fn: () => unknown, pattern: RegExp) {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof TokenFormerError, String(err));
    assert.equal(err.code, 'TF_ERR_BAD_ARGS');
    assert.match(err.message, pattern);
    return true;
  });
}

async function assertRefusedAsync(p: Promise<unknown>, pattern: RegExp) {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof TokenFormerError, String(err));
    assert.equal(err.code, 'TF_ERR_BAD_ARGS');
    assert.match(err.message, pattern);
    return true;
  });
}

test('--init zero --tau keep preserves the function exactly (model.onnx, golden ids)', async (t) => {
  const g = golden();
  const { dir, ck } = await importTiny(t);
  await growDirectory(ck, join(dir, 'grown'), { target: TARGET, init: 'zero', tau: 'keep' });
  const base = await logitsOf(ck, join(dir, 'base-onnx'), g.ids);
  const grown = await logitsOf(join(dir, 'grown'), join(dir, 'grown-onnx'), g.ids);
  const diff = maxAbsDiff(base, grown);
  t.diagnostic(`max |Δlogits| base vs grown (zero keys, τ kept) = ${diff.toExponential(2)}`);
  assert.ok(diff <= 1e-5, `max |Δlogits| = ${diff}`);
  const vsGolden = maxAbsDiff(grown, g.logits);
  t.diagnostic(`max |grown − golden logits| = ${vsGolden.toExponential(2)}`);
  assert.ok(vsGolden <= 1e-4, `max |grown − golden| = ${vsGolden}`);
});

test('--tau recompute with zero keys matches the official grown_tau_recomputed_logits', async (t) => {
  const g = golden();
  const { dir, ck } = await importTiny(t);
  const r = await growDirectory(ck, join(dir, 'grown'), { target: TARGET, init: 'zero', tau: 'recompute' });
  for (const k of PATTENTION_KINDS) assert.equal(r.meta.model[k].tau, Math.sqrt(TARGET[k]));
  const grown = await logitsOf(join(dir, 'grown'), join(dir, 'grown-onnx'), g.ids);
  const diff = maxAbsDiff(grown, g.grown);
  t.diagnostic(`max |grown (τ = √n_new) − golden grown_tau_recomputed_logits| = ${diff.toExponential(2)}`);
  assert.ok(diff <= 1e-4, `max |Δ| = ${diff}`);
});

test('old rows are unchanged bit-for-bit; new keys zero or random; new values at the official std', async (t) => {
  const { dir, ck } = await importTiny(t);
  const base = loadCheckpoint(ck);
  const cfg = base.meta.model;
  const d = cfg.hidden_size;
  const bits = (a: Float32Array) => new Uint32Array(a.buffer, a.byteOffset, a.length);
  for (const init of ['zero', 'random'] as const) {
    await growDirectory(ck, join(dir, init), { target: TARGET, init, seed: 7 });
    const grown = loadCheckpoint(join(dir, init));
    const newKeys: number[] = [];
    const newValues: number[] = [];
    for (const s of paramSpecs(cfg)) {
      const old = base.params.get(s.name)!;
      const now = grown.params.get(s.name)!;
      assert.deepEqual(bits(now.subarray(0, old.length)), bits(old), `${s.name}: old rows changed`);
      const tail = now.subarray(old.length);
      if (s.name.endsWith('.keys')) newKeys.push(...tail);
      if (s.name.endsWith('.values')) newValues.push(...tail);
    }
    for (const site of pattentionSites(grown.meta.model)) {
      assert.equal(grown.params.get(`${site.prefix}.keys`)!.length, TARGET[site.kind] * d);
    }
    const keyStd = std(Float32Array.from(newKeys));
    const valueStd = std(Float32Array.from(newValues));
    const want = valueInitStd(cfg); // 2 / (L·√d) = 0.125 here
    t.diagnostic(
      `${init}: new key std ${keyStd.toFixed(4)}, new value std ${valueStd.toFixed(4)} (official ${want})`,
    );
    if (init === 'zero')
      assert.ok(
        newKeys.every((x) => x === 0),
        'new keys must be exactly zero',
      );
    else assert.ok(Math.abs(keyStd / 0.02 - 1) < 0.05, `new key std ${keyStd}`);
    assert.ok(Math.abs(valueStd / want - 1) < 0.05, `new value std ${valueStd}, official ${want}`);
  }
  // The values of a seed do not depend on --init; another seed draws other values.
  const zero = loadCheckpoint(join(dir, 'zero')).params.get('layers.0.ffn.values')!;
  const random = loadCheckpoint(join(dir, 'random')).params.get('layers.0.ffn.values')!;
  assert.deepEqual(zero, random);
  const other = growCheckpoint(base, TARGET, { seed: 8 }).params.get('layers.0.ffn.values')!;
  assert.notDeepEqual(other, zero);
  const same = growCheckpoint(base, TARGET, { seed: 7 }).params.get('layers.0.ffn.values')!;
  assert.deepEqual(same, zero);
});

test('a kind whose count is omitted keeps its count and τ; --tau recompute changes only grown kinds', async (t) => {
  const { ck } = await importTiny(t);
  const base = loadCheckpoint(ck);
  const r = growCheckpoint(base, { ffn: 128 }, { tau: 'recompute' });
  assert.deepEqual(r.to, { qkv: 48, proj: 40, ffn: 128 });
  assert.equal(r.meta.model.qkv.tau, base.meta.model.qkv.tau);
  assert.equal(r.meta.model.proj.tau, base.meta.model.proj.tau);
  assert.equal(r.meta.model.ffn.tau, Math.sqrt(128));
  assert.equal(r.params.get('layers.1.attn.q.keys'), base.params.get('layers.1.attn.q.keys'));
});

test('lineage and provenance: parent path, weights sha256 and step; tokenizer copied; no trainer state', async (t) => {
  const { dir, ck } = await importTiny(t);
  // Make the source look like a trained run: a tokenizer, a step count and trainer state.
  writeFileSync(join(ck, 'tokenizer.json'), '{"model": {"type": "BPE"}}');
  const metaPath = join(ck, 'config.json');
  const meta = readCheckpointMeta(ck);
  writeFileSync(
    metaPath,
    JSON.stringify({ ...meta, step: 42, tokenizer: { file: 'tokenizer.json', eos_token_id: 0 } }),
  );
  writeFileSync(join(ck, TRAINER_STATE_FILE), '{"step": 42}');
  const out = join(dir, 'grown');
  const r = await growDirectory(ck, out, { target: { qkv: 64 } });
  const saved = readCheckpointMeta(out);
  assert.deepEqual(saved.parent, { path: resolve(ck), sha256: weightsChecksum(ck), step: 42 });
  assert.equal(saved.step, 42);
  assert.equal(saved.provenance.source, 'grow');
  assert.match(saved.provenance.detail!, /qkv 48→64/);
  assert.match(saved.provenance.detail!, /new keys zero/);
  assert.match(saved.provenance.detail!, /tau keep/);
  // The copy's checksum is recorded (the source, written before checksums, had none).
  assert.deepEqual(saved.tokenizer, {
    file: 'tokenizer.json',
    eos_token_id: 0,
    sha256: createHash('sha256').update('{"model": {"type": "BPE"}}').digest('hex'),
  });
  assert.ok(existsSync(join(out, 'tokenizer.json')));
  assert.ok(!existsSync(join(out, TRAINER_STATE_FILE)), 'a grown checkpoint starts a new run');
  assert.ok(!existsSync(join(out, OPTIMIZER_FILE)), 'the source had no optimizer state');
  assert.equal(r.optimizer, 'none-in-source');
  const { weights_sha256, ...rest } = saved;
  assert.deepEqual({ ...rest, tokenizer: r.meta.tokenizer }, r.meta);
  assert.equal(weights_sha256, weightsChecksum(out));
});

test('--optimizer carry copies old moments and zero-fills new rows; reset writes none', async (t) => {
  const { dir, ck } = await importTiny(t);
  const cfg = readCheckpointMeta(ck).model;
  // Adam moments as the trainer writes them (m.{name} / v.{name}).
  const rng = new Rng(3);
  const moments = new Map<string, Float32Array>();
  const tensors = (['m', 'v'] as const).flatMap((kind) =>
    paramSpecs(cfg).map((s) => {
      const data = Float32Array.from(
        { length: s.shape.reduce((a, b) => a * b, 1) },
        () => rng.nextFloat() + 0.5,
      );
      moments.set(stateName(kind, s.name), data);
      return { name: stateName(kind, s.name), dtype: 'F32' as const, shape: s.shape, data };
    }),
  );
  writeSafeTensors(join(ck, OPTIMIZER_FILE), tensors);

  const carried = join(dir, 'carried');
  const r = await growDirectory(ck, carried, { target: TARGET, optimizer: 'carry' });
  assert.equal(r.optimizer, 'carried');
  const grownCfg = readCheckpointMeta(carried).model;
  const state = readAdamMoments(carried, grownCfg); // the trainer reads what grow wrote
  assert.ok(state);
  for (const kind of ['m', 'v'] as const) {
    for (const s of paramSpecs(grownCfg)) {
      const old = moments.get(stateName(kind, s.name))!;
      const now: Float32Array = state[kind].get(s.name)!;
      assert.equal(
        now.length,
        s.shape.reduce((a, b) => a * b, 1),
      );
      assert.deepEqual(now.subarray(0, old.length), old, `${kind}.${s.name}: old rows`);
      assert.ok(
        now.subarray(old.length).every((x) => x === 0),
        `${kind}.${s.name}: new rows must be zero`,
      );
    }
  }

  const reset = join(dir, 'reset');
  const r2 = await growDirectory(ck, reset, { target: TARGET, optimizer: 'reset' });
  assert.equal(r2.optimizer, 'reset');
  assert.ok(!existsSync(join(reset, OPTIMIZER_FILE)));
  assert.equal(readAdamMoments(reset, grownCfg), null);
});

test('refusals: shrink, nothing to grow, bad counts, bad options, --out over the source; nothing written', async (t) => {
  const { dir, ck } = await importTiny(t);
  const base = loadCheckpoint(ck);
  assertRefused(() => growCheckpoint(base, { qkv: 40 }), /cannot shrink qkv from 48 to 40 tokens/);
  assertRefused(() => growCheckpoint(base, { qkv: 80, ffn: 95 }), /cannot shrink ffn from 96 to 95/);
  assertRefused(() => growCheckpoint(base, { qkv: 48, proj: 40, ffn: 96 }), /nothing to grow/);
  assertRefused(() => growCheckpoint(base, {}), /nothing to grow/);
  assertRefused(() => growCheckpoint(base, { proj: 64.5 }), /proj token count must be a positive integer/);
  assertRefused(() => growCheckpoint(base, { proj: 0 }), /proj token count must be a positive integer/);
  assertRefused(() => growCheckpoint(base, { proj: -8 }), /must be a positive integer/);
  assertRefused(
    () => growCheckpoint(base, { hidden: 128 } as unknown as { qkv: number }),
    /only the token counts qkv, proj and ffn can grow/,
  );
  assertRefused(
    () => growCheckpoint(base, TARGET, { init: 'ones' } as unknown as { init: 'zero' }),
    /init must be zero or random/,
  );

  const out = join(dir, 'never');
  const cases: [GrowDirectoryOptions, RegExp][] = [
    [{ target: { qkv: 32 } }, /cannot shrink qkv/],
    [{ target: {} }, /nothing to grow/],
    [{ target: { ffn: 1.5 } }, /positive integer/],
    [{ target: TARGET, tau: 'sometimes' as 'keep' }, /tau must be keep or recompute/],
  ];
  for (const [opts, pattern] of cases) {
    await assertRefusedAsync(growDirectory(ck, out, opts), pattern);
    assert.ok(!existsSync(out), `${pattern}: the output directory must not be created`);
  }
  await assertRefusedAsync(growDirectory(ck, ck, { target: TARGET }), /would replace the checkpoint/);
  await assertRefusedAsync(growDirectory(ck, dir, { target: TARGET }), /would replace the checkpoint/);
  assert.deepEqual(readCheckpointMeta(ck).model.qkv.tokens, 48, 'source untouched');
});

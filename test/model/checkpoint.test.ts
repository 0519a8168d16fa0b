import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'node:test';
import { resolveExport } from '../../src/engine/model-dir.ts';
import { writeSafeTensors } from '../../src/formats/safetensors.ts';
import {
  type CheckpointMeta,
  loadCheckpoint,
  readCheckpointMeta,
  saveCheckpoint,
  WEIGHTS_FILE,
  weightsChecksum,
} from '../../src/model/checkpoint.ts';
import { paramSpecs } from '../../src/model/params.ts';
import { maxAbsDiff, tempDir, tinyConfig } from '../helpers.ts';

function meta(): CheckpointMeta {
  return {
    format: 'tokenformer-checkpoint',
    format_version: 1,
    model: tinyConfig(),
    tokenizer: null,
    provenance: { source: 'test', created: '2026-01-01T00:00:00Z' },
    step: 42,
    parent: null,
  };
}

function params(seed = 1): Map<string, Float32Array> {
  let s = seed;
  const rnd = () => {
    s = (s * 16807) % 2147483647;
    return (s / 2147483647) * 2 - 1;
  };
  return new Map(
    paramSpecs(tinyConfig()).map((p) => [
      p.name,
      Float32Array.from({ length: p.shape[0]! * (p.shape[1] ?? 1) }, rnd),
    ]),
  );
}

test('save → load round trip keeps config and weights (F32 exact, F16/BF16 within rounding)', async (t) => {
  const dir = tempDir(t);
  const p = params();
  for (const [dtype, tol] of [
    ['F32', 0],
    ['F16', 1e-3],
    ['BF16', 8e-3],
  ] as const) {
    const out = join(dir, dtype);
    await saveCheckpoint(out, meta(), p, { dtype });
    const ck = loadCheckpoint(out);
    const { weights_sha256, ...rest } = ck.meta;
    assert.deepEqual(rest, meta());
    assert.equal(weights_sha256, weightsChecksum(out), 'the weights checksum is recorded');
    for (const [name, data] of p)
      assert.ok(maxAbsDiff(ck.params.get(name)!, data) <= tol, `${dtype} ${name}`);
  }
  const f32 = readFileSync(join(dir, 'F32', WEIGHTS_FILE)).byteLength;
  const f16 = readFileSync(join(dir, 'F16', WEIGHTS_FILE)).byteLength;
  assert.ok(f16 < f32 * 0.55, `F16 file ${f16} bytes vs F32 ${f32}`);
  assert.match(weightsChecksum(join(dir, 'F32')), /^[0-9a-f]{64}$/);
});

test('a byte flipped inside tensor data is caught by the recorded checksum (loading and serving)', async (t) => {
  const root = tempDir(t);
  const dir = join(root, 'ck');
  await saveCheckpoint(dir, meta(), params(1));
  assert.doesNotThrow(() => loadCheckpoint(dir));
  const bytes = readFileSync(join(dir, WEIGHTS_FILE));
  bytes[bytes.length - 3]! ^= 0x40; // inside the last tensor: the file stays structurally valid
  writeFileSync(join(dir, WEIGHTS_FILE), bytes);
  const corrupted =
    /model\.safetensors does not match the checksum config\.json records: the file is corrupted/;
  assert.throws(() => loadCheckpoint(dir), corrupted);
  await assert.rejects(resolveExport(dir, join(root, 'cache')), corrupted);
  // A checkpoint from before checksums were recorded loads as it is.
  const { weights_sha256: _, ...older } = readCheckpointMeta(dir);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(older));
  assert.doesNotThrow(() => loadCheckpoint(dir));
});

test('saving over an existing checkpoint replaces it whole; a failed save leaves it intact', async (t) => {
  const dir = join(tempDir(t), 'ck');
  await saveCheckpoint(dir, meta(), params(1));
  const before = readFileSync(join(dir, WEIGHTS_FILE));
  const broken = params(2);
  broken.delete('layers.1.ffn.keys');
  await assert.rejects(
    saveCheckpoint(dir, { ...meta(), step: 99 }, broken),
    /parameter layers.1.ffn.keys is missing/,
  );
  assert.deepEqual(readFileSync(join(dir, WEIGHTS_FILE)), before);
  assert.equal(readCheckpointMeta(dir).step, 42);
  await saveCheckpoint(dir, { ...meta(), step: 7 }, params(3));
  assert.equal(readCheckpointMeta(dir).step, 7);
});

test('bad checkpoints: every problem named with the file', async (t) => {
  const dir = join(tempDir(t), 'ck');
  await saveCheckpoint(dir, meta(), params());
  const cfgPath = join(dir, 'config.json');
  const good = readFileSync(cfgPath, 'utf8');

  writeFileSync(cfgPath, '{"format": "tokenformer-checkpoint",');
  assert.throws(() => loadCheckpoint(dir), /config.json: not valid JSON/);
  writeFileSync(cfgPath, JSON.stringify({ architectures: ['TokenFormerForCausalLM'] }));
  assert.throws(() => loadCheckpoint(dir), /not a tokenformer checkpoint .*npm run import/);
  writeFileSync(cfgPath, JSON.stringify({ ...JSON.parse(good), model: { ...meta().model, num_heads: 5 } }));
  assert.throws(() => loadCheckpoint(dir), /num_heads \(5\) must divide hidden_size \(24\)/);
  writeFileSync(cfgPath, good);

  // Weights that do not fit the config: missing, unexpected and mis-shaped tensors, all listed.
  const p = params();
  const specs = paramSpecs(tinyConfig());
  writeSafeTensors(join(dir, WEIGHTS_FILE), [
    ...specs
      .filter((s) => s.name !== 'layers.0.attn.q.keys')
      .map((s) => ({
        name: s.name,
        dtype: 'F32' as const,
        shape: s.name === 'final_norm.bias' ? [s.shape[0]! + 1] : s.shape,
        data: s.name === 'final_norm.bias' ? new Float32Array(s.shape[0]! + 1) : p.get(s.name)!,
      })),
    { name: 'extra.weight', dtype: 'F32', shape: [2], data: new Float32Array(2) },
  ]);
  assert.throws(
    () => loadCheckpoint(dir),
    (err: Error) =>
      /model.safetensors: missing tensors: layers.0.attn.q.keys/.test(err.message) &&
      /unexpected tensors: extra.weight/.test(err.message) &&
      /final_norm.bias is \[25\], expected \[24\]/.test(err.message),
  );
  writeFileSync(join(dir, WEIGHTS_FILE), Buffer.from([1, 2, 3]));
  assert.throws(() => loadCheckpoint(dir), /model.safetensors: invalid safetensors file/);
  assert.throws(() => loadCheckpoint(join(dir, 'nope')), /cannot read .*nope\/config.json/);
});

test("the tokenizer's checksum is recorded; another tokenizer is refused naming both files", async (t) => {
  const root = tempDir(t);
  const tok = join(root, 'tok.json');
  writeFileSync(tok, '{"model": {"type": "BPE", "vocab": {}}}');
  const dir = join(root, 'ck');
  const m = { ...meta(), tokenizer: { file: 'tokenizer.json', eos_token_id: null } };
  await saveCheckpoint(dir, m, params(), { tokenizerFrom: tok });
  const saved = readCheckpointMeta(dir);
  assert.equal(saved.tokenizer?.sha256, createHash('sha256').update(readFileSync(tok)).digest('hex'));
  const warnings: string[] = [];
  loadCheckpoint(dir, { onWarning: (w) => warnings.push(w) });
  assert.equal(warnings.length, 0);

  writeFileSync(join(dir, 'tokenizer.json'), '{"model": {"type": "BPE", "vocab": {"a": 0}}}');
  const mismatch =
    /ck\/tokenizer.json is not the tokenizer .*ck\/config.json was saved with \(expected sha256 [0-9a-f]{12}…, found/;
  assert.throws(() => loadCheckpoint(dir), mismatch);
  await assert.rejects(resolveExport(dir, join(root, 'cache')), mismatch);

  // Written before the checksum existed: loads, with one warning line.
  const { sha256: _, ...older } = saved.tokenizer!;
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...saved, tokenizer: older }));
  loadCheckpoint(dir, { onWarning: (w) => warnings.push(w) });
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]!, /config.json records no tokenizer checksum .*used unchecked/);
  assert.doesNotMatch(warnings[0]!, /\n/);
});

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'node:test';
import { exportCheckpoint, type Manifest } from '../../src/export/export.ts';
import { SafeTensorsFile } from '../../src/formats/safetensors.ts';
import { importOfficial } from '../../src/model/official/import.ts';
import { OrtSession } from '../../src/runtime/ort.ts';
import { FIXTURES, maxAbsDiff, tempDir } from '../helpers.ts';

const TINY = join(FIXTURES, 'official-tiny');

function golden() {
  const f = SafeTensorsFile.open(join(TINY, 'golden.safetensors'));
  try {
    const ids = f.readI64('input_ids');
    return {
      ids,
      logits: f.readF32('logits'),
      grown: f.readF32('grown_tau_recomputed_logits'),
    };
  } finally {
    f.close();
  }
}

/** import → export → run model.onnx in onnxruntime-node, as a user would. */
async function importExportRun(t: { after: (fn: () => void) => void }, from: string, ids: BigInt64Array) {
  const dir = tempDir(t);
  await importOfficial(from, join(dir, 'ckpt'));
  const manifest = await exportCheckpoint(join(dir, 'ckpt'), join(dir, 'export'));
  const session = await OrtSession.create(join(dir, 'export', 'model.onnx'), { device: 'cpu' });
  try {
    const out = await session.run({ input_ids: [ids, [2, 24]] });
    return { logits: out.logits!, manifest, dir };
  } finally {
    await session.release();
  }
}

test('official-tiny: imported and exported model.onnx matches the golden logits (≤ 1e-4)', async (t) => {
  const g = golden();
  const { logits, manifest, dir } = await importExportRun(t, join(TINY, 'checkpoint'), g.ids);
  assert.deepEqual(logits.dims, [2, 24, 512]);
  const diff = maxAbsDiff(logits.data as Float32Array, g.logits);
  t.diagnostic(`max |logit − golden| = ${diff.toExponential(2)}`);
  assert.ok(diff <= 1e-4, `max |logit − golden| = ${diff}`);

  // The manifest describes the graph contract of DESIGN.md §5.
  const onDisk = JSON.parse(readFileSync(join(dir, 'export', 'manifest.json'), 'utf8')) as Manifest;
  assert.deepEqual(onDisk.graphs, manifest.graphs);
  const full = onDisk.graphs[0]!;
  assert.equal(full.file, 'model.onnx');
  assert.deepEqual(full.inputs, [{ name: 'input_ids', dtype: 'int64', shape: ['batch', 'seq'] }]);
  assert.deepEqual(full.outputs, [{ name: 'logits', dtype: 'float32', shape: ['batch', 'seq', 512] }]);
  assert.equal(full.external_data, null);
  assert.match(full.sha256, /^[0-9a-f]{64}$/);
  assert.deepEqual(onDisk.onnx.custom_ops, ['ai.tokenformer::Pattention']);
});

test('official-tiny grown: official τ = √n_new rule matches grown_tau_recomputed_logits (≤ 1e-4)', async (t) => {
  const g = golden();
  const { logits } = await importExportRun(t, join(TINY, 'grown-checkpoint'), g.ids);
  const diff = maxAbsDiff(logits.data as Float32Array, g.grown);
  t.diagnostic(`max |logit − golden| = ${diff.toExponential(2)}`);
  assert.ok(diff <= 1e-4, `max |logit − golden| = ${diff}`);
});

test('external data export runs the same', async (t) => {
  const g = golden();
  const dir = tempDir(t);
  await importOfficial(join(TINY, 'checkpoint'), join(dir, 'ckpt'));
  const m = await exportCheckpoint(join(dir, 'ckpt'), join(dir, 'export'), { externalData: 'always' });
  assert.equal(m.graphs[0]!.external_data, 'model.onnx.data');
  const session = await OrtSession.create(join(dir, 'export', 'model.onnx'), { device: 'cpu' });
  const out = await session.run({ input_ids: [g.ids, [2, 24]] });
  await session.release();
  assert.ok(maxAbsDiff(out.logits!.data as Float32Array, g.logits) <= 1e-4);
});

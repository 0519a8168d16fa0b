import assert from 'node:assert/strict';
import { join } from 'node:path';
import test from 'node:test';
import { ModelRunner } from '../../src/engine/runner.ts';
import { exportCheckpoint, readManifest } from '../../src/export/export.ts';
import { GraphBuilder } from '../../src/graph/builder.ts';
import { serializeModel } from '../../src/graph/serialize.ts';
import { tensor } from '../../src/graph/types.ts';
import { importOfficial } from '../../src/model/official/import.ts';
import { PATTENTION, PATTENTION_F16 } from '../../src/model/tokenformer.ts';
import { OrtSession } from '../../src/runtime/ort.ts';
import { f32ToF16 } from '../../src/util/dtype.ts';
import { fillNormal, Rng } from '../../src/util/rng.ts';
import { FIXTURES, maxAbsDiff, tempDir } from '../helpers.ts';

/**
 * float16 exports on the CPU provider: onnxruntime runs MatMul, LayerNormalization, Gather and
 * the data-movement ops in float16 and inserts casts to float32 around the ops that have no
 * float16 CPU kernel (Add, Mul, Sub, Where, Erf and the softmax parts), so these tests check the
 * graphs' numerics here; their speed is a GPU matter.
 */

const TINY = join(FIXTURES, 'official-tiny');

test('official-tiny: a float16 export matches the float32 export within 3e-2 (logits stay float32)', async (t) => {
  const dir = tempDir(t);
  await importOfficial(join(TINY, 'checkpoint'), join(dir, 'ckpt'));
  await exportCheckpoint(join(dir, 'ckpt'), join(dir, 'f32'));
  const m16 = await exportCheckpoint(join(dir, 'ckpt'), join(dir, 'f16'), { dtype: 'float16' });
  assert.equal(m16.dtype, 'float16');
  assert.equal(readManifest(join(dir, 'f16')).dtype, 'float16');
  assert.equal(readManifest(join(dir, 'f32')).dtype, 'float32');
  const past = m16.graphs.find((g) => g.role === 'decoder')!.inputs.find((i) => i.name === 'past_key.0')!;
  assert.equal(past.dtype, 'float16');
  const ids = BigInt64Array.from({ length: 2 * 24 }, (_, i) => BigInt((i * 37) % 512));
  const run = async (which: string) => {
    const s = await OrtSession.create(join(dir, which, 'model.onnx'), { device: 'cpu' });
    try {
      return (await s.run({ input_ids: [ids, [2, 24]] })).logits!;
    } finally {
      await s.release();
    }
  };
  const [a, b] = [await run('f32'), await run('f16')];
  assert.equal(b.type, 'float32');
  const diff = maxAbsDiff(a.data as Float32Array, b.data as Float32Array);
  t.diagnostic(`max |logit fp16 − fp32| = ${diff.toExponential(2)}`);
  assert.ok(diff <= 3e-2, `max |Δ| = ${diff}`);

  // The KV-cache decoder keeps its cache in float16 and agrees with the full graph.
  const runner = await ModelRunner.create(join(dir, 'f16'), { device: 'cpu', maxSequences: 2 });
  try {
    const seq = runner.addSequence();
    const prompt = Array.from(ids.subarray(0, 24), Number);
    const last = await runner.prefill(seq, prompt.slice(0, 20), 8);
    const stepped = await runner.decode([seq], [prompt[20]!]);
    assert.ok(runner.snapshot(seq).keys[0] instanceof Uint16Array);
    const full = b.data as Float32Array;
    const row = (p: number) => full.subarray(p * 512, (p + 1) * 512);
    assert.ok(maxAbsDiff(last, row(19)) <= 3e-2, 'prefill logits');
    assert.ok(maxAbsDiff(stepped, row(20)) <= 3e-2, 'decode logits');
    assert.equal(runner.stats().bytesPerToken, 2 * 2 * 64 * 2, 'two bytes per cached element');
  } finally {
    await runner.close();
  }
});

test('float16 Pattention does not overflow where the squared scores exceed 65504', async () => {
  // n = 3072 tokens, scores ≈ ±40: Σ A² ≈ 5e6, far beyond float16, while ‖A‖₂ ≈ 2.2e3 is not.
  const [n, d, rows] = [3072, 64, 3];
  const rng = new Rng(7);
  const x = fillNormal(rng, new Float32Array(rows * d), 1);
  const keys = fillNormal(rng, new Float32Array(n * d), 5);
  const values = fillNormal(rng, new Float32Array(n * d), 0.02);
  const run = async (dtype: 'float32' | 'float16') => {
    const g = new GraphBuilder();
    const xi = g.input('x', dtype, [1, rows, d]);
    const cast = (a: Float32Array, shape: number[]) =>
      dtype === 'float16' ? tensor('float16', shape, f32ToF16(a)) : tensor('float32', shape, a);
    const k = g.initializer('k', cast(keys, [n, d]));
    const v = g.initializer('v', cast(values, [n, d]));
    const out = g.call(dtype === 'float16' ? PATTENTION_F16 : PATTENTION, [xi, k, v], {
      tau: Math.sqrt(n),
    })[0]!;
    g.output(dtype === 'float16' ? g.cast(out, 'float32') : out, 'y');
    const s = await OrtSession.create(serializeModel(g, { graphName: 'p' }), { device: 'cpu' });
    const feed =
      dtype === 'float16' ? ([f32ToF16(x), [1, rows, d], 'float16'] as const) : ([x, [1, rows, d]] as const);
    const y = (await s.run({ x: feed })).y!.data as Float32Array;
    await s.release();
    return y;
  };
  // The CPU provider computes ReduceL2 in float32 whatever the graph says (no float16 kernel),
  // so the graph itself is checked too: on a GPU a float16 ReduceL2 would return inf.
  const g = new GraphBuilder();
  const ins = [
    g.input('x', 'float16', [1, rows, d]),
    g.input('k', 'float16', [n, d]),
    g.input('v', 'float16', [n, d]),
  ];
  g.inline(PATTENTION_F16, ins, { tau: 1 });
  const l2 = g.nodes.filter((node) => node.op === 'ReduceL2');
  assert.equal(l2.length, 1);
  assert.equal(g.valueOf(l2[0]!.inputs[0]!).dtype, 'float32');
  const [ref, half] = [await run('float32'), await run('float16')];
  assert.ok(half.every(Number.isFinite), 'no inf/NaN from the norm');
  const scale = Math.max(...ref.map(Math.abs));
  assert.ok(maxAbsDiff(ref, half) <= 2e-2 * scale, `max |Δ| = ${maxAbsDiff(ref, half)} (scale ${scale})`);
});

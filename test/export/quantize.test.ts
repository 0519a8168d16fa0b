import assert from 'node:assert/strict';
import test from 'node:test';
import { buildDecoderGraph } from '../../src/export/decoder.ts';
import { buildFullSequenceGraph } from '../../src/export/full-sequence.ts';
import { MS_DOMAIN } from '../../src/export/kernels.ts';
import {
  dequantizeRows,
  parseQuantization,
  type QuantBits,
  quantizeRows,
} from '../../src/export/quantize.ts';
import { GraphBuilder } from '../../src/graph/builder.ts';
import { serializeModel } from '../../src/graph/serialize.ts';
import { attr, tensor } from '../../src/graph/types.ts';
import { headDim } from '../../src/model/config.ts';
import { OrtSession } from '../../src/runtime/ort.ts';
import { maxAbsDiff, tinyConfig } from '../helpers.ts';
import { f32Params } from './params.ts';

const det = (n: number, salt: number) =>
  Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + salt) * 0.5);

for (const bits of [8, 4] as QuantBits[]) {
  test(`${bits}-bit blocks: error within half a step (clipping aside), and MatMulNBits reads our layout`, async (t) => {
    const [n, k, block] = [24, 40, 16]; // k not a multiple of the block: padded
    const b = det(n * k, bits);
    const q = quantizeRows(n, k, (r, c) => b[r * k + c]!, bits, block);
    const back = dequantizeRows(q, bits, block);
    for (let r = 0; r < n; r++)
      for (let c = 0; c < k; c++) {
        const scale = Math.abs(q.scales[r * q.blocks + Math.floor(c / block)]!);
        // Half a step, except at 4 bits where the opposite of the extreme clips from +8 to +7.
        const bound = bits === 4 && Math.abs(b[r * k + c]!) > 7 * scale ? scale : scale / 2;
        assert.ok(Math.abs(back[r * k + c]! - b[r * k + c]!) <= bound + 1e-7, `(${r}, ${c})`);
      }
    // x · dequant(B)ᵀ in float64 vs onnxruntime's kernel at accuracy level 1 (float32 math).
    const g = new GraphBuilder();
    const x = g.input('x', 'float32', [3, k]);
    const w = g.initializer('w', tensor('uint8', [n, q.blocks, (block * bits) / 8], q.data));
    const s = g.initializer('s', tensor('float32', [n, q.blocks], q.scales));
    const attrs = {
      K: attr.int(k),
      N: attr.int(n),
      bits: attr.int(bits),
      block_size: attr.int(block),
      accuracy_level: attr.int(1),
    };
    g.output(
      g.emitMulti('MatMulNBits', MS_DOMAIN, [x, w, s], attrs, [{ dtype: 'float32', shape: [3, n] }])[0]!,
      'y',
    );
    const sess = await OrtSession.create(serializeModel(g, { graphName: 'nbits' }), { device: 'cpu' });
    t.after(() => sess.release());
    const xs = det(3 * k, 7);
    const y = (await sess.run({ x: [xs, [3, k]] })).y!.data as Float32Array;
    const want = new Float64Array(3 * n);
    for (let i = 0; i < 3; i++)
      for (let r = 0; r < n; r++)
        for (let c = 0; c < k; c++) want[i * n + r]! += xs[i * k + c]! * back[r * k + c]!;
    assert.ok(maxAbsDiff(y, want) < 1e-4, `max |y − x·dequant(B)ᵀ| = ${maxAbsDiff(y, want)}`);
  });
}

test('quantized decoder graphs stay close to the float model (int8 closer than int4)', async (t) => {
  const cfg = tinyConfig({ hidden_size: 64, num_heads: 4 });
  const params = f32Params(cfg, 5);
  const full = await OrtSession.create(
    serializeModel(buildFullSequenceGraph(cfg, params), { graphName: 'f' }),
    { device: 'cpu' },
  );
  t.after(() => full.release());
  const ids = [3, 14, 15, 9, 26, 5];
  const ref = (await full.run({ input_ids: [BigInt64Array.from(ids, BigInt), [1, ids.length]] })).logits!
    .data as Float32Array;
  const last = ref.subarray((ids.length - 1) * cfg.vocab_size);
  const errors: number[] = [];
  for (const bits of [8, 4] as QuantBits[]) {
    const g = buildDecoderGraph(cfg, params, { bits, blockSize: 16, accuracyLevel: 4 });
    assert.ok(g.nodes.filter((n) => n.op === 'MatMulNBits').length === 10 * cfg.num_layers + 1);
    const dec = await OrtSession.create(serializeModel(g, { graphName: 'd' }), { device: 'cpu' });
    t.after(() => dec.release());
    const [h, dh] = [cfg.num_heads, headDim(cfg)];
    const feeds: Parameters<OrtSession['run']>[0] = {
      input_ids: [BigInt64Array.from(ids, BigInt), [1, ids.length]],
      positions: [BigInt64Array.from(ids, (_, i) => BigInt(i)), [1, ids.length]],
      past_lengths: [new BigInt64Array([0n]), [1]],
    };
    for (let i = 0; i < cfg.num_layers; i++) {
      feeds[`past_key.${i}`] = [new Float32Array(h * dh * 4), [1, h, dh, 4]];
      feeds[`past_value.${i}`] = [new Float32Array(h * dh * 4), [1, h, 4, dh]];
    }
    const logits = (await dec.run(feeds)).logits!.data as Float32Array;
    const spread = Math.max(...last) - Math.min(...last);
    errors.push(maxAbsDiff(logits, last) / spread);
    t.diagnostic(
      `${bits}-bit: max |logit − float| = ${(errors.at(-1)! * 100).toFixed(2)}% of the logit range`,
    );
  }
  assert.ok(errors[0]! < 0.02, 'int8 within 2% of the logit range');
  assert.ok(errors[1]! < 0.15, 'int4 within 15% of the logit range');
  assert.ok(errors[0]! < errors[1]!);
});

test('--quantize flags: defaults, and one-line errors', () => {
  assert.equal(parseQuantization(undefined, undefined, undefined), undefined);
  assert.deepEqual(parseQuantization('int4', undefined, undefined), {
    bits: 4,
    blockSize: 32,
    accuracyLevel: 4,
  });
  assert.deepEqual(parseQuantization('int8', 64, 1), { bits: 8, blockSize: 64, accuracyLevel: 1 });
  assert.throws(() => parseQuantization('int8', 24, undefined), /power of two/);
  assert.throws(() => parseQuantization(undefined, 32, undefined), /need --quantize/);
});

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import test from 'node:test';
import { buildDecoderGraph } from '../../src/export/decoder.ts';
import { exportCheckpoint } from '../../src/export/export.ts';
import { buildFullSequenceGraph } from '../../src/export/full-sequence.ts';
import type { GraphBuilder } from '../../src/graph/builder.ts';
import { serializeModel } from '../../src/graph/serialize.ts';
import { headDim, type TokenFormerConfig } from '../../src/model/config.ts';
import { importOfficial } from '../../src/model/official/import.ts';
import { PATTENTION_DOMAIN } from '../../src/model/tokenformer.ts';
import { OrtSession, type TensorOut } from '../../src/runtime/ort.ts';
import { fileSha256 } from '../../src/util/files.ts';
import { FIXTURES, maxAbsDiff, tempDir, tinyConfig } from '../helpers.ts';
import { f32Params } from './params.ts';

async function session(g: GraphBuilder): Promise<OrtSession> {
  return OrtSession.create(serializeModel(g, { graphName: 'test' }), { device: 'cpu' });
}

test('decoder graph contract: cache in, only logits and the new keys/values out', () => {
  const cfg = tinyConfig();
  const g = buildDecoderGraph(cfg, f32Params(cfg, 1));
  const [h, dh, v] = [cfg.num_heads, headDim(cfg), cfg.vocab_size];
  type IO = { name: string; dtype: string; shape: (string | number)[] };
  const inputs: IO[] = [
    { name: 'input_ids', dtype: 'int64', shape: ['batch', 'new'] },
    { name: 'positions', dtype: 'int64', shape: ['batch', 'new'] },
    { name: 'past_lengths', dtype: 'int64', shape: ['batch'] },
  ];
  const outputs: IO[] = [{ name: 'logits', dtype: 'float32', shape: ['batch', v] }];
  for (let i = 0; i < cfg.num_layers; i++) {
    inputs.push({ name: `past_key.${i}`, dtype: 'float32', shape: ['batch', h, dh, 'cap'] });
    inputs.push({ name: `past_value.${i}`, dtype: 'float32', shape: ['batch', h, 'cap', dh] });
    outputs.push({ name: `present_key.${i}`, dtype: 'float32', shape: ['batch', h, 'new', dh] });
    outputs.push({ name: `present_value.${i}`, dtype: 'float32', shape: ['batch', h, 'new', dh] });
  }
  const plain = (vals: readonly { name: string; dtype: string; shape: readonly (string | number)[] }[]) =>
    vals.map((x) => ({ name: x.name, dtype: x.dtype, shape: [...x.shape] }));
  assert.deepEqual(plain(g.inputs), inputs);
  // Exactly these outputs: a cache tensor (or anything sized by `cap`) as an output would be
  // copied out by onnxruntime-node at every step (DESIGN.md §3).
  assert.deepEqual(plain(g.outputs), outputs);
  for (const o of g.outputs) {
    assert.ok(
      !JSON.stringify(o.shape).includes('cap'),
      `${o.name} ${JSON.stringify(o.shape)} has the cache dim`,
    );
  }
  // The cache is only ever read by MatMul: no Concat, Identity or Transpose copies it.
  const cacheNames = new Set(g.inputs.filter((i) => /^past_(key|value)\./.test(i.name)).map((i) => i.name));
  const readers = g.nodes.filter((n) => n.inputs.some((i) => cacheNames.has(i)));
  assert.equal(readers.length, 2 * cfg.num_layers + 1, 'q·K and p·V per layer, and one Shape for cap');
  assert.deepEqual([...new Set(readers.map((n) => n.op))].sort(), ['MatMul', 'Shape']);
  // A serving graph: Pattention as fused kernels (model.onnx keeps the custom-op node).
  assert.equal(g.nodes.filter((n) => n.domain === PATTENTION_DOMAIN).length, 0);
  const count = (op: string) => g.nodes.filter((n) => n.op === op).length;
  assert.equal(count('Gelu'), 5 * cfg.num_layers);
  assert.equal(count('SimplifiedLayerNormalization'), 5 * cfg.num_layers);
  assert.equal(count('SkipLayerNormalization'), 2 * cfg.num_layers - 1);
  assert.equal(count('RotaryEmbedding'), 2 * cfg.num_layers);
  assert.equal(count('Erf'), 0);
});

/** Copies row `row` of present [B, H, n, Dh] into a cache [B', H, Dh|cap, cap|Dh] at `start`. */
function putPresent(
  cfg: TokenFormerConfig,
  cap: number,
  dst: { key: Float32Array; value: Float32Array; slot: number; start: number },
  src: { key: TensorOut; value: TensorOut; row: number },
) {
  const [h, dh] = [cfg.num_heads, headDim(cfg)];
  const n = src.key.dims[2]!;
  const pk = src.key.data as Float32Array;
  const pv = src.value.data as Float32Array;
  for (let hh = 0; hh < h; hh++)
    for (let t = 0; t < n; t++)
      for (let d = 0; d < dh; d++) {
        const s = ((src.row * h + hh) * n + t) * dh + d;
        dst.key[((dst.slot * h + hh) * dh + d) * cap + dst.start + t] = pk[s]!;
        dst.value[((dst.slot * h + hh) * cap + dst.start + t) * dh + d] = pv[s]!;
      }
}

test('decoder logits match the full-sequence graph, with a masked stale cache and per-row past lengths', async (t) => {
  const cfg = tinyConfig();
  const params = f32Params(cfg, 3);
  const dec = await session(buildDecoderGraph(cfg, params));
  const full = await session(buildFullSequenceGraph(cfg, params));
  t.after(async () => {
    await dec.release();
    await full.release();
  });
  const [h, dh, v, L] = [cfg.num_heads, headDim(cfg), cfg.vocab_size, cfg.num_layers];
  const cap = 37; // a size no output may have
  const seqs = [
    [5, 17, 2, 40, 33, 9, 60],
    [8, 1, 44, 12, 0],
  ];
  const prompt = [5, 3]; // cached tokens per row before the shared 2-token step
  // Stale, large but finite data everywhere: it must be masked out, not averaged in.
  const keys = Array.from({ length: L }, () =>
    Float32Array.from({ length: 2 * h * dh * cap }, (_, i) => 1e3 * Math.sin(i)),
  );
  const values = Array.from({ length: L }, () =>
    Float32Array.from({ length: 2 * h * dh * cap }, (_, i) => 1e3 * Math.cos(i)),
  );
  const run = async (rows: number[][], past: number[], pk: Float32Array[], pv: Float32Array[]) => {
    const b = rows.length;
    const n = rows[0]!.length;
    const feeds: Parameters<OrtSession['run']>[0] = {
      input_ids: [BigInt64Array.from(rows.flat(), BigInt), [b, n]],
      positions: [
        BigInt64Array.from(
          rows.flatMap((r, i) => r.map((_, j) => past[i]! + j)),
          BigInt,
        ),
        [b, n],
      ],
      past_lengths: [BigInt64Array.from(past, BigInt), [b]],
    };
    for (let i = 0; i < L; i++) {
      feeds[`past_key.${i}`] = [pk[i]!, [b, h, dh, cap]];
      feeds[`past_value.${i}`] = [pv[i]!, [b, h, cap, dh]];
    }
    const out = await dec.run(feeds);
    for (const [name, o] of Object.entries(out)) assert.ok(!o.dims.includes(cap), `${name} [${o.dims}]`);
    return out;
  };
  // Prefill each row alone (batch 1, empty past over a stale cache), then store its presents.
  for (let r = 0; r < 2; r++) {
    const one = (bufs: Float32Array[]) =>
      bufs.map((x) => x.subarray(r * h * dh * cap, (r + 1) * h * dh * cap));
    const out = await run([seqs[r]!.slice(0, prompt[r])], [0], one(keys), one(values));
    assert.deepEqual(out.logits!.dims, [1, v]);
    for (let i = 0; i < L; i++) {
      assert.deepEqual(out[`present_key.${i}`]!.dims, [1, h, prompt[r], dh]);
      putPresent(
        cfg,
        cap,
        { key: keys[i]!, value: values[i]!, slot: r, start: 0 },
        { key: out[`present_key.${i}`]!, value: out[`present_value.${i}`]!, row: 0 },
      );
    }
    const ref = await full.run({
      input_ids: [BigInt64Array.from(seqs[r]!.slice(0, prompt[r]), BigInt), [1, prompt[r]!]],
    });
    const last = (ref.logits!.data as Float32Array).subarray((prompt[r]! - 1) * v);
    assert.ok(maxAbsDiff(out.logits!.data as Float32Array, last) <= 1e-4);
  }
  // Both rows in one run: 2 new tokens each, different past lengths.
  const step = seqs.map((s, r) => s.slice(prompt[r], prompt[r]! + 2));
  const out = await run(step, prompt, keys, values);
  assert.deepEqual(out.logits!.dims, [2, v]);
  for (let r = 0; r < 2; r++) {
    const n = prompt[r]! + 2;
    const ref = await full.run({ input_ids: [BigInt64Array.from(seqs[r]!.slice(0, n), BigInt), [1, n]] });
    const last = (ref.logits!.data as Float32Array).subarray((n - 1) * v);
    const got = (out.logits!.data as Float32Array).subarray(r * v, (r + 1) * v);
    const scale = last.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
    assert.ok(scale > 1, `logits should be O(1) or more, got ${scale}`);
    const diff = maxAbsDiff(got, last);
    t.diagnostic(`row ${r}: max |decoder − full| = ${diff.toExponential(2)}`);
    assert.ok(diff <= 1e-4, `row ${r}: max |decoder − full| = ${diff}`);
  }
});

test('every export also writes decoder.onnx (role decoder) and keeps model.onnx as it was', async (t) => {
  const dir = tempDir(t);
  await importOfficial(join(FIXTURES, 'official-tiny', 'checkpoint'), join(dir, 'ckpt'));
  const m = await exportCheckpoint(join(dir, 'ckpt'), join(dir, 'export'));
  assert.deepEqual(
    m.graphs.map((g) => [g.role, g.file]),
    [
      ['full', 'model.onnx'],
      ['decoder', 'decoder.onnx'],
    ],
  );
  const [full, dec] = [m.graphs[0]!, m.graphs[1]!];
  assert.deepEqual(full.inputs, [{ name: 'input_ids', dtype: 'int64', shape: ['batch', 'seq'] }]);
  assert.deepEqual(full.outputs, [{ name: 'logits', dtype: 'float32', shape: ['batch', 'seq', 512] }]);
  assert.ok(existsSync(join(dir, 'export', 'decoder.onnx')));
  assert.equal(dec.sha256, fileSha256(join(dir, 'export', 'decoder.onnx')));
  assert.equal(dec.external_data, null);
  assert.deepEqual(
    dec.outputs.map((o) => o.name),
    ['logits', 'present_key.0', 'present_value.0', 'present_key.1', 'present_value.1'],
  );
  assert.ok(dec.outputs.every((o) => !o.shape.includes('cap')));
  assert.deepEqual(dec.inputs[3], { name: 'past_key.0', dtype: 'float32', shape: ['batch', 4, 16, 'cap'] });
  // Exports carry the verification variant (speculative decoding).
  assert.deepEqual(dec.inputs.at(-1), {
    name: 'logit_positions',
    dtype: 'int64',
    shape: ['batch', 'logits'],
  });
  assert.deepEqual(dec.outputs[0], { name: 'logits', dtype: 'float32', shape: ['batch', 'logits', 512] });
});

test('the verification variant returns logits at the positions logit_positions names, per row', async (t) => {
  const cfg = tinyConfig();
  const params = f32Params(cfg, 5);
  const g = buildDecoderGraph(cfg, params, undefined, { logitPositions: true });
  assert.deepEqual(g.inputs.at(-1), { name: 'logit_positions', dtype: 'int64', shape: ['batch', 'logits'] });
  assert.deepEqual([...g.outputs[0]!.shape], ['batch', 'logits', cfg.vocab_size]);
  const dec = await session(g);
  const full = await session(buildFullSequenceGraph(cfg, params));
  t.after(async () => {
    await dec.release();
    await full.release();
  });
  const [h, dh, v, L] = [cfg.num_heads, headDim(cfg), cfg.vocab_size, cfg.num_layers];
  // Two rows, empty caches, 4 new tokens each; row 0 asks positions [3, 0, 2], row 1 [1, 1, 3].
  const rows = [
    [7, 3, 50, 21],
    [9, 9, 1, 44],
  ];
  const want = [
    [3, 0, 2],
    [1, 1, 3],
  ];
  const feeds: Parameters<OrtSession['run']>[0] = {
    input_ids: [BigInt64Array.from(rows.flat(), BigInt), [2, 4]],
    positions: [BigInt64Array.from([0, 1, 2, 3, 0, 1, 2, 3], BigInt), [2, 4]],
    past_lengths: [BigInt64Array.from([0, 0], BigInt), [2]],
    logit_positions: [BigInt64Array.from(want.flat(), BigInt), [2, 3]],
  };
  for (let i = 0; i < L; i++) {
    feeds[`past_key.${i}`] = [new Float32Array(2 * h * dh * 5), [2, h, dh, 5]];
    feeds[`past_value.${i}`] = [new Float32Array(2 * h * dh * 5), [2, h, 5, dh]];
  }
  const out = await dec.run(feeds);
  assert.deepEqual(out.logits!.dims, [2, 3, v]);
  const got = out.logits!.data as Float32Array;
  for (let r = 0; r < 2; r++) {
    const ref = await full.run({ input_ids: [BigInt64Array.from(rows[r]!, BigInt), [1, 4]] });
    const all = ref.logits!.data as Float32Array;
    want[r]!.forEach((pos, j) => {
      const diff = maxAbsDiff(
        got.subarray((r * 3 + j) * v, (r * 3 + j + 1) * v),
        all.subarray(pos * v, (pos + 1) * v),
      );
      assert.ok(diff <= 1e-4, `row ${r} position ${pos}: max |decoder − full| = ${diff}`);
    });
  }
});

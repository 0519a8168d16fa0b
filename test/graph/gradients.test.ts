import assert from 'node:assert/strict';
import test from 'node:test';
import { gradients } from '../../src/graph/autodiff.ts';
import { GraphBuilder } from '../../src/graph/builder.ts';
import { crossEntropy, globalNorm } from '../../src/graph/composites.ts';
import { serializeModel } from '../../src/graph/serialize.ts';
import { tensor, type Value } from '../../src/graph/types.ts';
import { paramSpecs } from '../../src/model/params.ts';
import { type Ctx, causalAttend, PATTENTION, tokenformer } from '../../src/model/tokenformer.ts';
import { OrtSession } from '../../src/runtime/ort.ts';
import { mulberry32, tinyConfig } from '../helpers.ts';
import { erf, gelu, pattention, randomParams, referenceLogits } from '../reference/tokenformer-f64.ts';
import { checkGradients, type GradCheck } from './check-gradients.ts';

/**
 * Every gradient rule against finite differences (check-gradients.ts). float64 wherever
 * onnxruntime's CPU kernels take double — all of the builder's ops except Erf (checked on ORT
 * 1.29 and 1.30: Erf has a float kernel only) — with a 1e-6 relative tolerance; Erf, GELU and the
 * Pattention composite run in float32 with eps 1e-2 and a 1e-2 tolerance.
 */

const F64 = 'float64';
const F32 = 'float32';

function const64(g: GraphBuilder, shape: number[], values: (i: number) => number): Value {
  const n = shape.reduce((a, b) => a * b, 1);
  return g.constant(
    tensor(
      F64,
      shape,
      Float64Array.from({ length: n }, (_, i) => values(i)),
    ),
  );
}

const ids = (values: number[]) => BigInt64Array.from(values, BigInt);

/** Binary op on two float64 inputs of the given shapes. */
function binary(
  op: (g: GraphBuilder, a: Value, b: Value) => Value,
  sa: (number | string)[],
  sb: (number | string)[],
) {
  return (g: GraphBuilder) => op(g, g.input('a', F64, sa), g.input('b', F64, sb));
}
function unary(
  op: (g: GraphBuilder, x: Value) => Value,
  shape: (number | string)[] = [2, 3, 4],
  dtype = F64,
) {
  return (g: GraphBuilder) => op(g, g.input('x', dtype as 'float64', shape));
}

/** Causal attention as the model writes it: softmax of q·kᵀ masked by Where with a huge negative. */
function causalSoftmax(g: GraphBuilder): Value {
  const q = g.input('q', F64, [2, 2, 4, 3]); // [B, H, T, D]
  const k = g.input('k', F64, [2, 2, 4, 3]);
  const v = g.input('v', F64, [2, 2, 4, 3]);
  const pos = g.range(g.dimSize(q, 2), 4); // [T]
  const mask = g.lessOrEqual(g.unsqueeze(pos, [0]), g.unsqueeze(pos, [1])); // [T, T]
  const scores = g.mul(g.matmul(q, g.transpose(k, [0, 1, 3, 2])), g.scalarLike(1 / Math.sqrt(3), F64));
  const masked = g.where(mask, scores, g.scalarLike(-3.4028234663852886e38, F64));
  return g.matmul(g.softmax(masked, -1), v); // [B, H, T, D]
}

/** Per-token cross-entropy reference in float64. */
function crossEntropyRef(logits: ArrayLike<number>, labels: BigInt64Array, vocab: number): number {
  let total = 0;
  for (let t = 0; t < labels.length; t++) {
    const row = Array.from({ length: vocab }, (_, j) => logits[t * vocab + j]!);
    const m = Math.max(...row);
    const lse = m + Math.log(row.reduce((s, x) => s + Math.exp(x - m), 0));
    total += lse - row[Number(labels[t]!)]!;
  }
  return total / labels.length;
}

/**
 * float32 graphs checked against finite differences of a float64 JS reference: the tolerance
 * then measures the analytic gradient's float32 rounding, not float32 differencing noise.
 */
const F32_ON_REFERENCE = { fdOnReference: true, eps: 1e-3, tol: 1e-4 } as const;

const CASES: Record<string, GradCheck> = {
  // ---- element-wise, with broadcasting
  'Add [2,3,4] + [4]': { build: binary((g, a, b) => g.add(a, b), [2, 3, 4], [4]) },
  'Add [batch,3,4] + [1,4] (symbolic)': {
    build: binary((g, a, b) => g.add(a, b), ['batch', 3, 4], [1, 4]),
    dims: { batch: 2 },
  },
  'Sub [2,3,1] − [2,3,4]': { build: binary((g, a, b) => g.sub(a, b), [2, 3, 1], [2, 3, 4]) },
  'Mul [2,1,4] · [3,1]': { build: binary((g, a, b) => g.mul(a, b), [2, 1, 4], [3, 1]) },
  'Div [2,3,4] / [2,3,1]': {
    build: binary((g, a, b) => g.div(a, b), [2, 3, 4], [2, 3, 1]),
    ranges: { b: [0.5, 2] },
  },
  'Div [2,3,1] / [2,3,4]': {
    build: binary((g, a, b) => g.div(a, b), [2, 3, 1], [2, 3, 4]),
    ranges: { b: [0.5, 2] },
  },
  'Max [2,3,4] vs [4]': { build: binary((g, a, b) => g.max(a, b), [2, 3, 4], [4]) },
  'Pow x^2.5': { build: unary((g, x) => g.pow(x, g.scalarLike(2.5, F64))), ranges: { x: [0.5, 2] } },
  'Pow with a trained exponent [] ': {
    build: binary((g, a, b) => g.pow(a, b), [2, 3], []),
    ranges: { a: [0.5, 2], b: [0.5, 3] },
  },
  Neg: { build: unary((g, x) => g.neg(x)) },
  'Erf (float32; differences of the float64 reference)': {
    build: unary((g, x) => g.erf(x), [2, 3, 4], F32),
    ranges: { x: [-2, 2] },
    reference: (d) => Array.from(d.x as Float32Array, erf),
    ...F32_ON_REFERENCE,
  },
  Sqrt: { build: unary((g, x) => g.sqrt(x)), ranges: { x: [0.5, 2] } },
  Exp: { build: unary((g, x) => g.exp(x)) },
  Log: { build: unary((g, x) => g.log(x)), ranges: { x: [0.5, 2] } },
  Cos: { build: unary((g, x) => g.cos(x), [2, 3, 4]), ranges: { x: [-3, 3] } },
  Sin: { build: unary((g, x) => g.sin(x), [2, 3, 4]), ranges: { x: [-3, 3] } },
  // `c` reaches y only through a bool mask: its gradient is zero (unreachable), and so is FD's.
  'Where [2,1,4] ? [2,3,4] : [4]': {
    build: (g) => {
      const c = g.input('c', F64, [2, 1, 4]);
      const mask = g.lessOrEqual(c, g.scalarLike(0, F64));
      return g.where(mask, g.input('a', F64, [2, 3, 4]), g.input('b', F64, [4]));
    },
  },
  'Cast float64 → float32 → float64': {
    build: unary((g, x) => g.cast(g.cast(x, F32), F64)),
    eps: 1e-2,
    tol: 1e-4, // float32 rounding of the perturbed input
  },
  'Sum [2,3,4] + [4] + [3,1]': {
    build: (g) => g.sum([g.input('a', F64, [2, 3, 4]), g.input('b', F64, [4]), g.input('c', F64, [3, 1])]),
  },
  'Identity, and a value used three times (x·x + x)': {
    build: unary((g, x) => {
      const i = g.stopGradient(x); // Identity, detached: adds nothing to the gradient…
      return g.add(g.mul(x, x), g.add(x, g.sub(i, i))); // …and contributes 0 to y
    }),
  },

  // ---- linear algebra
  'MatMul [2,3,4,5]·[2,3,5,4] (attention scores)': {
    build: binary((g, a, b) => g.matmul(a, b), [2, 3, 4, 5], [2, 3, 5, 4]),
  },
  'MatMul [2,3,4]·[4,5] (weight)': { build: binary((g, a, b) => g.matmul(a, b), [2, 3, 4], [4, 5]) },
  'MatMul [batch,3,4]·[4,5] (symbolic)': {
    build: binary((g, a, b) => g.matmul(a, b), ['batch', 3, 4], [4, 5]),
    dims: { batch: 3 },
  },
  'MatMul [4,5]·[2,5,3] (left broadcast)': { build: binary((g, a, b) => g.matmul(a, b), [4, 5], [2, 5, 3]) },
  'MatMul [2,1,3,4]·[1,3,4,2] (both broadcast)': {
    build: binary((g, a, b) => g.matmul(a, b), [2, 1, 3, 4], [1, 3, 4, 2]),
  },

  // ---- reductions
  'ReduceSum axis 1': { build: unary((g, x) => g.reduce('ReduceSum', x, [1], false)) },
  'ReduceSum axes 0,2 keepdims': { build: unary((g, x) => g.reduce('ReduceSum', x, [0, 2], true)) },
  'ReduceMean axis −1 keepdims': { build: unary((g, x) => g.reduce('ReduceMean', x, [-1], true)) },
  'ReduceMean over [batch, seq] (symbolic count)': {
    build: unary((g, x) => g.reduce('ReduceMean', x, [0, 1], false), ['batch', 'seq', 4]),
    dims: { batch: 2, seq: 3 },
  },
  'ReduceL2 axis −1 keepdims': { build: unary((g, x) => g.reduce('ReduceL2', x, [-1], true)) },
  'ReduceL2 axis 1': { build: unary((g, x) => g.reduce('ReduceL2', x, [1], false)) },
  'ReduceMax axis −1 keepdims': { build: unary((g, x) => g.reduce('ReduceMax', x, [-1], true)) },
  'ReduceMax axes 0,2': { build: unary((g, x) => g.reduce('ReduceMax', x, [0, 2], false)) },

  // ---- softmax and normalisation
  'Softmax axis −1': { build: unary((g, x) => g.softmax(x, -1)), ranges: { x: [-3, 3] } },
  'Softmax axis 1': { build: unary((g, x) => g.softmax(x, 1)), ranges: { x: [-3, 3] } },
  'causal-masked Softmax (Where with −3.4e38) · V': { build: causalSoftmax, ranges: { q: [-2, 2] } },
  'LayerNormalization with scale and bias': {
    build: (g) =>
      g.layerNorm(g.input('x', F64, [2, 3, 5]), g.input('scale', F64, [5]), g.input('bias', F64, [5]), 1e-5),
  },
  'LayerNormalization with scale, no bias': {
    build: (g) => g.layerNorm(g.input('x', F64, [2, 3, 5]), g.input('scale', F64, [5]), undefined, 1e-5),
  },
  'LayerNormalization plain (constant ones, as the blocks)': {
    build: (g) =>
      g.layerNorm(
        g.input('x', F64, ['batch', 3, 5]),
        const64(g, [5], () => 1),
        undefined,
        1e-5,
      ),
    dims: { batch: 2 },
  },

  // ---- indexing: repeated ids must all accumulate, also on 2 intra-op threads
  'Gather (embedding) with repeated ids, 2 threads': {
    build: (g) => g.gather(g.input('table', F64, [7, 64]), g.input('ids', 'int64', [4, 16])),
    feeds: { ids: ids(Array.from({ length: 64 }, (_, i) => [1, 1, 3, 6, 1, 0][i % 6]!)) },
    intraOpThreads: 2,
  },
  'Gather (embedding) [batch, seq] ids (symbolic)': {
    build: (g) => g.gather(g.input('table', F64, [5, 3]), g.input('ids', 'int64', ['batch', 'seq'])),
    feeds: { ids: ids([4, 4, 0, 4, 2, 4]) },
    dims: { batch: 2, seq: 3 },
  },
  'Gather axis 1 with repeated ids': {
    build: (g) => g.gather(g.input('x', F64, [3, 5, 4]), g.input('ids', 'int64', [2, 2]), 1),
    feeds: { ids: ids([1, 4, 1, 1]) },
  },
  'GatherElements axis 1': {
    build: (g) => g.gatherElements(g.input('x', F64, [3, 4]), g.input('ids', 'int64', [3, 5]), 1),
    feeds: { ids: ids([0, 1, 1, 3, 3, 2, 2, 2, 0, 1, 3, 0, 0, 0, 1]) },
  },
  'ScatterElements add (repeated indices)': {
    build: (g) =>
      g.scatterElements(
        g.input('data', F64, [4, 3]),
        g.input('ids', 'int64', [5, 3]),
        g.input('updates', F64, [5, 3]),
        0,
        'add',
      ),
    feeds: { ids: ids([0, 1, 1, 3, 3, 2, 2, 2, 0, 1, 3, 0, 0, 0, 1]) },
  },
  'ScatterElements none (unique indices)': {
    build: (g) =>
      g.scatterElements(
        g.input('data', F64, [4, 3]),
        g.input('ids', 'int64', [2, 3]),
        g.input('updates', F64, [2, 3]),
        0,
      ),
    feeds: { ids: ids([0, 1, 3, 2, 3, 0]) },
  },

  // ---- shape manipulation
  'Transpose [2,0,1]': { build: unary((g, x) => g.transpose(x, [2, 0, 1])) },
  'Reshape [2,3,4] → [0,-1]': { build: unary((g, x) => g.reshape(x, [0, -1])) },
  'Reshape [batch,seq,4] → [0,0,2,2] (symbolic)': {
    build: unary((g, x) => g.reshape(x, [0, 0, 2, 2]), ['batch', 'seq', 4]),
    dims: { batch: 2, seq: 3 },
  },
  'Unsqueeze [-1, 1]': { build: unary((g, x) => g.unsqueeze(x, [-1, 1])) },
  'Squeeze [1]': { build: unary((g, x) => g.squeeze(x, [1]), [2, 1, 4]) },
  'Slice last axis [1, 3)': { build: unary((g, x) => g.slice(x, -1, 1, 3)) },
  'Slice [-2, end) of [batch, 3, 4] (symbolic)': {
    build: unary((g, x) => g.slice(x, 1, -2, 2 ** 62), ['batch', 3, 4]),
    dims: { batch: 2 },
  },
  'Pad [1,0,2] before, [0,2,1] after': { build: unary((g, x) => g.pad(x, [1, 0, 2], [0, 2, 1])) },
  'Concat of three on axis −1': {
    build: (g) =>
      g.concat(
        [g.input('a', F64, [2, 3, 1]), g.input('b', F64, [2, 3, 4]), g.input('c', F64, [2, 3, 2])],
        -1,
      ),
  },
  'Expand [3,1] → [2,3,4]': { build: unary((g, x) => g.expand(x, [2, 3, 4]), [3, 1]) },

  // ---- composites
  'GELU (erf form, float32)': {
    build: unary(
      (g, x) => g.mul(g.mul(x, g.scalar(0.5)), g.add(g.scalar(1), g.erf(g.mul(x, g.scalar(Math.SQRT1_2))))),
      [2, 3, 4],
      F32,
    ),
    ranges: { x: [-3, 3] },
    reference: (d) => Array.from(d.x as Float32Array, gelu),
    ...F32_ON_REFERENCE,
  },
  'Pattention (inline body: x·Kᵀ → ReduceL2 → Max floor → Div → ·τ → GELU → ·V), float32 on FD': {
    build: (g) => {
      const x = g.input('x', F32, [2, 3, 6]);
      const keys = g.input('keys', F32, [5, 6]);
      const values = g.input('values', F32, [5, 4]);
      return g.inline(PATTENTION, [x, keys, values], { tau: Math.sqrt(5) })[0]!;
    },
  },
  'Pattention, float32 on differences of the float64 reference': {
    build: (g) => {
      const x = g.input('x', F32, [2, 3, 6]);
      const keys = g.input('keys', F32, [5, 6]);
      const values = g.input('values', F32, [5, 4]);
      return g.inline(PATTENTION, [x, keys, values], { tau: Math.sqrt(5) })[0]!;
    },
    reference: (d) =>
      pattention(
        Float64Array.from(d.x as Float32Array),
        6,
        6,
        d.keys as Float32Array,
        d.values as Float32Array,
        5,
        4,
        Math.sqrt(5),
      ),
    ...F32_ON_REFERENCE,
  },
  'crossEntropy [2,3,7] with repeated labels': {
    build: (g) => crossEntropy(g, g.input('logits', F64, [2, 3, 7]), g.input('labels', 'int64', [2, 3])),
    feeds: { labels: ids([3, 3, 0, 6, 3, 0]) },
    ranges: { logits: [-4, 4] },
    reference: (d) => [crossEntropyRef(d.logits as Float64Array, d.labels as BigInt64Array, 7)],
  },
  'crossEntropy [batch,seq,5] (symbolic)': {
    build: (g) =>
      crossEntropy(
        g,
        g.input('logits', F64, ['batch', 'seq', 5]),
        g.input('labels', 'int64', ['batch', 'seq']),
      ),
    feeds: { labels: ids([1, 4, 4, 0]) },
    dims: { batch: 2, seq: 2 },
    reference: (d) => [crossEntropyRef(d.logits as Float64Array, d.labels as BigInt64Array, 5)],
  },
  'globalNorm of [2,3], [4], []': {
    build: (g) => globalNorm(g, [g.input('a', F64, [2, 3]), g.input('b', F64, [4]), g.input('c', F64, [])]),
    reference: (d) => [
      Math.sqrt(
        [d.a, d.b, d.c].reduce((s, v) => s + Array.from(v as Float64Array).reduce((t, x) => t + x * x, 0), 0),
      ),
    ],
  },
  // The training-step forward end to end: every rule composed (tied embedding used twice, rotary,
  // causal attention, inline Pattention, LayerNorms, cross-entropy), symbolic batch and seq.
  'tiny TokenFormer (inline Pattention) + crossEntropy, float32, sampled coordinates': (() => {
    const cfg = tinyConfig();
    const specs = paramSpecs(cfg);
    const init = randomParams(cfg, 3);
    return {
      build: (g: GraphBuilder) => {
        const tokens = g.input('input_ids', 'int64', ['batch', 'seq']);
        const labels = g.input('labels', 'int64', ['batch', 'seq']);
        const w = new Map(specs.map((s) => [s.name, g.input(s.name, F32, s.shape)]));
        const c: Ctx = { g, cfg, w: (n) => w.get(n)!, opts: { pattention: 'inline' } };
        const positions = g.unsqueeze(g.range(g.dimSize(tokens, 1), 'seq'), [0]); // [1, T]
        return crossEntropy(g, tokenformer(c, tokens, positions, causalAttend(c)), labels);
      },
      feeds: {
        input_ids: ids([5, 17, 5, 60, 2, 33, 5, 17, 0, 9]),
        labels: ids([17, 5, 60, 2, 33, 17, 17, 0, 9, 9]),
        // Scaled up from the official init so gradients stand well above float32 FD noise.
        ...Object.fromEntries(
          specs.map((s) => {
            const scale =
              s.name === 'embed.weight'
                ? 40
                : s.name.endsWith('.keys')
                  ? 30
                  : s.name.startsWith('final')
                    ? 1
                    : 4;
            return [s.name, Float32Array.from(init.get(s.name)!, (x) => x * scale)];
          }),
        ),
      },
      dims: { batch: 2, seq: 5 },
      // Differences of the independent float64 reference model (test/reference): the float32
      // graph's own differences drown gradients below ~1e-4 in rounding.
      reference: (d) => {
        const params = new Map(specs.map((s) => [s.name, d[s.name] as Float32Array]));
        const rows = [0, 1].map((b) =>
          Array.from((d.input_ids as BigInt64Array).slice(b * 5, b * 5 + 5), Number),
        );
        const logits = referenceLogits(cfg, params, rows);
        return [crossEntropyRef(logits, d.labels as BigInt64Array, cfg.vocab_size)];
      },
      ...F32_ON_REFERENCE,
      tol: 1e-3,
      maxCoords: 6,
    };
  })(),
};

for (const [name, c] of Object.entries(CASES)) {
  test(`gradient: ${name}`, async (t) => {
    const r = await checkGradients(c);
    const errs = Object.entries(r.errors).map(([k, e]) => `${k} ${e.toExponential(1)}`);
    t.diagnostic(`max FD error ${r.max.toExponential(2)} (${errs.join(', ')})`);
    if (r.forwardError !== undefined) t.diagnostic(`forward error ${r.forwardError.toExponential(2)}`);
  });
}

// ---- behaviour beyond the rules ----------------------------------------------------------------

async function runGraph(
  g: GraphBuilder,
  feeds: Record<string, Float64Array>,
  shapes: Record<string, number[]>,
) {
  const s = await OrtSession.create(serializeModel(g, { graphName: 't' }), { device: 'cpu' });
  try {
    const f: Parameters<typeof s.run>[0] = {};
    for (const [k, v] of Object.entries(feeds)) f[k] = [v as unknown as Float32Array, shapes[k]!];
    const out = await s.run(f);
    return Object.fromEntries(
      Object.entries(out).map(([k, v]) => [k, Array.from(v.data as unknown as Float64Array)]),
    );
  } finally {
    await s.release();
  }
}

test('Max routes a tie to the first operand; an unused input gets zeros of its shape', async () => {
  const g = new GraphBuilder();
  const a = g.input('a', F64, [3]);
  const b = g.input('b', F64, [3]);
  const unused = g.input('unused', F64, ['batch', 2]);
  const loss = g.reduce('ReduceSum', g.max(a, b), [0], false);
  const [da, db, du] = gradients(g, loss, [a, b, unused]);
  g.output(da!, 'da');
  g.output(db!, 'db');
  g.output(du!, 'du');
  assert.deepEqual(du!.shape, ['batch', 2]);
  const out = await runGraph(
    g,
    { a: Float64Array.from([1, 2, 3]), b: Float64Array.from([1, 5, 0]), unused: new Float64Array(6) },
    { a: [3], b: [3], unused: [3, 2] },
  );
  assert.deepEqual(out.da, [1, 0, 1]);
  assert.deepEqual(out.db, [0, 1, 0]);
  assert.deepEqual(out.du, [0, 0, 0, 0, 0, 0]);
});

test('Pattention gives no NaN gradient for an all-zero score row (the ‖A‖₂ floor)', async () => {
  const g = new GraphBuilder();
  const x = g.input('x', F32, [1, 2, 3]);
  const keys = g.input('keys', F32, [4, 3]);
  const values = g.input('values', F32, [4, 2]);
  const y = g.inline(PATTENTION, [x, keys, values], { tau: 2 })[0]!;
  const grads = gradients(g, g.reduce('ReduceSum', y, [0, 1, 2], false), [x, keys, values]);
  for (const [i, d] of grads.entries()) g.output(d, `d${i}`);
  const s = await OrtSession.create(serializeModel(g, { graphName: 't' }), { device: 'cpu' });
  const r = mulberry32(7);
  const out = await s.run({
    x: [Float32Array.from([0, 0, 0, 1, -2, 0.5]), [1, 2, 3]], // first token all zero → A row 0
    keys: [Float32Array.from({ length: 12 }, () => r() - 0.5), [4, 3]],
    values: [Float32Array.from({ length: 8 }, () => r() - 0.5), [4, 2]],
  });
  await s.release();
  for (const k of ['d0', 'd1', 'd2']) {
    assert.ok((out[k]!.data as Float32Array).every(Number.isFinite), `${k} has a NaN`);
  }
});

test('a node without a rule fails naming the op; a custom-op node asks for inline Pattention', () => {
  const g = new GraphBuilder();
  const x = g.input('x', F32, [2, 3]);
  const y = g.emit('Tanh', [x], {}, F32, [2, 3]);
  assert.throws(
    () => gradients(g, g.reduce('ReduceSum', y, [0, 1], false), [x]),
    (e: Error & { code?: string }) =>
      e.code === 'TF_ERR_GRAPH' && /no gradient rule for op Tanh \(node Tanh_\d+\)/.test(e.message),
  );

  const h = new GraphBuilder();
  const xs = h.input('x', F32, [1, 2, 3]);
  const keys = h.input('keys', F32, [4, 3]);
  const values = h.input('values', F32, [4, 2]);
  const [p] = h.call(PATTENTION, [xs, keys, values], { tau: 2 });
  assert.throws(
    () => gradients(h, h.reduce('ReduceSum', p!, [0, 1, 2], false), [keys]),
    /ai\.tokenformer::Pattention .*custom op.*pattention: 'inline'/,
  );
  assert.throws(() => gradients(h, p!, [keys]), /the loss must be a float scalar/);
});

test('gradients() builds only what the parameters need (no gradient for constants)', () => {
  const g = new GraphBuilder();
  const x = g.input('x', F64, [2, 3]);
  const w = g.input('w', F64, [3, 4]);
  const loss = g.reduce('ReduceSum', g.matmul(x, w), [0, 1], false);
  const before = g.nodes.length;
  gradients(g, loss, [w]);
  // dW = xᵀ·dY only: no dX matmul.
  assert.equal(g.nodes.slice(before).filter((n) => n.op === 'MatMul').length, 1);
});

test('embedding gradient: 1024 ids into 50 rows on 2 threads lose no update (ScatterElements, not ScatterND)', async () => {
  const [V, d, B, T] = [50, 256, 8, 128];
  const g = new GraphBuilder();
  const table = g.input('table', F64, [V, d]);
  const tokens = g.input('ids', 'int64', [B, T]);
  const w = g.input('w', F64, [B, T, d]);
  const loss = g.reduce('ReduceSum', g.mul(g.gather(table, tokens), w), [0, 1, 2], false);
  g.output(gradients(g, loss, [table])[0]!, 'dtable');
  const r = mulberry32(11);
  const idData = BigInt64Array.from({ length: B * T }, () => BigInt(Math.floor(r() ** 3 * V))); // skewed: many repeats
  const wData = Float64Array.from({ length: B * T * d }, () => r() - 0.5);
  const s = await OrtSession.create(serializeModel(g, { graphName: 't' }), {
    device: 'cpu',
    intraOpThreads: 2,
  });
  try {
    const expected = new Float64Array(V * d);
    idData.forEach((id, n) => {
      for (let j = 0; j < d; j++) expected[Number(id) * d + j]! += wData[n * d + j]!;
    });
    for (let run = 0; run < 5; run++) {
      const out = await s.run({
        table: [new Float64Array(V * d) as unknown as Float32Array, [V, d]],
        ids: [idData, [B, T]],
        w: [wData as unknown as Float32Array, [B, T, d]],
      });
      const got = out.dtable!.data as unknown as Float64Array;
      let worst = 0;
      for (let i = 0; i < V * d; i++) worst = Math.max(worst, Math.abs(got[i]! - expected[i]!));
      assert.ok(worst < 1e-12, `run ${run}: embedding gradient off by ${worst}`);
    }
  } finally {
    await s.release();
  }
});

test('the ops added for autodiff check shapes and dtypes at build time', () => {
  const g = new GraphBuilder();
  const x = g.input('x', F32, ['batch', 3, 4]);
  const i = g.input('i', 'int64', ['batch', 3, 4]);
  assert.throws(() => g.squeeze(x, [1]), /Squeeze: axis 1 of \[batch, 3, 4\] is not 1/);
  assert.throws(() => g.expandLike(g.input('y', F32, [2, 4]), x), /Expand: .*broadcast|cannot/);
  assert.throws(() => g.expand(x, [5, 4]), /Expand: cannot (broadcast|prove)/);
  assert.throws(() => g.equal(x, i), /Equal: dtype mismatch/);
  assert.throws(() => g.sum([x, i]), /Sum: dtype mismatch/);
  assert.throws(() => g.pad(x, [1, 0], [0, 0]), /Pad: need 3 non-negative amounts/);
  assert.throws(
    () => g.gatherElements(x, g.input('j', 'int64', [3, 4]), 1),
    /GatherElements: indices .* rank/,
  );
  assert.throws(() => g.gatherElements(x, x, 1), /GatherElements: indices must be int64 or int32/);
  assert.throws(
    () => g.scatterElements(x, i, g.input('u', F32, ['batch', 3, 5]), 0, 'add'),
    /ScatterElements: indices \[batch, 3, 4\] and updates \[batch, 3, 5\] must have one shape/,
  );
  assert.throws(
    () => g.reshapeLike(g.input('w', F32, [2, 3]), g.input('v', F32, [5])),
    /element counts differ/,
  );
  assert.throws(() => g.scalarLike(1, 'bool'), /no scalar constants of dtype bool/);
  assert.deepEqual(g.pad(x, [0, 1, 0], [0, 2, 3]).shape, ['batch', 6, 7]);
  assert.deepEqual(g.oneHot(g.input('k', 'int64', ['batch', 3]), 7, F32).shape, ['batch', 3, 7]);
  assert.deepEqual(g.squeeze(g.input('s', F32, [2, 1, 'n']), [-2]).shape, [2, 'n']);
  assert.deepEqual(g.zerosLike(x).shape, ['batch', 3, 4]);
  assert.throws(() => crossEntropy(g, x, g.input('lab', 'int64', ['batch', 4])), /crossEntropy: labels/);
});

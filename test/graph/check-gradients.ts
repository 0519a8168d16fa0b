import assert from 'node:assert/strict';
import { gradients } from '../../src/graph/autodiff.ts';
import { GraphBuilder } from '../../src/graph/builder.ts';
import { serializeModel } from '../../src/graph/serialize.ts';
import type { Value } from '../../src/graph/types.ts';
import { type Feed, OrtSession } from '../../src/runtime/ort.ts';
import { mulberry32 } from '../helpers.ts';

/**
 * The one gradient check (STYLE.md: every primitive tested backward by one helper): builds a
 * small graph twice — once with `gradients()` of L = Σ w·y (w random, so every output element
 * matters differently) fetched as outputs, once forward only — and compares every input's
 * analytic gradient with central finite differences of L, computed in float64 in JS from the
 * forward graph's y run with each input element perturbed.
 *
 * Error per coordinate: |analytic − numeric| / max(|analytic|, |numeric|, floor), with floor =
 * `floor` × the largest |numeric| of that input (so near-zero entries are judged absolutely).
 */

export type FloatData = Float64Array | Float32Array;
export type InputData = FloatData | BigInt64Array | Int32Array;

export interface GradCheck {
  /** Declares the inputs (static shapes, or symbols sized by `dims`) and returns y. */
  build: (g: GraphBuilder) => Value;
  /** Data for inputs; float inputs left out are uniform random in `ranges[name]` (default [−1, 1)). */
  feeds?: Record<string, InputData>;
  ranges?: Record<string, readonly [number, number]>;
  /** Run-time sizes of symbolic dims. */
  dims?: Record<string, number>;
  /** Inputs to differentiate (default: every float input). */
  wrt?: readonly string[];
  /** Finite-difference step and tolerance (defaults: float64 1e-5 / 1e-6, float32 1e-2 / 1e-2). */
  eps?: number;
  tol?: number;
  floor?: number;
  /** Check at most this many coordinates per input: the largest analytic ones, then random. */
  maxCoords?: number;
  intraOpThreads?: number;
  seed?: number;
  /** Optional float64 forward reference for y, checked to `forwardTol` (float64 1e-12, float32 1e-5). */
  reference?: (inputs: Record<string, InputData>) => ArrayLike<number>;
  forwardTol?: number;
  /**
   * Take the finite differences of `reference` (float64, in JS) instead of the graph: for float32
   * graphs too deep for float32 differences, whose rounding would swamp small gradients.
   */
  fdOnReference?: boolean;
}

export interface GradReport {
  /** Largest error per differentiated input. */
  errors: Record<string, number>;
  max: number;
  /** Largest relative forward error against `reference`, when given. */
  forwardError?: number;
}

function concrete(v: Value, dims: Record<string, number>): number[] {
  return v.shape.map((d) => {
    if (typeof d === 'number') return d;
    const n = dims[d];
    if (n === undefined) throw new Error(`check: size of symbolic dim ${d} of ${v.name} not given`);
    return n;
  });
}

function floatArray(dtype: string, n: number): FloatData {
  if (dtype === 'float64') return new Float64Array(n);
  if (dtype === 'float32') return new Float32Array(n);
  throw new Error(`check: float inputs must be float32 or float64, got ${dtype}`);
}

/** OrtSession's Feed type predates float64 graphs; ort.Tensor takes a Float64Array as double. */
const asFeed = (d: InputData) => d as unknown as Feed;

const numel = (dims: readonly number[]) => dims.reduce((a, b) => a * b, 1);

export async function checkGradients(c: GradCheck): Promise<GradReport> {
  const dims = c.dims ?? {};
  const random = mulberry32(c.seed ?? 1234);

  // Analytic graph: y, L = Σ w·y, gradients fetched as outputs.
  const g = new GraphBuilder();
  const y = c.build(g);
  const float = y.dtype === 'float64' ? 'float64' : 'float32';
  const w = g.input('__w', y.dtype, y.shape);
  const wy = g.mul(y, w);
  const all = Array.from({ length: y.shape.length }, (_, i) => i);
  const loss = all.length ? g.reduce('ReduceSum', wy, all, false) : wy;
  const inputs = g.inputs.filter((v) => v.name !== '__w');
  const wrt = inputs.filter((v) =>
    c.wrt ? c.wrt.includes(v.name) : v.dtype === 'float32' || v.dtype === 'float64',
  );
  const grads = gradients(g, loss, wrt);
  for (const [i, v] of wrt.entries()) g.output(grads[i]!, `grad.${v.name}`);
  g.output(y, '__y');

  // Forward-only graph from the same builder function.
  const f = new GraphBuilder();
  f.output(c.build(f), '__y');

  const data: Record<string, InputData> = {};
  const shapes: Record<string, number[]> = {};
  for (const v of inputs) {
    shapes[v.name] = concrete(v, dims);
    const given = c.feeds?.[v.name];
    if (given) {
      data[v.name] = given;
      continue;
    }
    const arr = floatArray(v.dtype, numel(shapes[v.name]!));
    const [lo, hi] = c.ranges?.[v.name] ?? [-1, 1];
    for (let i = 0; i < arr.length; i++) arr[i] = lo + (hi - lo) * random();
    data[v.name] = arr;
  }
  const yShape = concrete(y, dims);
  const weights = floatArray(y.dtype, numel(yShape));
  for (let i = 0; i < weights.length; i++) weights[i] = 2 * random() - 1;

  const opts = { device: 'cpu' as const, ...(c.intraOpThreads ? { intraOpThreads: c.intraOpThreads } : {}) };
  const gs = await OrtSession.create(serializeModel(g, { graphName: 'grad_check' }), opts);
  const fs = await OrtSession.create(serializeModel(f, { graphName: 'grad_check_forward' }), opts);
  try {
    const feeds = () => {
      const out: Record<string, readonly [Feed, readonly number[]]> = {};
      for (const v of inputs) out[v.name] = [asFeed(data[v.name]!), shapes[v.name]!];
      return out;
    };
    const analytic = await gs.run({ ...feeds(), __w: [asFeed(weights), yShape] });
    const lossOf = async () => {
      const yv =
        c.fdOnReference && c.reference ? c.reference(data) : ((await fs.run(feeds())).__y!.data as FloatData);
      let s = 0;
      for (let i = 0; i < yv.length; i++) s += weights[i]! * yv[i]!;
      return s;
    };

    const report: GradReport = { errors: {}, max: 0 };
    if (c.reference) {
      const ref = c.reference(data);
      const got = analytic.__y!.data as FloatData;
      assert.equal(got.length, ref.length, 'forward: output size');
      let scale = 0;
      for (let i = 0; i < ref.length; i++) scale = Math.max(scale, Math.abs(ref[i]!));
      let err = 0;
      for (let i = 0; i < ref.length; i++) err = Math.max(err, Math.abs(got[i]! - ref[i]!) / (scale || 1));
      report.forwardError = err;
      const forwardTol = c.forwardTol ?? (float === 'float64' ? 1e-12 : 1e-5);
      assert.ok(err <= forwardTol, `forward differs from the reference by ${err} (> ${forwardTol})`);
    }

    const eps = c.eps ?? (float === 'float64' ? 1e-5 : 1e-2);
    const tol = c.tol ?? (float === 'float64' ? 1e-6 : 1e-2);
    const floor = c.floor ?? 1e-3;
    for (const v of wrt) {
      const x = data[v.name] as FloatData;
      const a = analytic[`grad.${v.name}`]!.data as FloatData;
      assert.equal(a.length, x.length, `gradient of ${v.name}: size`);
      const coords = pick(a, c.maxCoords, random);
      const numeric = new Map<number, number>();
      for (const i of coords) {
        const x0 = x[i]!;
        x[i] = x0 + eps;
        const up = x[i]!; // the stored value (float32 rounds the step)
        const lp = await lossOf();
        x[i] = x0 - eps;
        const down = x[i]!;
        const lm = await lossOf();
        x[i] = x0;
        numeric.set(i, (lp - lm) / (up - down));
      }
      let scale = 0;
      for (const n of numeric.values()) scale = Math.max(scale, Math.abs(n));
      let worst = 0;
      let where = -1;
      for (const [i, n] of numeric) {
        const ai = a[i]!;
        const err = Math.abs(ai - n) / Math.max(Math.abs(ai), Math.abs(n), floor * scale, 1e-300);
        if (!(err <= worst)) [worst, where] = [Number.isNaN(err) ? Infinity : err, i];
      }
      report.errors[v.name] = worst;
      report.max = Math.max(report.max, worst);
      assert.ok(
        worst <= tol,
        `d/d${v.name}[${where}]: analytic ${a[where]} vs numeric ${numeric.get(where)} ` +
          `(relative error ${worst.toExponential(2)} > ${tol})`,
      );
    }
    return report;
  } finally {
    await gs.release();
    await fs.release();
  }
}

/** Coordinates to check: all, or the largest |analytic| half and a random half. */
function pick(a: FloatData, max: number | undefined, random: () => number): number[] {
  const all = Array.from({ length: a.length }, (_, i) => i);
  if (max === undefined || a.length <= max) return all;
  const byMagnitude = [...all].sort((p, q) => Math.abs(a[q]!) - Math.abs(a[p]!));
  const chosen = new Set(byMagnitude.slice(0, Math.ceil(max / 2)));
  while (chosen.size < max) chosen.add(Math.floor(random() * a.length));
  return [...chosen];
}

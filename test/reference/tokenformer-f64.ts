/**
 * A float64 TokenFormer forward pass in plain TypeScript, used only by tests as an independent
 * check of the ONNX graphs (DESIGN.md §2). Deliberately shares no code with `src/model/` beyond
 * the config type and the parameter names/shapes: straightforward loops, read top-down like the
 * paper: erf/GELU → Pattention → LayerNorm → rotary → attention → block → model.
 *
 * Layouts are row-major (C order): a tensor `[T, d]` is a Float64Array of T·d numbers.
 */
import type { PattentionConfig, TokenFormerConfig } from '../../src/model/config.ts';
import { EMBEDDING, FINAL_NORM_BIAS, FINAL_NORM_WEIGHT, paramSpecs } from '../../src/model/params.ts';
import { mulberry32 } from '../helpers.ts';

// ---------------------------------------------------------------------------------------------
// erf and the exact GELU

const TWO_OVER_SQRT_PI = 1.1283791670955126; // 2/√π
const ONE_OVER_SQRT_PI = 0.5641895835477563; // 1/√π
/** Below this |x| the series is used, above it the continued fraction of erfc. */
const ERF_SPLIT = 2;

/**
 * e^{−x²} without the rounding error of x² (which alone costs ~x²·1e-16): split x = xs + δ with
 * xs = ⌊16x⌋/16, whose square is exact, so x² = xs² + (x − xs)(x + xs) (Cody's trick).
 */
function expMinusSquare(x: number): number {
  const xs = Math.trunc(x * 16) / 16;
  return Math.exp(-xs * xs) * Math.exp(-(x - xs) * (x + xs));
}

/**
 * erf(x) = 2/√π · e^{−x²} · Σ_{n≥0} 2ⁿ x^{2n+1} / (1·3·…·(2n+1)).
 * Every term is positive, so there is no cancellation: relative accuracy < 1e-15 for |x| ≤ 2
 * (at most ~45 terms there).
 */
function erfSeries(x: number): number {
  const x2 = x * x;
  let term = x; // n = 0
  let sum = x;
  for (let n = 0; n < 200; n++) {
    term *= (2 * x2) / (2 * n + 3);
    sum += term;
    if (term < sum * 1e-17) break;
  }
  return TWO_OVER_SQRT_PI * expMinusSquare(x) * sum;
}

/**
 * erfc(x) for x > 0 by its continued fraction (modified Lentz):
 * erfc(x) = e^{−x²}/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + …))))).
 * Converges in < 60 steps for x ≥ 2, where erfc < 4.7e-3, so erf = 1 − erfc is accurate to ~1e-17.
 */
function erfcContinuedFraction(x: number): number {
  const tiny = 1e-300;
  let f = x; // b0
  let c = f;
  let d = 0;
  for (let k = 1; k < 500; k++) {
    const a = k / 2; // partial numerators 1/2, 1, 3/2, 2, …
    d = x + a * d;
    if (d === 0) d = tiny;
    c = x + a / c;
    if (c === 0) c = tiny;
    d = 1 / d;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  return (ONE_OVER_SQRT_PI * expMinusSquare(x)) / f;
}

/** The error function in float64; checked against mpmath on [−7, 7]: |error| < 1e-15. */
export function erf(x: number): number {
  if (Number.isNaN(x)) return Number.NaN;
  const ax = Math.abs(x);
  if (ax > 6) return Math.sign(x); // erfc(6) ≈ 2e-17: below float64 resolution of 1
  const r = ax <= ERF_SPLIT ? erfSeries(ax) : 1 - erfcContinuedFraction(ax);
  return x < 0 ? -r : r;
}

/** Exact (erf) GELU: 0.5 · x · (1 + erf(x / √2)). */
export function gelu(x: number): number {
  return 0.5 * x * (1 + erf(x / Math.SQRT2));
}

// ---------------------------------------------------------------------------------------------
// Pattention

/** Guards the 0/0 of an all-zero score row; far below any non-degenerate ‖A‖₂. */
const NORM_FLOOR = 1e-30;

/**
 * Pattention(x) = GELU(A / ‖A‖₂ · τ) · V with A = x · Kᵀ, the norm over the n parameter tokens.
 * x [rows, dIn], keys [n, dIn], values [n, dOut] → [rows, dOut].
 */
export function pattention(
  x: Float64Array,
  rows: number,
  dIn: number,
  keys: ArrayLike<number>,
  values: ArrayLike<number>,
  n: number,
  dOut: number,
  tau: number,
): Float64Array {
  if (x.length !== rows * dIn) throw new Error(`pattention: x has ${x.length} numbers, not ${rows}·${dIn}`);
  if (keys.length !== n * dIn)
    throw new Error(`pattention: keys have ${keys.length} numbers, not ${n}·${dIn}`);
  if (values.length !== n * dOut) {
    throw new Error(`pattention: values have ${values.length} numbers, not ${n}·${dOut}`);
  }
  const out = new Float64Array(rows * dOut); // [rows, dOut]
  const a = new Float64Array(n); // one row of A: [n]
  for (let r = 0; r < rows; r++) {
    // A[r] = x[r] · Kᵀ
    let sumSq = 0;
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let i = 0; i < dIn; i++) s += x[r * dIn + i]! * keys[j * dIn + i]!;
      a[j] = s;
      sumSq += s * s;
    }
    // Z = A / ‖A‖₂ · τ, then out[r] = GELU(Z) · V
    const scale = tau / Math.max(Math.sqrt(sumSq), NORM_FLOOR);
    for (let j = 0; j < n; j++) {
      const g = gelu(a[j]! * scale);
      if (g === 0) continue;
      for (let o = 0; o < dOut; o++) out[r * dOut + o]! += g * values[j * dOut + o]!;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// LayerNorm

/** LayerNorm over the last axis with the biased variance (as torch). x [rows, d] → [rows, d]. */
export function layerNorm(
  x: Float64Array,
  rows: number,
  d: number,
  eps: number,
  weight?: ArrayLike<number>,
  bias?: ArrayLike<number>,
): Float64Array {
  const out = new Float64Array(rows * d);
  for (let r = 0; r < rows; r++) {
    let mean = 0;
    for (let i = 0; i < d; i++) mean += x[r * d + i]!;
    mean /= d;
    let variance = 0;
    for (let i = 0; i < d; i++) variance += (x[r * d + i]! - mean) ** 2;
    variance /= d;
    const inv = 1 / Math.sqrt(variance + eps);
    for (let i = 0; i < d; i++) {
      let y = (x[r * d + i]! - mean) * inv;
      if (weight) y *= weight[i]!;
      if (bias) y += bias[i]!;
      out[r * d + i] = y;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Rotary position embedding (GPT-NeoX rotate_half)

/**
 * Rotates the first `rotaryDims` dims of every head: x1 = the first half of them, x2 = the
 * second half, angle = pos · base^(−2j/r);
 * out[j] = x1[j]·cos − x2[j]·sin, out[j + r/2] = x2[j]·cos + x1[j]·sin; other dims untouched.
 * x [T, H, Dh] with T = positions.length → [T, H, Dh].
 */
export function rotary(
  x: Float64Array,
  positions: ArrayLike<number>,
  numHeads: number,
  headSize: number,
  rotaryDims: number,
  base: number,
): Float64Array {
  const T = positions.length;
  if (x.length !== T * numHeads * headSize) throw new Error('rotary: x is not [T, H, Dh]');
  if (rotaryDims % 2 !== 0 || rotaryDims > headSize) throw new Error(`rotary: bad rotary dims ${rotaryDims}`);
  const out = Float64Array.from(x);
  const half = rotaryDims / 2;
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < numHeads; h++) {
      const at = (t * numHeads + h) * headSize;
      for (let j = 0; j < half; j++) {
        const invFreq = base ** ((-2 * j) / rotaryDims);
        const angle = positions[t]! * invFreq;
        const cos = Math.cos(angle);
        const sin = Math.sin(angle);
        const x1 = x[at + j]!;
        const x2 = x[at + half + j]!;
        out[at + j] = x1 * cos - x2 * sin;
        out[at + half + j] = x2 * cos + x1 * sin;
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Causal multi-head attention

/** softmax(q·kᵀ/√Dh) · v over positions s ≤ t, per head. q, k, v [T, H, Dh] → [T, H·Dh]. */
export function causalAttention(
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  T: number,
  numHeads: number,
  headSize: number,
): Float64Array {
  const out = new Float64Array(T * numHeads * headSize);
  const scores = new Float64Array(T); // [T] for one query
  const scale = 1 / Math.sqrt(headSize);
  for (let h = 0; h < numHeads; h++) {
    for (let t = 0; t < T; t++) {
      const qAt = (t * numHeads + h) * headSize;
      let max = -Infinity;
      for (let s = 0; s <= t; s++) {
        const kAt = (s * numHeads + h) * headSize;
        let dot = 0;
        for (let i = 0; i < headSize; i++) dot += q[qAt + i]! * k[kAt + i]!;
        scores[s] = dot * scale;
        if (scores[s]! > max) max = scores[s]!;
      }
      let denom = 0;
      for (let s = 0; s <= t; s++) {
        scores[s] = Math.exp(scores[s]! - max);
        denom += scores[s]!;
      }
      for (let s = 0; s <= t; s++) {
        const p = scores[s]! / denom;
        const vAt = (s * numHeads + h) * headSize;
        for (let i = 0; i < headSize; i++) out[qAt + i]! += p * v[vAt + i]!;
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Decoder block and model

type Params = ReadonlyMap<string, ArrayLike<number>>;

function param(params: Params, name: string, length: number): ArrayLike<number> {
  const p = params.get(name);
  if (p === undefined) throw new Error(`reference: missing parameter ${name}`);
  if (p.length !== length) throw new Error(`reference: ${name} has ${p.length} numbers, expected ${length}`);
  return p;
}

/** One Pattention site `prefix` (keys/values [n, d]) applied to x [T, d] → [T, d]. */
function pattentionSite(
  params: Params,
  prefix: string,
  kind: PattentionConfig,
  x: Float64Array,
  T: number,
  d: number,
) {
  const n = kind.tokens;
  const keys = param(params, `${prefix}.keys`, n * d);
  const values = param(params, `${prefix}.values`, n * d);
  return pattention(x, T, d, keys, values, n, d, kind.tau);
}

/**
 * Pre-norm, sequential residual:
 *   x = x + Pattention_o(causal_attention(rotary(q), rotary(k), v)),  q,k,v = Pattention_{q,k,v}(LN(x))
 *   x = x + Pattention_ffn(LN(x))
 * x [T, d] → [T, d] (a new array).
 */
export function block(
  x: Float64Array,
  T: number,
  config: TokenFormerConfig,
  params: Params,
  layer: number,
  positions: ArrayLike<number>,
): Float64Array {
  const d = config.hidden_size;
  const H = config.num_heads;
  const Dh = d / H;
  const r = Math.floor(Dh * config.rotary_pct);
  const eps = config.layernorm_eps;
  const at = `layers.${layer}`;

  // attention
  const h = layerNorm(x, T, d, eps); // [T, d]
  const rope = (y: Float64Array) => rotary(y, positions, H, Dh, r, config.rotary_base);
  const q = rope(pattentionSite(params, `${at}.attn.q`, config.qkv, h, T, d)); // [T, H, Dh]
  const k = rope(pattentionSite(params, `${at}.attn.k`, config.qkv, h, T, d)); // [T, H, Dh]
  const v = pattentionSite(params, `${at}.attn.v`, config.qkv, h, T, d); // [T, H, Dh]
  const attn = causalAttention(q, k, v, T, H, Dh); // [T, d]
  const o = pattentionSite(params, `${at}.attn.o`, config.proj, attn, T, d); // [T, d]
  const x1 = new Float64Array(T * d);
  for (let i = 0; i < T * d; i++) x1[i] = x[i]! + o[i]!;

  // FFN: one Pattention hidden → hidden
  const f = pattentionSite(params, `${at}.ffn`, config.ffn, layerNorm(x1, T, d, eps), T, d); // [T, d]
  const x2 = new Float64Array(T * d);
  for (let i = 0; i < T * d; i++) x2[i] = x1[i]! + f[i]!;
  return x2;
}

/**
 * Full-sequence logits, [B, T, V] flattened. Every batch row is computed on its own, positions
 * 0..T−1: embedding → blocks → final LayerNorm (with weight and bias) → x · Embᵀ (tied).
 */
export function referenceLogits(config: TokenFormerConfig, params: Params, ids: number[][]): Float64Array {
  const B = ids.length;
  const T = ids[0]?.length ?? 0;
  const d = config.hidden_size;
  const V = config.vocab_size;
  const emb = param(params, EMBEDDING, V * d); // [V, d]
  const normW = param(params, FINAL_NORM_WEIGHT, d);
  const normB = param(params, FINAL_NORM_BIAS, d);
  const positions = Array.from({ length: T }, (_, t) => t);
  const logits = new Float64Array(B * T * V); // [B, T, V]

  for (let b = 0; b < B; b++) {
    const row = ids[b]!;
    if (row.length !== T) throw new Error(`referenceLogits: row ${b} has ${row.length} ids, row 0 has ${T}`);
    let x: Float64Array = new Float64Array(T * d); // [T, d]
    for (let t = 0; t < T; t++) {
      const id = row[t]!;
      if (!Number.isInteger(id) || id < 0 || id >= V) {
        throw new Error(`referenceLogits: id ${id} out of range [0, ${V})`);
      }
      for (let i = 0; i < d; i++) x[t * d + i] = emb[id * d + i]!;
    }
    for (let l = 0; l < config.num_layers; l++) x = block(x, T, config, params, l, positions);
    const y = layerNorm(x, T, d, config.layernorm_eps, normW, normB); // [T, d]
    for (let t = 0; t < T; t++) {
      for (let v = 0; v < V; v++) {
        let s = 0;
        for (let i = 0; i < d; i++) s += y[t * d + i]! * emb[v * d + i]!;
        logits[(b * T + t) * V + v] = s;
      }
    }
  }
  return logits;
}

// ---------------------------------------------------------------------------------------------
// Deterministic random parameters

/** Standard normal samples by Box–Muller over mulberry32. */
function normalSampler(seed: number): () => number {
  const uniform = mulberry32(seed);
  return () => {
    const u1 = 1 - uniform(); // (0, 1]: log is finite
    const u2 = uniform();
    return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  };
}

/**
 * Parameters with the official init scales: keys and embeddings N(0, 0.02²), values with
 * std 2/(L·√d); the final norm gets weight 1 + N(0, 0.1²) and bias N(0, 0.1²) so both matter.
 * Same (config, seed) → same numbers.
 */
export function randomParams(config: TokenFormerConfig, seed: number): Map<string, Float64Array> {
  const normal = normalSampler(seed);
  const valueStd = 2 / (config.num_layers * Math.sqrt(config.hidden_size));
  const params = new Map<string, Float64Array>();
  for (const spec of paramSpecs(config)) {
    const size = spec.shape.reduce((a, b) => a * b, 1);
    const p = new Float64Array(size);
    let mean = 0;
    let std = 0.02; // keys, embeddings
    if (spec.name.endsWith('.values')) std = valueStd;
    if (spec.name === FINAL_NORM_WEIGHT) [mean, std] = [1, 0.1];
    if (spec.name === FINAL_NORM_BIAS) std = 0.1;
    for (let i = 0; i < size; i++) p[i] = mean + std * normal();
    params.set(spec.name, p);
  }
  return params;
}

import type { GraphBuilder } from '../graph/builder.ts';
import { defineFunction } from '../graph/functions.ts';
import { tensor, type Value } from '../graph/types.ts';
import { headDim, rotaryDims, type TokenFormerConfig } from './config.ts';
import {
  attnSite,
  EMBEDDING,
  FINAL_NORM_BIAS,
  FINAL_NORM_WEIGHT,
  ffnSite,
  type PattentionSite,
} from './params.ts';

/**
 * The one TokenFormer definition (arXiv 2410.23168), read top-down like the paper:
 * Pattention → attention → FFN → block → model. Every graph the project emits (the exported
 * full-sequence model, the KV-cache decoder, the training step) is built from these functions;
 * they differ only in how attention reaches past keys/values (`Attend`) and whether Pattention
 * is a custom-op node or inlined primitives (for autodiff).
 */

export const PATTENTION_DOMAIN = 'ai.tokenformer';

/**
 * Guard for ‖A‖₂ = 0 (the official code has no epsilon, so a zero row gives 0/0). The smallest
 * normal float32: any non-degenerate row's norm is larger, so no real result changes.
 */
const NORM_FLOOR = 1.1754943508222875e-38;

/** Pattention body: GELU(A/‖A‖₂·τ)·V with A = x·Kᵀ; GELU is the exact erf form. */
function pattentionBody(g: GraphBuilder, [x, keys, values]: readonly Value[], tau: Value): Value {
  const a = g.matmul(x!, g.transpose(keys!, [1, 0])); // [B, T, n]
  // In float16 the sum of n squared scores overflows 65504 long before the norm itself would
  // (n = 3072 scores of 5 already do), so the normalisation and GELU run in float32 (|Z| ≤ τ
  // after it); only the two matmuls stay in float16.
  const a32 = a.dtype === 'float32' ? a : g.cast(a, 'float32');
  const norm = g.max(g.reduce('ReduceL2', a32, [-1], true), g.scalar(NORM_FLOOR)); // [B, T, 1]
  const z = g.mul(g.div(a32, norm), tau); // [B, T, n]
  const gelu = g.mul(g.mul(z, g.scalar(0.5)), g.add(g.scalar(1), g.erf(g.mul(z, g.scalar(Math.SQRT1_2)))));
  return g.matmul(a.dtype === 'float32' ? gelu : g.cast(gelu, a.dtype), values!); // [B, T, d_out]
}

/** Activation and weight dtype of a serving graph; logits are float32 either way. */
export type GraphDType = 'float32' | 'float16';

function pattentionFunction(dtype: GraphDType) {
  return defineFunction({
    domain: PATTENTION_DOMAIN,
    name: 'Pattention',
    docString:
      'TokenFormer token-parameter attention: GELU(Z)·V, Z = A/‖A‖₂·tau, A = x·Kᵀ (L2 over the n parameter tokens).',
    inputs: [
      { name: 'x', dtype, shape: ['batch', 'seq', 'd_in'] },
      { name: 'keys', dtype, shape: ['n', 'd_in'] },
      { name: 'values', dtype, shape: ['n', 'd_out'] },
    ],
    attributes: ['tau'],
    body: (g, inputs, attr) => [pattentionBody(g, inputs, attr('tau'))],
  });
}

/** `ai.tokenformer::Pattention(x, keys, values; tau)`: one node per layer in exported graphs. */
export const PATTENTION = pattentionFunction('float32');
/** The same function over float16 inputs (a graph uses one of the two, never both). */
export const PATTENTION_F16 = pattentionFunction('float16');

/** Where the parameters come from: initializers (export) or graph inputs (training). */
export type Weights = (name: string) => Value;

export interface BuildOptions {
  /** `function`: Pattention is one custom-op node; `inline`: primitives (for gradients). */
  pattention: 'function' | 'inline';
  /** Fused kernels a serving graph substitutes for the plain-op forms (the same math). */
  kernels?: Kernels;
  /** Weights and activations (default float32); logits stay float32. */
  dtype?: GraphDType;
}

/**
 * Fused forms of the model's pieces, each computing what the plain-op code below computes. The
 * serving graphs supply them (src/export/kernels.ts); the exported model.onnx and the training
 * graph use the readable forms.
 */
export interface Kernels {
  /** Pattention at `site`: x [B, T, d_in] → [B, T, d_out]. */
  pattention(site: PattentionSite, x: Value): Value;
  /** Rotary at the graph's positions on x [B, T, H·Dh] (heads not yet split). */
  rotary(x: Value): Value;
  /** LayerNorm without weight or bias. */
  norm(x: Value): Value;
  /** [x + delta, LayerNorm(x + delta)] (the residual add and the next block's norm). */
  addNorm(x: Value, delta: Value): [Value, Value];
  /** The tied unembedding: x [..., d] → logits [..., V]. */
  unembed(x: Value): Value;
}

/** The graph's activation dtype. */
export function dtypeOf(c: Ctx): GraphDType {
  return c.opts.dtype ?? 'float32';
}

/** The most negative finite value of a dtype: masked scores (finite, so a fully masked row is uniform, not NaN). */
export function lowest(dtype: GraphDType): number {
  return dtype === 'float16' ? -65504 : -3.4028234663852886e38;
}

/**
 * Attention over the sequence for one layer: q, k, v are [B, T, H, Dh] after rotary; returns
 * [B, T, H, Dh]. The full-sequence graph attends causally within the input; the decoder graph
 * also attends to the cached past.
 */
export type Attend = (layer: number, q: Value, k: Value, v: Value) => Value;

export interface Ctx {
  g: GraphBuilder;
  cfg: TokenFormerConfig;
  w: Weights;
  opts: BuildOptions;
}

export function pattention(c: Ctx, site: PattentionSite, x: Value): Value {
  if (c.opts.kernels) return c.opts.kernels.pattention(site, x);
  const keys = c.w(`${site.prefix}.keys`);
  const values = c.w(`${site.prefix}.values`);
  const tau = c.cfg[site.kind].tau;
  const fn = dtypeOf(c) === 'float16' ? PATTENTION_F16 : PATTENTION;
  return c.opts.pattention === 'function'
    ? c.g.call(fn, [x, keys, values], { tau })[0]!
    : c.g.inline(fn, [x, keys, values], { tau })[0]!;
}

/** LayerNorm without weight or bias (the blocks' norms). */
function plainNorm(c: Ctx, x: Value): Value {
  if (c.opts.kernels) return c.opts.kernels.norm(x);
  const d = c.cfg.hidden_size;
  const ones =
    dtypeOf(c) === 'float16'
      ? c.g.floats(new Array<number>(d).fill(1), [d], 'float16')
      : c.g.constant(tensor('float32', [d], new Float32Array(d).fill(1)), 'ln_ones');
  return c.g.layerNorm(x, ones, undefined, c.cfg.layernorm_eps);
}

export interface Rotary {
  cos: Value;
  sin: Value;
}

/**
 * Rotary angles for absolute positions [B|1, T] → cos, sin of shape [B|1, T, 1, r/2]
 * (broadcast over heads). inv_freq[j] = base^(−2j/r), GPT-NeoX.
 */
export function rotaryAngles(c: Ctx, positions: Value): Rotary | undefined {
  const r = rotaryDims(c.cfg);
  if (r === 0) return undefined;
  const invFreq = Array.from({ length: r / 2 }, (_, j) => c.cfg.rotary_base ** ((-2 * j) / r));
  const pos = c.g.unsqueeze(c.g.cast(positions, 'float32'), [-1, -2]); // [B, T, 1, 1]
  const angles = c.g.mul(pos, c.g.floats(invFreq)); // [B, T, 1, r/2]
  // Angles in float32 (positions reach thousands); only cos/sin take the graph's dtype.
  const as = (v: Value) => (dtypeOf(c) === 'float32' ? v : c.g.cast(v, dtypeOf(c)));
  return { cos: as(c.g.cos(angles)), sin: as(c.g.sin(angles)) };
}

/** GPT-NeoX rotate_half on the first r dims of each head of x [B, T, H, Dh]. */
function applyRotary(c: Ctx, x: Value, rot: Rotary | undefined): Value {
  if (!rot) return x;
  const r = rotaryDims(c.cfg);
  const dh = headDim(c.cfg);
  const g = c.g;
  const x1 = g.slice(x, -1, 0, r / 2); // [B, T, H, r/2]
  const x2 = g.slice(x, -1, r / 2, r);
  const out1 = g.sub(g.mul(x1, rot.cos), g.mul(x2, rot.sin));
  const out2 = g.add(g.mul(x2, rot.cos), g.mul(x1, rot.sin));
  return g.concat(r === dh ? [out1, out2] : [out1, out2, g.slice(x, -1, r, dh)], -1); // [B, T, H, Dh]
}

/** Causal scaled-dot-product attention within the input sequence (no cache). */
export function causalAttend(c: Ctx): Attend {
  const g = c.g;
  let mask: Value | undefined; // [T, T] bool, shared by all layers
  return (_layer, q, k, v) => {
    if (!mask) {
      const pos = g.range(g.dimSize(q, 1), q.shape[1]!); // [T]
      mask = g.lessOrEqual(g.unsqueeze(pos, [0]), g.unsqueeze(pos, [1])); // [T, T]: key ≤ query
    }
    const qh = g.transpose(q, [0, 2, 1, 3]); // [B, H, T, Dh]
    const kt = g.transpose(k, [0, 2, 3, 1]); // [B, H, Dh, T]
    const vh = g.transpose(v, [0, 2, 1, 3]); // [B, H, T, Dh]
    const scores = g.mul(g.matmul(qh, kt), g.scalarLike(1 / Math.sqrt(headDim(c.cfg)), qh)); // [B, H, T, T]
    const masked = g.where(mask, scores, g.scalarLike(lowest(dtypeOf(c)), scores));
    const out = g.matmul(g.softmax(masked, -1), vh); // [B, H, T, Dh]
    return g.transpose(out, [0, 2, 1, 3]); // [B, T, H, Dh]
  };
}

/** Pattention_o(attention(rotary(q), rotary(k), v)) on h = LN(x): the attention residual branch. */
function attentionBlock(c: Ctx, layer: number, h: Value, rot: Rotary | undefined, attend: Attend): Value {
  const { g, cfg } = c;
  const split = (x: Value) => g.reshape(x, [0, 0, cfg.num_heads, headDim(cfg)]); // [B, T, H, Dh]
  const rotated = (site: PattentionSite) => {
    const x = pattention(c, site, h); // [B, T, d]
    return c.opts.kernels ? split(c.opts.kernels.rotary(x)) : applyRotary(c, split(x), rot);
  };
  const q = rotated(attnSite(layer, 'q')); // [B, T, H, Dh]
  const k = rotated(attnSite(layer, 'k')); // [B, T, H, Dh]
  const v = split(pattention(c, attnSite(layer, 'v'), h)); // [B, T, H, Dh]
  const merged = g.reshape(attend(layer, q, k, v), [0, 0, cfg.hidden_size]); // [B, T, d]
  return pattention(c, attnSite(layer, 'o'), merged); // [B, T, d]
}

/** [x + delta, LN(x + delta)]: a residual add and the norm that reads its sum. */
function addNorm(c: Ctx, x: Value, delta: Value): [Value, Value] {
  if (c.opts.kernels) return c.opts.kernels.addNorm(x, delta);
  const sum = c.g.add(x, delta);
  return [sum, plainNorm(c, sum)];
}

/**
 * Pre-norm block with sequential residuals, as in the official code:
 *   x1 = x + attn(LN(x)); x2 = x1 + ffn(LN(x1)).
 * `h` is LN(x), computed by the caller together with x's residual add; returns x2 and, unless
 * `last`, LN(x2) for the next block.
 */
export function block(
  c: Ctx,
  layer: number,
  x: Value,
  h: Value,
  rot: Rotary | undefined,
  attend: Attend,
  last: boolean,
): [Value, Value | undefined] {
  const [x1, h1] = addNorm(c, x, attentionBlock(c, layer, h, rot, attend)); // [B, T, d]
  const f = pattention(c, ffnSite(layer), h1); // [B, T, d]
  return last ? [c.g.add(x1, f), undefined] : addNorm(c, x1, f);
}

/**
 * The model: ids [B, T] (int64), positions [B|1, T] (int64, absolute) → logits [B, T, V].
 * Tied embeddings, no position embeddings besides rotary.
 */
export function tokenformer(
  c: Ctx,
  ids: Value,
  positions: Value,
  attend: Attend,
  opts: { lastPositionOnly?: boolean; logitPositions?: Value } = {},
): Value {
  const { g, w, cfg } = c;
  const embed = w(EMBEDDING); // [V, d]
  let x = g.gather(embed, ids); // [B, T, d]
  const rot = c.opts.kernels ? undefined : rotaryAngles(c, positions);
  let h: Value | undefined = plainNorm(c, x);
  for (let i = 0; i < cfg.num_layers; i++) {
    [x, h] = block(c, i, x, h!, rot, attend, i === cfg.num_layers - 1);
  }
  // Decoding needs only the last position's logits: pick it before the [d, V] head.
  if (opts.lastPositionOnly) x = g.gather(x, g.scalar(-1, 'int64'), 1); // [B, d]
  // Or a few chosen positions per row (speculative verification): indices [B, M] into T.
  if (opts.logitPositions) {
    const idx = g.expand(g.unsqueeze(opts.logitPositions, [2]), [1, 1, cfg.hidden_size]); // [B, M, d]
    x = g.gatherElements(x, idx, 1); // [B, M, d]
  }
  const normed = g.layerNorm(x, w(FINAL_NORM_WEIGHT), w(FINAL_NORM_BIAS), cfg.layernorm_eps); // [B, T|M, d] or [B, d]
  const logits = c.opts.kernels
    ? c.opts.kernels.unembed(normed)
    : g.matmul(normed, g.transpose(embed, [1, 0])); // [B, T|M, V] or [B, V]
  return logits.dtype === 'float32' ? logits : g.cast(logits, 'float32'); // logits are float32 (DESIGN §5)
}

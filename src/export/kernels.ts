import type { GraphBuilder } from '../graph/builder.ts';
import { attr, tensor, type Value } from '../graph/types.ts';
import { headDim, rotaryDims, type TokenFormerConfig } from '../model/config.ts';
import { EMBEDDING, FINAL_NORM_BIAS, FINAL_NORM_WEIGHT, type PattentionSite } from '../model/params.ts';
import type { Ctx, GraphDType, Kernels } from '../model/tokenformer.ts';
import { f32ToF16 } from '../util/dtype.ts';
import { fail } from '../util/errors.ts';
import { type Quantization, quantizeRows } from './quantize.ts';

/**
 * The serving graphs' kernels: the model's pieces as onnxruntime's fused CPU/CUDA kernels, so
 * a decode step runs a few fat nodes instead of hundreds of small ones (onnxruntime's own
 * optimizer fuses none of these patterns in our graphs). Each computes what the readable form
 * in src/model/tokenformer.ts computes:
 *   Pattention  MatMul(x, Kᵀ) → SimplifiedLayerNormalization → com.microsoft.Gelu → MatMul(·, V)
 *               A/‖A‖₂·τ = RMSNorm(A)·τ/√n (RMS = ‖A‖₂/√n), so τ/√n is the norm's scale; its
 *               epsilon plays the guard of the zero row. com.microsoft.Gelu is the exact erf form.
 *   rotary      com.microsoft.RotaryEmbedding (rotate_half, partial dims) over cos/sin tables of
 *               every position up to max_seq_len, computed in float64.
 *   residual    com.microsoft.SkipLayerNormalization: the add and the next norm in one node.
 * With `quantization`, Pattention's key and value matrices and the unembedding are
 * com.microsoft.MatMulNBits (weight-only, block-wise, src/export/quantize.ts).
 * The query's values carry attention's 1/√Dh, so the decoder's attention needs no Mul.
 * In float16 graphs the weights, rotary tables and activations are float16, but Pattention's
 * norm and GELU run in float32 between two Casts: the squares of n scores overflow 65504 long
 * before the norm would.
 */

export const MS_DOMAIN = 'com.microsoft';

/**
 * The RMS norm's epsilon on mean(A²): a zero row gives 0·(1/√ε) = 0, not 0/0. Any row whose
 * float32 squares do not all underflow has mean(A²) far above it, so no real result changes.
 */
const RMS_EPS = 1e-37;

/** The build context of a serving graph (weights as initializers, fused kernels). */
export type { Quantization };

export function servingContext(
  g: GraphBuilder,
  cfg: TokenFormerConfig,
  params: ReadonlyMap<string, Float32Array>,
  positions: Value, // int64 [B, T]
  quantization?: Quantization,
  dtype: GraphDType = 'float32',
): Ctx {
  if (quantization && dtype !== 'float32')
    fail('TF_ERR_BAD_ARGS', `--quantize works on float32 graphs only, not --dtype ${dtype}`);
  const param = (name: string): Float32Array =>
    params.get(name) ?? fail('TF_ERR_BAD_CHECKPOINT', `parameter ${name} is missing`);
  const d = cfg.hidden_size;
  const h = cfg.num_heads;
  const dh = headDim(cfg);
  const floats = (name: string, shape: number[], data: Float32Array) =>
    g.initializer(
      name,
      dtype === 'float16' ? tensor('float16', shape, f32ToF16(data)) : tensor('float32', shape, data),
    );
  const floats32 = (name: string, shape: number[], data: Float32Array) =>
    g.initializer(name, tensor('float32', shape, data));
  const ones = floats('serving.ones', [d], new Float32Array(d).fill(1));

  /** y = x · Bᵀ for B [n, k] read through `at` (row, col): MatMul or MatMulNBits. */
  const linear = (
    name: string,
    x: Value,
    n: number,
    k: number,
    at: (row: number, col: number) => number,
  ): Value => {
    const shape = [...x.shape.slice(0, -1), n];
    if (!quantization) {
      const bt = new Float32Array(k * n); // [k, n]
      for (let r = 0; r < n; r++) for (let c = 0; c < k; c++) bt[c * n + r] = at(r, c);
      return g.matmul(x, floats(name, [k, n], bt));
    }
    const { bits, blockSize, accuracyLevel } = quantization;
    const q = quantizeRows(n, k, at, bits, blockSize);
    const b = g.initializer(
      `${name}.q${bits}`,
      tensor('uint8', [n, q.blocks, (blockSize * bits) / 8], q.data),
    );
    const scales = floats(`${name}.scales`, [n, q.blocks], q.scales);
    const attrs = {
      K: attr.int(k),
      N: attr.int(n),
      bits: attr.int(bits),
      block_size: attr.int(blockSize),
      accuracy_level: attr.int(accuracyLevel),
    };
    return g.emitMulti('MatMulNBits', MS_DOMAIN, [x, b, scales], attrs, [{ dtype: 'float32', shape }])[0]!;
  };

  const pattention = (site: PattentionSite, x: Value): Value => {
    const n = cfg[site.kind].tokens;
    const tau = cfg[site.kind].tau;
    const keys = param(`${site.prefix}.keys`); // [n, d_in]
    const values = param(`${site.prefix}.values`); // [n, d_out]
    const dIn = keys.length / n;
    const dOut = values.length / n;
    // The query carries attention's 1/√Dh (exact when Dh is a power of four).
    const vScale = site.prefix.endsWith('.attn.q') ? 1 / Math.sqrt(dh) : 1;
    const a = linear(`${site.prefix}.keys`, x, n, dIn, (r, c) => keys[r * dIn + c]!); // [B, T, n]
    const norm = floats32(`${site.prefix}.norm_scale`, [n], new Float32Array(n).fill(tau / Math.sqrt(n)));
    const a32 = a.dtype === 'float32' ? a : g.cast(a, 'float32');
    const z = g.emitMulti(
      'SimplifiedLayerNormalization',
      '',
      [a32, norm],
      { axis: attr.int(-1), epsilon: attr.float(RMS_EPS) },
      [{ dtype: 'float32', shape: a.shape }],
    )[0]!;
    const gelu32 = g.emitMulti('Gelu', MS_DOMAIN, [z], {}, [{ dtype: 'float32', shape: a.shape }])[0]!;
    const gelu = dtype === 'float32' ? gelu32 : g.cast(gelu32, dtype);
    // y = gelu · V = gelu · (Vᵀ)ᵀ: B is Vᵀ [d_out, n].
    return linear(`${site.prefix}.values`, gelu, dOut, n, (r, c) => values[c * dOut + r]! * vScale);
  };

  const r = rotaryDims(cfg);
  let tables: { cos: Value; sin: Value } | undefined;
  const rotary = (x: Value): Value => {
    if (r === 0) return x;
    if (!tables) {
      const half = r / 2;
      const cos = new Float32Array(cfg.max_seq_len * half);
      const sin = new Float32Array(cfg.max_seq_len * half);
      for (let p = 0; p < cfg.max_seq_len; p++) {
        for (let j = 0; j < half; j++) {
          const angle = p * cfg.rotary_base ** ((-2 * j) / r);
          cos[p * half + j] = Math.cos(angle);
          sin[p * half + j] = Math.sin(angle);
        }
      }
      tables = {
        cos: floats('serving.rotary_cos', [cfg.max_seq_len, half], cos),
        sin: floats('serving.rotary_sin', [cfg.max_seq_len, half], sin),
      };
    }
    const attrs = {
      interleaved: attr.int(0),
      num_heads: attr.int(h),
      rotary_embedding_dim: attr.int(r),
    };
    return g.emitMulti('RotaryEmbedding', MS_DOMAIN, [x, positions, tables.cos, tables.sin], attrs, [
      { dtype, shape: x.shape },
    ])[0]!;
  };

  const norm = (x: Value): Value => g.layerNorm(x, ones, undefined, cfg.layernorm_eps);

  const addNorm = (x: Value, delta: Value): [Value, Value] => {
    const [out, , , sum] = g.emitMulti(
      'SkipLayerNormalization',
      MS_DOMAIN,
      [x, delta, ones],
      { epsilon: attr.float(cfg.layernorm_eps) },
      [{ dtype, shape: x.shape }, null, null, { dtype, shape: x.shape }],
    );
    return [sum!, out!];
  };

  const embed = param(EMBEDDING); // [V, d]
  const unembed = (x: Value): Value =>
    linear('serving.unembed', x, cfg.vocab_size, d, (r, c) => embed[r * d + c]!);

  const weights = new Map<string, Value>([
    [EMBEDDING, floats(EMBEDDING, [cfg.vocab_size, d], embed)],
    [FINAL_NORM_WEIGHT, floats(FINAL_NORM_WEIGHT, [d], param(FINAL_NORM_WEIGHT))],
    [FINAL_NORM_BIAS, floats(FINAL_NORM_BIAS, [d], param(FINAL_NORM_BIAS))],
  ]);
  const kernels: Kernels = { pattention, rotary, norm, addNorm, unembed };
  return {
    g,
    cfg,
    w: (name) => weights.get(name) ?? fail('TF_ERR_GRAPH', `no weight named ${name} in a serving graph`),
    opts: { pattention: 'function', kernels, dtype },
  };
}

import { GraphBuilder } from '../graph/builder.ts';
import { attr, type Value } from '../graph/types.ts';
import { headDim, type TokenFormerConfig } from '../model/config.ts';
import {
  type Attend,
  type Ctx,
  dtypeOf,
  type GraphDType,
  lowest,
  tokenformer,
} from '../model/tokenformer.ts';
import { type Quantization, servingContext } from './kernels.ts';

/**
 * The KV-cache decoder graph (`decoder.onnx`): the same `tokenformer()` as the full-sequence
 * export, with an `Attend` that also reaches a cache the engine owns.
 *
 * Contract (B = batch, N = new tokens per row, the same for every row, N ≥ 1; H heads, Dh head
 * size; `cap` = cache capacity in positions, ≥ every row's past length):
 *   inputs   input_ids      int64   [B, N]
 *            positions      int64   [B, N]          absolute positions (rotary)
 *            past_lengths   int64   [B]             valid cached positions per row
 *            past_key.{i}   DT      [B, H, Dh, cap] keys stored transposed, so q·K needs no
 *                                                   Transpose of the cache
 *            past_value.{i} DT      [B, H, cap, Dh]
 *            logit_positions int64  [B, M]          (the `logitPositions` variant only) which new
 *                                                   positions of each row get logits, M ≥ 1
 *   outputs  logits           float32 [B, V]         the LAST new position of each row only
 *                                    [B, M, V]      (variant) the positions logit_positions names
 *            present_key.{i}   DT      [B, H, N, Dh]  the NEW positions' keys only
 *            present_value.{i} DT      [B, H, N, Dh]  the NEW positions' values only
 * DT is the export's dtype (float32, or float16 with `npm run export -- --dtype float16`).
 * Cache positions ≥ past_lengths[b] are masked out (they may hold stale, finite data).
 *
 * Why (DESIGN.md §3): onnxruntime-node passes inputs zero-copy (a subarray view of a big buffer
 * costs the same as 4 KiB) but copies every fetched output into a new ArrayBuffer (64 MiB ≈ 55 ms),
 * so a cache that is a graph output is copied out at every step. Measured at 6 layers, hidden
 * 512, context 1024, batch 1 / 16: plain ops over a host-owned cache with only the new K/V as
 * outputs 1.5 / 24 ms per step, GroupQueryAttention with shared past/present 6.4 / 305 ms,
 * Attention-23 past → present 10.8 / 307 ms. Hence: the cache is input only, and attention never
 * concatenates it (a Concat would copy it too). Scores are computed against the past and the new
 * keys separately, the small score tensors are concatenated for one softmax, and the
 * probabilities are split again: out = p_past·V_past + p_new·V_new. Logits are fetched for the
 * last position only, so a prefill chunk copies out V floats per row instead of N·V.
 */

export const DECODER_INPUT_IDS = 'input_ids';
export const DECODER_POSITIONS = 'positions';
export const DECODER_PAST_LENGTHS = 'past_lengths';
export const DECODER_LOGITS = 'logits';
export const DECODER_LOGIT_POSITIONS = 'logit_positions';
export const pastKeyName = (layer: number) => `past_key.${layer}`;
export const pastValueName = (layer: number) => `past_value.${layer}`;
export const presentKeyName = (layer: number) => `present_key.${layer}`;
export const presentValueName = (layer: number) => `present_value.${layer}`;

interface CacheInputs {
  pastLengths: Value; // [B]
  keys: Value[]; // per layer [B, H, Dh, cap]
  values: Value[]; // per layer [B, H, cap, Dh]
}

/**
 * Attention over [cached past ‖ new positions] without concatenating the cache. Every layer's
 * present K/V ([B, H, N, Dh]) is pushed to `presents` for the caller to mark as outputs.
 */
function cachedAttend(c: Ctx, cache: CacheInputs, presents: { key: Value; value: Value }[]): Attend {
  const g = c.g;
  let masks: { past: Value; causal: Value; sizes: Value } | undefined; // shared by all layers
  return (layer, q, k, v) => {
    const pastK = cache.keys[layer]!; // [B, H, Dh, cap]
    const pastV = cache.values[layer]!; // [B, H, cap, Dh]
    if (!masks) {
      const capLen = g.dimSize(pastK, 3);
      const newLen = g.dimSize(q, 1);
      const slots = g.range(capLen, pastK.shape[3]!); // [cap]
      const lens = g.unsqueeze(cache.pastLengths, [1, 2, 3]); // [B, 1, 1, 1]
      const newPos = g.range(newLen, q.shape[1]!); // [N]
      masks = {
        past: g.lessOrEqual(lens, slots), // [B, 1, 1, cap]: true where the slot is not filled
        causal: g.lessOrEqual(g.unsqueeze(newPos, [0]), g.unsqueeze(newPos, [1])), // [N, N]: key ≤ query
        sizes: g.concat([g.unsqueeze(capLen, [0]), g.unsqueeze(newLen, [0])], 0), // [2] = [cap, N]
      };
    }
    // q arrives scaled by 1/√Dh (servingContext folds it into the query's values).
    const qh = g.transpose(q, [0, 2, 1, 3]); // [B, H, N, Dh]
    const kt = g.transpose(k, [0, 2, 3, 1]); // [B, H, Dh, N]
    // The presents are produced under their output names: an Identity would be one more node.
    const kh = g.emit(
      'Transpose',
      [k],
      { perm: attr.ints([0, 2, 1, 3]) },
      k.dtype,
      qh.shape,
      presentKeyName(layer),
    );
    const vh = g.emit(
      'Transpose',
      [v],
      { perm: attr.ints([0, 2, 1, 3]) },
      v.dtype,
      qh.shape,
      presentValueName(layer),
    );
    presents.push({ key: kh, value: vh });
    // Masked scores: the dtype's lowest finite value, not −inf, so a row with every score masked
    // gives a uniform softmax instead of NaN; `Where` replaces rather than adds: no overflow.
    const masked = g.scalarLike(lowest(dtypeOf(c)), q);
    const sPast = g.where(masks.past, masked, g.matmul(qh, pastK)); // [B, H, N, cap]
    const sNew = g.where(masks.causal, g.matmul(qh, kt), masked); // [B, H, N, N]
    const p = g.softmax(g.concat([sPast, sNew], -1), -1); // [B, H, N, cap+N]
    const [pPast, pNew] = g.split(p, -1, masks.sizes, [pastK.shape[3]!, q.shape[1]!]);
    const out = g.add(g.matmul(pPast!, pastV), g.matmul(pNew!, vh)); // [B, H, N, Dh]
    return g.transpose(out, [0, 2, 1, 3]); // [B, N, H, Dh]
  };
}

export interface DecoderGraphOptions {
  /**
   * Adds the `logit_positions` input: logits for chosen new positions of each row rather than
   * the last. Speculative decoding verifies k drafted tokens in one run and needs the logits at
   * each of them; rows of a batch carry different k (padded to one N), so the positions are per
   * row. A prefill or a plain decode names one position per row and copies out no more than
   * before.
   */
  logitPositions?: boolean;
  /** Weights, activations and the KV cache (default float32); logits stay float32. */
  dtype?: GraphDType;
}

/** Builds `decoder.onnx` for a config and its weights (as initializers). */
export function buildDecoderGraph(
  cfg: TokenFormerConfig,
  params: ReadonlyMap<string, Float32Array>,
  quantization?: Quantization,
  opts: DecoderGraphOptions = {},
): GraphBuilder {
  const g = new GraphBuilder();
  const h = cfg.num_heads;
  const dtype = opts.dtype ?? 'float32';
  const dh = headDim(cfg);
  const ids = g.input(DECODER_INPUT_IDS, 'int64', ['batch', 'new']);
  const positions = g.input(DECODER_POSITIONS, 'int64', ['batch', 'new']);
  const cache: CacheInputs = {
    pastLengths: g.input(DECODER_PAST_LENGTHS, 'int64', ['batch']),
    keys: [],
    values: [],
  };
  for (let i = 0; i < cfg.num_layers; i++) {
    cache.keys.push(g.input(pastKeyName(i), dtype, ['batch', h, dh, 'cap']));
    cache.values.push(g.input(pastValueName(i), dtype, ['batch', h, 'cap', dh]));
  }
  const logitPositions = opts.logitPositions
    ? g.input(DECODER_LOGIT_POSITIONS, 'int64', ['batch', 'logits'])
    : undefined;
  const c = servingContext(g, cfg, params, positions, quantization, dtype);
  const presents: { key: Value; value: Value }[] = [];
  const logits = tokenformer(
    c,
    ids,
    positions,
    cachedAttend(c, cache, presents),
    logitPositions ? { logitPositions } : { lastPositionOnly: true },
  ); // [B, M, V] or [B, V]
  g.output(logits, DECODER_LOGITS);
  presents.forEach((p, i) => {
    g.output(p.key, presentKeyName(i)); // [B, H, N, Dh]
    g.output(p.value, presentValueName(i)); // [B, H, N, Dh]
  });
  return g;
}

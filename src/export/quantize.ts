import { fail } from '../util/errors.ts';

/**
 * Weight-only block quantization in the layout of onnxruntime's `com.microsoft.MatMulNBits`
 * (y = x · Bᵀ, B stored [N, K]): every run of `blockSize` consecutive elements of a row of B
 * shares one float scale; values are symmetric around the implicit zero point 2^(bits−1) (128 at
 * 8 bits, 8 at 4 bits), as llama.cpp's Q8_0 / Q4_0. At 4 bits the block's signed extreme maps
 * to −8 (Q4_0's rule), so the full range [−8, 7] is used.
 */

export type QuantBits = 4 | 8;

export interface Quantization {
  bits: QuantBits;
  blockSize: number;
  /** MatMulNBits accuracy_level: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 activations. */
  accuracyLevel: number;
}

export const DEFAULT_BLOCK_SIZE = 32;
/** Chosen by measurement (README, "Quantization"): int8 activations are the fastest here. */
export const DEFAULT_ACCURACY_LEVEL = 4;

/** `--quantize int8|int4 [--block-size N] [--accuracy-level N]` → options (undefined: float32). */
export function parseQuantization(
  kind: 'int8' | 'int4' | undefined,
  blockSize: number | undefined,
  accuracyLevel: number | undefined,
): Quantization | undefined {
  if (kind === undefined) {
    if (blockSize !== undefined || accuracyLevel !== undefined)
      fail('TF_ERR_BAD_ARGS', '--block-size and --accuracy-level need --quantize int8|int4');
    return undefined;
  }
  const size = blockSize ?? DEFAULT_BLOCK_SIZE;
  checkBlockSize(size);
  return {
    bits: kind === 'int8' ? 8 : 4,
    blockSize: size,
    accuracyLevel: accuracyLevel ?? DEFAULT_ACCURACY_LEVEL,
  };
}

export interface Quantized {
  /** uint8 [N, blocks, blockSize·bits/8]; 4-bit pairs packed low nibble first. */
  data: Uint8Array;
  /** float32 [N, blocks]. */
  scales: Float32Array;
  n: number;
  k: number;
  blocks: number;
}

/** Block sizes onnxruntime's kernels accept: powers of two from 16. */
export function checkBlockSize(blockSize: number): void {
  if (!Number.isInteger(blockSize) || blockSize < 16 || (blockSize & (blockSize - 1)) !== 0) {
    fail('TF_ERR_BAD_ARGS', `block size must be a power of two ≥ 16, got ${blockSize}`);
  }
}

/**
 * Quantizes B [N, K] given as `at(row, col)` (so a caller can read a transposed matrix without
 * materialising it). K is padded to whole blocks with zeros.
 */
export function quantizeRows(
  n: number,
  k: number,
  at: (row: number, col: number) => number,
  bits: QuantBits,
  blockSize: number,
): Quantized {
  checkBlockSize(blockSize);
  const blocks = Math.ceil(k / blockSize);
  const blob = (blockSize * bits) / 8;
  const data = new Uint8Array(n * blocks * blob);
  const scales = new Float32Array(n * blocks);
  const zero = 1 << (bits - 1);
  const top = (1 << bits) - 1;
  const vals = new Float32Array(blockSize);
  for (let r = 0; r < n; r++) {
    for (let b = 0; b < blocks; b++) {
      let extreme = 0; // the signed value of largest magnitude
      for (let i = 0; i < blockSize; i++) {
        const c = b * blockSize + i;
        const v = c < k ? at(r, c) : 0;
        vals[i] = v;
        if (Math.abs(v) > Math.abs(extreme)) extreme = v;
      }
      const scale = Math.fround(bits === 8 ? Math.abs(extreme) / 127 : extreme / -8);
      scales[r * blocks + b] = scale;
      const inv = scale === 0 ? 0 : 1 / scale;
      const base = (r * blocks + b) * blob;
      for (let i = 0; i < blockSize; i++) {
        const q = Math.min(top, Math.max(0, Math.round(vals[i]! * inv) + zero));
        if (bits === 8) data[base + i] = q;
        else data[base + (i >> 1)]! |= (i & 1) === 0 ? q : q << 4;
      }
    }
  }
  return { data, scales, n, k, blocks };
}

/** The float matrix [N, K] a quantized one stands for (tests, error reports). */
export function dequantizeRows(q: Quantized, bits: QuantBits, blockSize: number): Float32Array {
  const out = new Float32Array(q.n * q.k);
  const blob = (blockSize * bits) / 8;
  const zero = 1 << (bits - 1);
  for (let r = 0; r < q.n; r++) {
    for (let c = 0; c < q.k; c++) {
      const b = Math.floor(c / blockSize);
      const i = c % blockSize;
      const byte = q.data[(r * q.blocks + b) * blob + (bits === 8 ? i : i >> 1)]!;
      const v = bits === 8 ? byte : (i & 1) === 0 ? byte & 15 : byte >> 4;
      out[r * q.k + c] = (v - zero) * q.scales[r * q.blocks + b]!;
    }
  }
  return out;
}

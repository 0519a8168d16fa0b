/**
 * Element types of checkpoint tensors (safetensors spelling) and fast conversions between the
 * 16-bit float formats and float32. All conversions work on raw bit patterns with integer ops so
 * they stay cheap over hundreds of megabytes; no lookup tables.
 *
 * Raw tensor bytes are little-endian (safetensors, PyTorch pickles); typed-array views over them
 * are only correct on a little-endian host, which is checked once at load.
 */
import { fail, invariant } from './errors.ts';

export type DType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export const DTYPE_BYTES: Record<DType, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

/** All supported dtypes. */
export const DTYPES: readonly DType[] = Object.freeze(Object.keys(DTYPE_BYTES) as DType[]);

export function isDType(value: unknown): value is DType {
  return typeof value === 'string' && Object.hasOwn(DTYPE_BYTES, value);
}

export function isFloatDType(dtype: DType): boolean {
  return dtype === 'F64' || dtype === 'F32' || dtype === 'F16' || dtype === 'BF16';
}

/** True when the host stores multi-byte numbers little-endian (typed-array views match file bytes). */
export const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
invariant(HOST_LITTLE_ENDIAN, 'tokenformer-serve requires a little-endian host');

/** IEEE binary16 bit patterns → float32 (exact; every half value is representable). */
export function f16ToF32(bits: Uint16Array): Float32Array {
  const n = bits.length;
  const out = new Float32Array(n);
  const out32 = new Uint32Array(out.buffer);
  for (let i = 0; i < n; i++) {
    const h = bits[i]!;
    const sign = (h & 0x8000) << 16;
    const exp = (h >>> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0) {
      if (mant === 0) {
        out32[i] = sign; // ±0
      } else {
        // Subnormal: value = mant * 2^-24; renormalise into a float32 normal.
        let e = 113; // float32 biased exponent for 2^-14
        let m = mant;
        while ((m & 0x400) === 0) {
          m <<= 1;
          e--;
        }
        out32[i] = sign | (e << 23) | ((m & 0x3ff) << 13);
      }
    } else if (exp === 0x1f) {
      out32[i] = sign | 0x7f800000 | (mant << 13); // inf, or NaN keeping its payload
    } else {
      out32[i] = sign | ((exp + 112) << 23) | (mant << 13);
    }
  }
  return out;
}

/**
 * float32 → IEEE binary16 bit patterns, round-to-nearest-even. Values beyond the half range
 * become ±inf, tiny values become half subnormals or ±0, NaN stays a (quiet) NaN.
 */
export function f32ToF16(x: Float32Array): Uint16Array {
  const n = x.length;
  const in32 = new Uint32Array(x.buffer, x.byteOffset, n);
  const out = new Uint16Array(n);
  for (let i = 0; i < n; i++) {
    const b = in32[i]!;
    const sign = (b >>> 16) & 0x8000;
    const exp = (b >>> 23) & 0xff;
    const mant = b & 0x7fffff;
    if (exp === 0xff) {
      // inf stays inf; NaN keeps the top payload bits and is forced quiet (never becomes inf).
      out[i] = mant === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mant >>> 13);
      continue;
    }
    const he = exp - 112; // half biased exponent
    if (he >= 0x1f) {
      out[i] = sign | 0x7c00; // overflow
    } else if (he <= 0) {
      // Half subnormal (or zero). With m = 1.mant as a 24-bit integer, |x| = m * 2^(exp-150), which
      // in units of the smallest subnormal (2^-24) is m * 2^(he-14): shift right, then round.
      if (he < -10) {
        out[i] = sign; // below half the smallest subnormal: rounds to ±0
        continue;
      }
      const m = mant | 0x800000;
      const shift = 14 - he; // 14..24
      let h = m >>> shift;
      const rem = m & ((1 << shift) - 1);
      const half = 1 << (shift - 1);
      if (rem > half || (rem === half && (h & 1) !== 0)) h++;
      out[i] = sign | h; // h may carry into 0x400, the smallest normal: still correct
    } else {
      let h = (he << 10) | (mant >>> 13);
      const rem = mant & 0x1fff;
      if (rem > 0x1000 || (rem === 0x1000 && (h & 1) !== 0)) h++; // carry may reach 0x7c00 = inf
      out[i] = sign | h;
    }
  }
  return out;
}

/** bfloat16 bit patterns → float32 (exact). */
export function bf16ToF32(bits: Uint16Array): Float32Array {
  const n = bits.length;
  const out = new Float32Array(n);
  const out32 = new Uint32Array(out.buffer);
  for (let i = 0; i < n; i++) out32[i] = bits[i]! << 16;
  return out;
}

/** float32 → bfloat16 bit patterns, round-to-nearest-even; NaN stays a (quiet) NaN. */
export function f32ToBf16(x: Float32Array): Uint16Array {
  const n = x.length;
  const in32 = new Uint32Array(x.buffer, x.byteOffset, n);
  const out = new Uint16Array(n);
  for (let i = 0; i < n; i++) {
    const b = in32[i]!;
    if ((b & 0x7fffffff) > 0x7f800000) {
      out[i] = (b >>> 16) | 0x40; // NaN: keep sign and payload top bits, force quiet
    } else {
      // Sum stays below 2^32 for every non-NaN pattern, so >>> is exact.
      out[i] = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
    }
  }
  return out;
}

/** Returns `bytes` itself when its offset is a multiple of `align`, otherwise an aligned copy. */
function aligned(bytes: Uint8Array, align: number): Uint8Array {
  return bytes.byteOffset % align === 0 ? bytes : bytes.slice();
}

/**
 * Converts raw little-endian tensor bytes of a float dtype to a fresh Float32Array (never a view
 * of `bytes`). F64 is rounded to nearest float32.
 */
export function toFloat32(dtype: DType, bytes: Uint8Array): Float32Array {
  if (!isFloatDType(dtype)) {
    fail('TF_ERR_BAD_CHECKPOINT', `cannot convert a ${dtype} tensor to float32: not a floating-point dtype`);
  }
  const size = DTYPE_BYTES[dtype];
  if (bytes.byteLength % size !== 0) {
    fail(
      'TF_ERR_BAD_CHECKPOINT',
      `${dtype} tensor data is ${bytes.byteLength} bytes, not a multiple of the ${size}-byte element size`,
    );
  }
  const n = bytes.byteLength / size;
  switch (dtype) {
    case 'F32':
      return new Float32Array(bytes.slice().buffer, 0, n);
    case 'F64': {
      const b = aligned(bytes, 8);
      return new Float32Array(new Float64Array(b.buffer, b.byteOffset, n));
    }
    case 'F16': {
      const b = aligned(bytes, 2);
      return f16ToF32(new Uint16Array(b.buffer, b.byteOffset, n));
    }
    default: {
      const b = aligned(bytes, 2);
      return bf16ToF32(new Uint16Array(b.buffer, b.byteOffset, n));
    }
  }
}

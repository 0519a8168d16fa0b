import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  bf16ToF32,
  DTYPE_BYTES,
  DTYPES,
  f16ToF32,
  f32ToBf16,
  f32ToF16,
  isDType,
  toFloat32,
} from '../../src/util/dtype.ts';
import { TokenFormerError } from '../../src/util/errors.ts';

function f32(bits: number): number {
  return new Float32Array(new Uint32Array([bits]).buffer)[0]!;
}
function bitsOf(x: number): number {
  return new Uint32Array(new Float32Array([x]).buffer)[0]!;
}
function toHalf(x: number): number {
  return f32ToF16(new Float32Array([x]))[0]!;
}
/** Encodes raw f32 bits without passing through a JS number (which may quiet a signalling NaN). */
function toHalfBits(bits: number): number {
  return f32ToF16(new Float32Array(new Uint32Array([bits]).buffer))[0]!;
}
function toBfBits(bits: number): number {
  return f32ToBf16(new Float32Array(new Uint32Array([bits]).buffer))[0]!;
}
function fromHalf(h: number): number {
  return f16ToF32(new Uint16Array([h]))[0]!;
}
function toBf(x: number): number {
  return f32ToBf16(new Float32Array([x]))[0]!;
}
function fromBf(h: number): number {
  return bf16ToF32(new Uint16Array([h]))[0]!;
}
const isHalfNaN = (h: number) => (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
const isBfNaN = (h: number) => (h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0;

/** Independent reference: value of a binary16 bit pattern computed with float64 arithmetic. */
function refHalfValue(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m === 0 ? s * Infinity : Number.NaN;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** Independent reference for float → half: nearest finite half by search, ties to even. */
const positiveHalves = Array.from({ length: 0x7c00 }, (_, i) => refHalfValue(i));
function refToHalf(x: number): number {
  if (Number.isNaN(x)) return -1;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a >= 65520) return sign | 0x7c00; // 65520 is the midpoint of 65504 and 2^16: ties to even = inf
  let lo = 0;
  let hi = positiveHalves.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (positiveHalves[mid]! <= a) lo = mid;
    else hi = mid;
  }
  const dLo = a - positiveHalves[lo]!;
  const dHi = positiveHalves[hi]! - a;
  const pick = dLo < dHi ? lo : dHi < dLo ? hi : lo % 2 === 0 ? lo : hi;
  return sign | pick;
}

describe('dtype tables', () => {
  test('DTYPE_BYTES', () => {
    assert.deepEqual(DTYPE_BYTES, {
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
    });
    assert.equal(DTYPES.length, 10);
    assert.ok(isDType('BF16'));
    assert.ok(!isDType('U32'));
    assert.ok(!isDType('toString'));
    assert.ok(!isDType(4));
  });
});

describe('f16', () => {
  test('known bit patterns decode', () => {
    const cases: Array<[number, number]> = [
      [0x0000, 0],
      [0x0001, 2 ** -24],
      [0x03ff, 1023 * 2 ** -24],
      [0x0400, 2 ** -14],
      [0x3c00, 1],
      [0x3555, 0.333251953125],
      [0xc000, -2],
      [0x7bff, 65504],
      [0xfbff, -65504],
      [0x7c00, Infinity],
      [0xfc00, -Infinity],
    ];
    for (const [h, v] of cases) assert.equal(fromHalf(h), v, `0x${h.toString(16)}`);
    assert.ok(Object.is(fromHalf(0x8000), -0));
    assert.ok(Number.isNaN(fromHalf(0x7e00)));
    assert.ok(Number.isNaN(fromHalf(0x7c01)));
    assert.ok(Number.isNaN(fromHalf(0xfe00)));
  });

  test('decode matches a float64 reference for all 65536 patterns', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const out = f16ToF32(all);
    for (let h = 0; h < 65536; h++) {
      const want = refHalfValue(h);
      if (Number.isNaN(want)) assert.ok(Number.isNaN(out[h]!), `0x${h.toString(16)}`);
      else assert.ok(Object.is(out[h], want), `0x${h.toString(16)}: ${out[h]} vs ${want}`);
    }
  });

  test('every non-NaN half round-trips exactly through f32', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const back = f32ToF16(f16ToF32(all));
    for (let h = 0; h < 65536; h++) {
      if (isHalfNaN(h)) assert.ok(isHalfNaN(back[h]!), `NaN 0x${h.toString(16)} stays NaN`);
      else assert.equal(back[h], h, `0x${h.toString(16)}`);
    }
  });

  test('encode edge values', () => {
    assert.equal(toHalf(0), 0x0000);
    assert.equal(toHalf(-0), 0x8000);
    assert.equal(toHalf(1), 0x3c00);
    assert.equal(toHalf(65504), 0x7bff);
    assert.equal(toHalf(-65504), 0xfbff);
    assert.equal(toHalf(65519), 0x7bff); // below the midpoint
    assert.equal(toHalf(65520), 0x7c00); // midpoint to 2^16 ties to even (inf)
    assert.equal(toHalf(1e6), 0x7c00); // overflow → inf
    assert.equal(toHalf(-1e30), 0xfc00);
    assert.equal(toHalf(Infinity), 0x7c00);
    assert.equal(toHalf(-Infinity), 0xfc00);
    assert.ok(isHalfNaN(toHalf(Number.NaN)));
    assert.ok(isHalfNaN(toHalfBits(0x7f800001))); // signalling NaN with low payload must not become inf
    assert.ok(isHalfNaN(toHalfBits(0xff800001)));
    assert.equal(toHalfBits(0xff800001) & 0x8000, 0x8000);
    assert.equal(toHalfBits(0x7f802000), 0x7e01); // payload kept, quiet bit forced
  });

  test('encode subnormals and underflow', () => {
    assert.equal(toHalf(2 ** -24), 0x0001);
    assert.equal(toHalf(-(2 ** -24)), 0x8001);
    assert.equal(toHalf(1023 * 2 ** -24), 0x03ff);
    assert.equal(toHalf(2 ** -14), 0x0400);
    assert.equal(toHalf(2 ** -25), 0x0000); // tie between 0 and 2^-24 → even (0)
    assert.equal(toHalf(-(2 ** -25)), 0x8000);
    assert.equal(toHalf(f32(bitsOf(2 ** -25) + 1)), 0x0001); // just above the tie
    assert.equal(toHalf(3 * 2 ** -25), 0x0002); // tie between 1 and 2 ulps → even (2)
    assert.equal(toHalf(5 * 2 ** -25), 0x0002); // tie between 2 and 3 → 2
    assert.equal(toHalf(2047 * 2 ** -25), 0x0400); // tie between 0x3ff and 0x400 → carries into normal
    assert.equal(toHalf(2 ** -26), 0x0000);
    assert.equal(toHalf(f32(1)), 0x0000); // smallest f32 subnormal
    assert.equal(toHalf(1e-30), 0x0000);
  });

  test('encode rounds ties to even in the normal range', () => {
    assert.equal(toHalf(1 + 2 ** -11), 0x3c00); // tie, 0x3c00 even
    assert.equal(toHalf(1 + 3 * 2 ** -11), 0x3c02); // tie, 0x3c01 odd → up
    assert.equal(toHalf(f32(bitsOf(1 + 2 ** -11) + 1)), 0x3c01); // just above the tie
    assert.equal(toHalf(2049), 0x6800); // 2048 | 2050 tie → 2048
    assert.equal(toHalf(2051), 0x6802); // 2050 | 2052 tie → 2052
    assert.equal(toHalf(-2051), 0xe802);
  });

  test('encode matches a search-based reference on many floats', () => {
    const n = 200_000;
    const xs = new Float32Array(n);
    let seed = 12345;
    const rand = () => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed;
    };
    for (let i = 0; i < n; i++) {
      if (i % 4 === 0) {
        // Exact midpoints between adjacent finite halves.
        const h = rand() % 0x7bff;
        xs[i] = ((refHalfValue(h) + refHalfValue(h + 1)) / 2) * (rand() & 1 ? -1 : 1);
      } else {
        // Random sign/mantissa with exponents spanning underflow to overflow (2^-30 .. 2^17).
        const exp = 97 + (rand() % 48);
        xs[i] = f32(((rand() & 1) << 31) | (exp << 23) | (rand() & 0x7fffff));
      }
    }
    const got = f32ToF16(xs);
    for (let i = 0; i < n; i++) {
      assert.equal(got[i], refToHalf(xs[i]!), `x=${xs[i]} bits=0x${bitsOf(xs[i]!).toString(16)}`);
    }
  });

  test('works on views with a non-zero byteOffset', () => {
    const base = new Float32Array([9, 1, 2, 9]);
    const view = base.subarray(1, 3);
    assert.deepEqual([...f32ToF16(view)], [0x3c00, 0x4000]);
    assert.deepEqual([...f32ToBf16(view)], [0x3f80, 0x4000]);
  });
});

describe('bf16', () => {
  test('known bit patterns decode', () => {
    assert.equal(fromBf(0x3f80), 1);
    assert.equal(fromBf(0xc000), -2);
    assert.equal(fromBf(0x7f80), Infinity);
    assert.equal(fromBf(0xff80), -Infinity);
    assert.equal(fromBf(0x0001), 2 ** -133); // smallest subnormal
    assert.equal(fromBf(0x7f7f), f32(0x7f7f0000)); // max finite
    assert.ok(Object.is(fromBf(0x8000), -0));
    assert.ok(Number.isNaN(fromBf(0x7fc0)));
    assert.ok(Number.isNaN(fromBf(0x7f81)));
  });

  test('every non-NaN bf16 round-trips exactly; NaN stays NaN', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const dec = bf16ToF32(all);
    const dec32 = new Uint32Array(dec.buffer); // raw bits: reading a NaN into a JS number may quiet it
    const back = f32ToBf16(dec);
    for (let h = 0; h < 65536; h++) {
      assert.equal(dec32[h], (h << 16) >>> 0);
      if (isBfNaN(h)) assert.ok(isBfNaN(back[h]!), `0x${h.toString(16)}`);
      else assert.equal(back[h], h, `0x${h.toString(16)}`);
    }
  });

  test('encode edge values and ties to even', () => {
    assert.equal(toBf(0), 0x0000);
    assert.equal(toBf(-0), 0x8000);
    assert.equal(toBf(1), 0x3f80);
    assert.equal(toBf(1 + 2 ** -8), 0x3f80); // tie, even stays
    assert.equal(toBf(1 + 3 * 2 ** -8), 0x3f82); // tie, odd rounds up
    assert.equal(toBf(f32(bitsOf(1 + 2 ** -8) + 1)), 0x3f81); // just above the tie
    assert.equal(toBf(f32(0x3f80_7fff)), 0x3f80); // just below the tie
    assert.equal(toBf(f32(0x7f7fffff)), 0x7f80); // max f32 rounds to inf
    assert.equal(toBf(f32(0x7f7f7fff)), 0x7f7f);
    assert.equal(toBf(Infinity), 0x7f80);
    assert.equal(toBf(-Infinity), 0xff80);
    assert.equal(toBf(f32(0x00008000)), 0x0000); // subnormal tie → even
    assert.equal(toBf(f32(0x00018000)), 0x0002); // subnormal tie → even (up)
    assert.ok(isBfNaN(toBf(Number.NaN)));
    assert.ok(isBfNaN(toBfBits(0x7f800001))); // low-payload NaN must not truncate to inf
    assert.ok(isBfNaN(toBfBits(0x7fffffff))); // must not round up into the sign bit
    assert.equal(toBfBits(0xff800001) & 0x8000, 0x8000);
  });
});

describe('toFloat32', () => {
  const le = (arr: ArrayBufferView) => new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength);

  test('F32 returns a fresh copy', () => {
    const src = new Float32Array([1.5, -2, 3]);
    const bytes = le(src);
    const out = toFloat32('F32', bytes);
    assert.deepEqual([...out], [1.5, -2, 3]);
    bytes.fill(0);
    assert.deepEqual([...out], [1.5, -2, 3]);
  });

  test('F16, BF16, F64 convert', () => {
    assert.deepEqual([...toFloat32('F16', le(new Uint16Array([0x3c00, 0xc000, 0x7c00])))], [1, -2, Infinity]);
    assert.deepEqual([...toFloat32('BF16', le(new Uint16Array([0x3f80, 0xc000])))], [1, -2]);
    const f64 = toFloat32('F64', le(new Float64Array([0.1, -1e300, 2 ** -200])));
    assert.deepEqual([...f64], [Math.fround(0.1), -Infinity, 0]);
  });

  test('unaligned byteOffset is handled by copying', () => {
    const cases: Array<[ArrayBufferView, 'F32' | 'F16' | 'BF16' | 'F64', number[]]> = [
      [new Float32Array([1, 2]), 'F32', [1, 2]],
      [new Uint16Array([0x3c00, 0x4000]), 'F16', [1, 2]],
      [new Uint16Array([0x3f80, 0x4000]), 'BF16', [1, 2]],
      [new Float64Array([1, 2]), 'F64', [1, 2]],
    ];
    for (const [arr, dtype, want] of cases) {
      const raw = new Uint8Array(arr.byteLength + 1);
      raw.set(le(arr), 1);
      const unaligned = raw.subarray(1);
      assert.equal(unaligned.byteOffset, 1);
      assert.deepEqual([...toFloat32(dtype, unaligned)], want, dtype);
    }
  });

  test('empty input gives an empty array', () => {
    for (const d of ['F32', 'F16', 'BF16', 'F64'] as const)
      assert.equal(toFloat32(d, new Uint8Array(0)).length, 0);
  });

  test('non-float dtypes and ragged lengths throw TF_ERR_BAD_CHECKPOINT', () => {
    for (const d of ['I64', 'I32', 'I16', 'I8', 'U8', 'BOOL'] as const) {
      assert.throws(
        () => toFloat32(d, new Uint8Array(8)),
        (e: unknown) =>
          e instanceof TokenFormerError &&
          e.code === 'TF_ERR_BAD_CHECKPOINT' &&
          new RegExp(`${d}.*not a floating-point dtype`).test(e.message),
      );
    }
    assert.throws(
      () => toFloat32('F32', new Uint8Array(6)),
      (e: unknown) => e instanceof TokenFormerError && /6 bytes, not a multiple/.test(e.message),
    );
  });
});

import { getRandomValues } from 'node:crypto';
import { fail } from './errors.ts';

/**
 * xoshiro128** (Blackman & Vigna): 128 bits of state, 32-bit integer ops only, so it is fast
 * with Math.imul and needs no BigInt per draw. Seeded through splitmix64 as its authors
 * recommend, so nearby seeds (1, 2, 3) still give unrelated streams. One Rng per sequence.
 */
/** The four 32-bit words of an Rng's state: where its stream is (see Rng.state). */
export type RngState = readonly [number, number, number, number];

export class Rng {
  /** The seed this stream was built from (drawn at random when none was given), for replay. */
  readonly seed: number;
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed?: number) {
    if (seed !== undefined && !Number.isSafeInteger(seed)) {
      fail('TF_ERR_BAD_ARGS', `seed must be an integer, got ${seed}`);
    }
    this.seed = seed ?? randomSeed();
    let x = BigInt.asUintN(64, BigInt(this.seed));
    const next = (): bigint => {
      x = BigInt.asUintN(64, x + 0x9e3779b97f4a7c15n);
      let z = x;
      z = BigInt.asUintN(64, (z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n);
      z = BigInt.asUintN(64, (z ^ (z >> 27n)) * 0x94d049bb133111ebn);
      return z ^ (z >> 31n);
    };
    const a = next();
    const b = next();
    // Two consecutive splitmix64 outputs are never both zero, so the state is never all-zero.
    this.s0 = Number(a & 0xffffffffn) | 0;
    this.s1 = Number(a >> 32n) | 0;
    this.s2 = Number(b & 0xffffffffn) | 0;
    this.s3 = Number(b >> 32n) | 0;
  }

  /** Where the stream is now; `restore` continues it from there (a stream that moves between processes). */
  get state(): RngState {
    return [this.s0, this.s1, this.s2, this.s3];
  }

  restore(state: RngState): void {
    if (
      state.length !== 4 ||
      !state.every((w) => Number.isInteger(w) && w === (w | 0)) ||
      state.every((w) => w === 0)
    )
      fail('TF_ERR_BAD_ARGS', 'an Rng state is four 32-bit integers, not all zero');
    [this.s0, this.s1, this.s2, this.s3] = state;
  }

  /** Uniform integer in [0, 2^32). */
  nextUint32(): number {
    const s1 = this.s1;
    const t = s1 << 9;
    const r = Math.imul(rotl(Math.imul(s1, 5), 7), 9);
    this.s2 ^= this.s0;
    this.s3 ^= s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return r >>> 0;
  }

  /** Uniform float in [0, 1) with 32 random bits (granularity 2^-32, ample for a draw over V ≤ 2^20). */
  nextFloat(): number {
    return this.nextUint32() / 4294967296;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** A random non-negative safe integer, so it can be reported back and replayed. */
export function randomSeed(): number {
  const w = getRandomValues(new Uint32Array(2));
  return (w[0]! & 0x1fffff) * 4294967296 + w[1]!;
}

/** Fills `out` with N(0, std²) draws from `rng` (Box–Muller: two normals per two uniforms). */
export function fillNormal(rng: Rng, out: Float32Array, std: number): Float32Array {
  for (let i = 0; i < out.length; i += 2) {
    const u = 1 - rng.nextFloat();
    const r = Math.sqrt(-2 * Math.log(u)) * std;
    const a = 2 * Math.PI * rng.nextFloat();
    out[i] = r * Math.cos(a);
    if (i + 1 < out.length) out[i + 1] = r * Math.sin(a);
  }
  return out;
}

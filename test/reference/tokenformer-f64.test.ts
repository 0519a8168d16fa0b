import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { SafeTensorsFile } from '../../src/formats/safetensors.ts';
import { TorchCheckpoint } from '../../src/formats/torch-checkpoint.ts';
import { fromOfficialConfig, type TokenFormerConfig } from '../../src/model/config.ts';
import { paramSpecs } from '../../src/model/params.ts';
import { FIXTURES, maxAbsDiff } from '../helpers.ts';
import {
  erf,
  gelu,
  layerNorm,
  pattention,
  randomParams,
  referenceLogits,
  rotary,
} from './tokenformer-f64.ts';

function tinyConfig(over: Partial<TokenFormerConfig> = {}): TokenFormerConfig {
  return {
    vocab_size: 37,
    hidden_size: 16,
    num_layers: 2,
    num_heads: 2,
    rotary_pct: 0.25,
    rotary_base: 10000,
    layernorm_eps: 1e-5,
    max_seq_len: 64,
    norm_activation: 'l2_norm_gelu',
    qkv: { tokens: 12, tau: Math.sqrt(12) },
    proj: { tokens: 10, tau: Math.sqrt(10) },
    ffn: { tokens: 24, tau: Math.sqrt(24) },
    ...over,
  };
}

/** Deterministic test inputs in [−1, 1) (an LCG; independent of the reference's PRNG). */
function numbers(count: number, seed: number): Float64Array {
  const out = new Float64Array(count);
  let s = seed >>> 0;
  for (let i = 0; i < count; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

function ids(rows: number, T: number, vocab: number, seed: number): number[][] {
  const u = numbers(rows * T, seed);
  return Array.from({ length: rows }, (_, b) =>
    Array.from({ length: T }, (_, t) => Math.floor(((u[b * T + t]! + 1) / 2) * vocab)),
  );
}

/** Fails with the largest difference (never a huge array diff, which node:assert renders slowly). */
function assertAllClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: number,
  what: string,
): void {
  const diff = maxAbsDiff(actual, expected);
  assert.ok(diff <= tol, `${what}: max |Δ| ${diff} > ${tol}`);
}

function assertDiffer(a: ArrayLike<number>, b: ArrayLike<number>, atLeast: number, what: string): void {
  const diff = maxAbsDiff(a, b);
  assert.ok(diff > atLeast, `${what}: max |Δ| ${diff} ≤ ${atLeast}`);
}

function assertClose(actual: number, expected: number, tol: number, what: string): void {
  assert.ok(Math.abs(actual - expected) <= tol, `${what}: ${actual} vs ${expected} (tol ${tol})`);
}

describe('erf and GELU', () => {
  // High-precision values (mpmath, 40 digits) rounded to float64.
  const erfTable: [number, number][] = [
    [1e-8, 1.1283791670955126e-8],
    [0.1, 0.1124629160182849],
    [0.5, 0.5204998778130465],
    [1, 0.8427007929497149],
    [2, 0.9953222650189527],
    [2.9999, 0.9999778955735178],
    [3, 0.9999779095030014],
    [3.5, 0.9999992569016276],
    [4.5, 0.9999999998033839],
    [-3, -0.9999779095030014],
  ];
  for (const [x, expected] of erfTable) {
    test(`erf(${x})`, () => assertClose(erf(x), expected, 1e-15 * Math.max(1, Math.abs(expected)), 'erf'));
  }

  test('erf is odd, saturates, and is continuous where the method switches', () => {
    assert.equal(erf(0), 0);
    assert.equal(erf(-0.7), -erf(0.7));
    assert.equal(erf(10), 1);
    assert.equal(erf(-10), -1);
    assert.ok(Number.isNaN(erf(Number.NaN)), 'erf(NaN)');
    for (const x of [2, 6]) {
      const below = erf(x * (1 - 1e-15));
      const above = erf(x * (1 + 1e-15));
      assert.ok(Math.abs(above - below) < 1e-15, `jump at ${x}: ${below} → ${above}`);
    }
  });

  test('gelu against high-precision values', () => {
    assertClose(gelu(1), 0.8413447460685429, 1e-15, 'gelu(1)');
    assertClose(gelu(-1), -0.15865525393145705, 1e-15, 'gelu(-1)');
    assertClose(gelu(0.5), 0.34573123063700656, 1e-15, 'gelu(0.5)');
    assertClose(gelu(3), 2.99595030590511, 1e-15, 'gelu(3)');
    assertClose(gelu(-2.5), -0.015524163314440337, 1e-15, 'gelu(-2.5)');
    assert.equal(gelu(0), 0);
  });
});

describe('pattention', () => {
  test('one parameter token: Z = sign(x·k)·τ, out = GELU(±τ)·v', () => {
    const x = Float64Array.from([0.3, -1.2, 2, 0.5, 0.5, 0.5]); // [2, 3]
    const keys = [1, 0.5, 0.25]; // [1, 3]: scores 0.3−0.6+0.5 = 0.2 > 0, 0.875 > 0
    const values = [2, -1]; // [1, 2]
    const tau = 1.7;
    const out = pattention(x, 2, 3, keys, values, 1, 2, tau);
    const g = gelu(tau);
    assertAllClose(out, [2 * g, -g, 2 * g, -g], 1e-15, 'positive score');
    const neg = pattention(Float64Array.from([-1, 0, 0]), 1, 3, keys, values, 1, 2, tau);
    assertAllClose(neg, [2 * gelu(-tau), -gelu(-tau)], 1e-15, 'negative score');
  });

  test('matches a direct transcription of the formula', () => {
    const [rows, dIn, n, dOut, tau] = [3, 5, 7, 4, 2.5];
    const x = numbers(rows * dIn, 1);
    const k = numbers(n * dIn, 2);
    const v = numbers(n * dOut, 3);
    const out = pattention(x, rows, dIn, k, v, n, dOut, tau);
    for (let r = 0; r < rows; r++) {
      const a = Array.from({ length: n }, (_, j) =>
        Array.from({ length: dIn }, (_, i) => x[r * dIn + i]! * k[j * dIn + i]!).reduce((p, q) => p + q, 0),
      );
      const norm = Math.hypot(...a);
      for (let o = 0; o < dOut; o++) {
        const expected = a.reduce((s, aj, j) => s + gelu((aj / norm) * tau) * v[j * dOut + o]!, 0);
        assertClose(out[r * dOut + o]!, expected, 1e-14, `out[${r}, ${o}]`);
      }
    }
  });

  test('an all-zero input row gives zeros, never NaN, and leaves other rows alone', () => {
    const [dIn, n, dOut] = [4, 6, 3];
    const x = numbers(3 * dIn, 4);
    x.fill(0, dIn, 2 * dIn); // row 1 is zero
    const k = numbers(n * dIn, 5);
    const v = numbers(n * dOut, 6);
    const out = pattention(x, 3, dIn, k, v, n, dOut, Math.sqrt(n));
    assert.ok(out.every(Number.isFinite), 'finite');
    assertAllClose(out.subarray(dOut, 2 * dOut), [0, 0, 0], 0, 'zero row');
    const row0 = pattention(x.subarray(0, dIn), 1, dIn, k, v, n, dOut, Math.sqrt(n));
    assertAllClose(out.subarray(0, dOut), row0, 0, 'row 0 alone');
    assertDiffer(out.subarray(0, dOut), [0, 0, 0], 1e-3, 'non-zero row must not be zeroed');
  });

  test('appending parameter tokens with zero keys (random values) and the same τ changes nothing', () => {
    const [rows, dIn, n, extra, dOut] = [4, 6, 5, 7, 3];
    const tau = Math.sqrt(n);
    const x = numbers(rows * dIn, 7);
    const k = numbers(n * dIn, 8);
    const v = numbers(n * dOut, 9);
    const kGrown = new Float64Array((n + extra) * dIn);
    kGrown.set(k);
    const vGrown = new Float64Array((n + extra) * dOut);
    vGrown.set(v);
    vGrown.set(numbers(extra * dOut, 10), n * dOut);
    const before = pattention(x, rows, dIn, k, v, n, dOut, tau);
    const after = pattention(x, rows, dIn, kGrown, vGrown, n + extra, dOut, tau);
    assertAllClose(after, before, 1e-12, 'zero-key growth');
    // With τ recomputed as √(n + extra) the function does change (the official behaviour).
    const recomputed = pattention(x, rows, dIn, kGrown, vGrown, n + extra, dOut, Math.sqrt(n + extra));
    assertDiffer(recomputed, before, 1e-3, 'growth with τ recomputed');
  });

  test('rejects mis-sized tensors', () => {
    assert.throws(() => pattention(new Float64Array(6), 2, 3, [1, 2], [1], 1, 1, 1), /keys/);
  });
});

describe('layerNorm', () => {
  test('no affine: each row has mean ≈ 0 and biased variance ≈ 1', () => {
    const [rows, d] = [5, 11];
    const x = numbers(rows * d, 11).map((v, i) => 3 * v + (i % d === 0 ? 10 : 0));
    const y = layerNorm(x, rows, d, 1e-12);
    for (let r = 0; r < rows; r++) {
      const row = Array.from(y.subarray(r * d, (r + 1) * d));
      const mean = row.reduce((a, b) => a + b, 0) / d;
      const variance = row.reduce((a, b) => a + (b - mean) ** 2, 0) / d;
      assertClose(mean, 0, 1e-14, 'mean');
      assertClose(variance, 1, 1e-10, 'variance');
    }
  });

  test('eps, weight and bias as torch: (x − μ)/√(σ² + eps)·w + b', () => {
    const x = Float64Array.from([1, 2, 3, 6]); // μ = 3, σ² (biased) = 3.5
    const y = layerNorm(x, 1, 4, 0.5, [1, 2, 3, 4], [0, 0, 1, -1]);
    const s = 1 / Math.sqrt(3.5 + 0.5);
    assertAllClose(y, [-2 * s, -2 * s, 1, 3 * s * 4 - 1], 1e-15, 'affine layerNorm');
  });

  test('a constant row gives zeros (then the bias), not NaN', () => {
    const y = layerNorm(Float64Array.from([2, 2, 2]), 1, 3, 1e-5, undefined, [0.1, 0.2, 0.3]);
    assertAllClose(y, [0.1, 0.2, 0.3], 0, 'constant row');
  });
});

describe('rotary', () => {
  test('rotates (x1[j], x2[j]) pairs by pos·base^(−2j/r), leaves the other dims alone', () => {
    const [H, Dh, r, base] = [2, 6, 4, 100];
    const positions = [0, 3];
    const x = numbers(2 * H * Dh, 12);
    const y = rotary(x, positions, H, Dh, r, base);
    for (let t = 0; t < 2; t++) {
      for (let h = 0; h < H; h++) {
        const at = (t * H + h) * Dh;
        for (let j = 0; j < r / 2; j++) {
          const angle = positions[t]! / base ** ((2 * j) / r);
          const [x1, x2] = [x[at + j]!, x[at + r / 2 + j]!];
          assertClose(y[at + j]!, x1 * Math.cos(angle) - x2 * Math.sin(angle), 1e-15, 'first half');
          assertClose(y[at + r / 2 + j]!, x2 * Math.cos(angle) + x1 * Math.sin(angle), 1e-15, 'second half');
        }
        for (let i = r; i < Dh; i++) assert.equal(y[at + i], x[at + i]);
      }
    }
    assertAllClose(y.subarray(0, H * Dh), x.subarray(0, H * Dh), 0, 'position 0');
  });

  test('the q·k score of rotated vectors depends only on the position difference', () => {
    const [Dh, r] = [8, 8];
    const q = numbers(Dh, 13);
    const k = numbers(Dh, 14);
    const score = (m: number, n: number): number => {
      const rq = rotary(q, [m], 1, Dh, r, 10000);
      const rk = rotary(k, [n], 1, Dh, r, 10000);
      return rq.reduce((s, v, i) => s + v * rk[i]!, 0);
    };
    const reference = score(7, 3);
    for (const [m, n] of [
      [4, 0],
      [5, 1],
      [40, 36],
      [1004, 1000],
    ] as const) {
      assertClose(score(m, n), reference, 1e-12, `score(${m}, ${n})`);
    }
    assert.ok(Math.abs(score(8, 3) - reference) > 1e-6, 'a different offset must change the score');
  });
});

describe('referenceLogits', () => {
  test('randomParams: shapes of paramSpecs, deterministic per seed, official scales', () => {
    const c = tinyConfig({ hidden_size: 64, num_heads: 4, qkv: { tokens: 96, tau: Math.sqrt(96) } });
    const p = randomParams(c, 1);
    for (const spec of paramSpecs(c)) {
      assert.equal(
        p.get(spec.name)?.length,
        spec.shape.reduce((a, b) => a * b, 1),
        spec.name,
      );
    }
    assert.equal(p.size, paramSpecs(c).length);
    for (const [name, again] of randomParams(c, 1)) assertAllClose(again, p.get(name)!, 0, `${name} again`);
    assert.notDeepEqual(randomParams(c, 2).get('embed.weight'), p.get('embed.weight'));
    const std = (a: Float64Array, mean = 0): number =>
      Math.sqrt(a.reduce((s, v) => s + (v - mean) ** 2, 0) / a.length);
    assertClose(std(p.get('embed.weight')!), 0.02, 0.002, 'embedding std');
    assertClose(std(p.get('layers.0.attn.q.keys')!), 0.02, 0.002, 'keys std');
    assertClose(std(p.get('layers.1.ffn.values')!), 2 / (2 * 8), 0.01, 'values std');
    assertClose(std(p.get('final_norm.weight')!, 1), 0.1, 0.05, 'final norm weight around 1');
  });

  test('configs with rotary_pct 0, 0.25, 1 and token counts ≠ hidden size run and give finite logits', () => {
    for (const rotary_pct of [0, 0.25, 1]) {
      const c = tinyConfig({ rotary_pct });
      const logits = referenceLogits(c, randomParams(c, 3), ids(2, 9, c.vocab_size, 15));
      assert.equal(logits.length, 2 * 9 * c.vocab_size);
      assert.ok(logits.every(Number.isFinite), `rotary_pct ${rotary_pct}`);
      assertDiffer(logits, new Float64Array(logits.length), 1e-3, 'logits are not all zero');
    }
  });

  test('batch rows are independent', () => {
    const c = tinyConfig();
    const p = randomParams(c, 4);
    const batch = ids(3, 7, c.vocab_size, 16);
    const all = referenceLogits(c, p, batch);
    const V = c.vocab_size;
    for (let b = 0; b < 3; b++) {
      const one = referenceLogits(c, p, [batch[b]!]);
      assertAllClose(all.subarray(b * 7 * V, (b + 1) * 7 * V), one, 0, `row ${b}`);
    }
  });

  test('causality: changing tokens after t leaves the logits at positions ≤ t unchanged', () => {
    const c = tinyConfig({ rotary_pct: 1 });
    const p = randomParams(c, 5);
    const [T, t, V] = [10, 4, c.vocab_size];
    const a = ids(1, T, V, 17);
    const b = [a[0]!.map((id, i) => (i > t ? (id + 1 + i) % V : id))];
    const la = referenceLogits(c, p, a);
    const lb = referenceLogits(c, p, b);
    assertAllClose(lb.subarray(0, (t + 1) * V), la.subarray(0, (t + 1) * V), 0, 'positions ≤ t');
    assertDiffer(la.subarray((t + 1) * V), lb.subarray((t + 1) * V), 1e-6, 'later logits change');
  });

  test('a single token (position 0) gives the same logits with or without rotary', () => {
    const c0 = tinyConfig({ rotary_pct: 0 });
    const c1 = tinyConfig({ rotary_pct: 1 });
    const p = randomParams(c0, 6);
    assertAllClose(referenceLogits(c1, p, [[5], [30]]), referenceLogits(c0, p, [[5], [30]]), 0, 'T = 1');
  });

  test('one layer without rotary: the last position is blind to the order of the tokens before it', () => {
    // With rotary_pct 0 nothing encodes position; in a single layer the last query attends to a
    // set of (key, value) pairs, so permuting the earlier tokens cannot change its output.
    const T = 6;
    const V = 37;
    const seq = ids(1, T, V, 18)[0]!;
    const permuted = [seq[3]!, seq[0]!, seq[4]!, seq[2]!, seq[1]!, seq[5]!];
    const last = (c: TokenFormerConfig, s: number[]) =>
      referenceLogits(c, randomParams(c, 7), [s]).subarray((T - 1) * V);
    const c0 = tinyConfig({ num_layers: 1, rotary_pct: 0 });
    assertAllClose(last(c0, permuted), last(c0, seq), 1e-12, 'no rotary');
    const c1 = tinyConfig({ num_layers: 1, rotary_pct: 1 });
    assertDiffer(last(c1, seq), last(c1, permuted), 1e-9, 'rotary makes order matter');
  });

  test('growth with zero keys and τ kept leaves the logits unchanged', () => {
    const c = tinyConfig();
    const grownConfig = tinyConfig({
      qkv: { tokens: 20, tau: c.qkv.tau },
      proj: { tokens: 13, tau: c.proj.tau },
      ffn: { tokens: 40, tau: c.ffn.tau },
    });
    const p = randomParams(c, 8);
    const grown = randomParams(grownConfig, 9); // new values random; keys and old rows set below
    for (const [name, old] of p) {
      const g = grown.get(name)!;
      if (name.endsWith('.keys')) g.fill(0);
      g.set(old);
    }
    const batch = ids(2, 8, c.vocab_size, 19);
    assertAllClose(referenceLogits(grownConfig, grown, batch), referenceLogits(c, p, batch), 1e-12, 'grown');
  });

  test('rejects ragged batches and missing parameters', () => {
    const c = tinyConfig();
    const p = randomParams(c, 10);
    assert.throws(() => referenceLogits(c, p, [[1, 2], [3]]), /row 1/);
    p.delete('layers.1.ffn.values');
    assert.throws(() => referenceLogits(c, p, [[1, 2]]), /layers\.1\.ffn\.values/);
  });
});

// ---------------------------------------------------------------------------------------------
// Golden fixtures (independent PyTorch float64 implementation, ../shared/fixtures). The property
// tests above cannot see e.g. a wrong attention scale or a parallel residual; these can.

const TINY = join(FIXTURES, 'official-tiny');

function readGoldenF32(name: string): Float32Array {
  const f = SafeTensorsFile.open(join(TINY, 'golden.safetensors'));
  try {
    return f.readF32(name);
  } finally {
    f.close();
  }
}

/** The official checkpoint's config and weights, read with the project's torch loader. */
function official(dir: string): { config: TokenFormerConfig; params: Map<string, Float32Array> } {
  const torch = TorchCheckpoint.open(join(TINY, dir, 'pytorch_model.bin'));
  try {
    const raw = JSON.parse(readFileSync(join(TINY, dir, 'config.json'), 'utf8'));
    const config = fromOfficialConfig(
      raw,
      torch.tensors.get('sequential.0.word_embeddings.weight')!.shape[0]!,
    );
    return { config, params: new Map(paramSpecs(config).map((s) => [s.name, torch.readF32(s.official)])) };
  } finally {
    torch.close();
  }
}

describe('golden fixtures (official-tiny)', () => {
  // Float32 logits up to ~19: their rounding alone is up to ~1e-6.
  const TOL = 2e-6;
  const golden = (): { ids: number[][] } => ({
    ids: JSON.parse(readFileSync(join(TINY, 'golden.json'), 'utf8')).input_ids,
  });

  test('logits of checkpoint/ match the PyTorch float64 logits', () => {
    const { config, params } = official('checkpoint');
    assertAllClose(referenceLogits(config, params, golden().ids), readGoldenF32('logits'), TOL, 'logits');
  });

  test('grown-checkpoint/: τ kept gives the same logits, τ = √n_new gives the recomputed ones', () => {
    const base = official('checkpoint').config;
    const { config: grown, params } = official('grown-checkpoint');
    const kept: TokenFormerConfig = {
      ...grown,
      qkv: { tokens: grown.qkv.tokens, tau: base.qkv.tau },
      proj: { tokens: grown.proj.tokens, tau: base.proj.tau },
      ffn: { tokens: grown.ffn.tokens, tau: base.ffn.tau },
    };
    assertAllClose(referenceLogits(kept, params, golden().ids), readGoldenF32('logits'), TOL, 'τ kept');
    const recomputed = readGoldenF32('grown_tau_recomputed_logits');
    assertAllClose(referenceLogits(grown, params, golden().ids), recomputed, TOL, 'τ recomputed');
  });
});

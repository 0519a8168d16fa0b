import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { type TokenFormerConfig, validateModelConfig } from '../src/model/config.ts';

/** The read-only golden fixtures, beside the project (DESIGN.md §6). */
export const FIXTURES = resolve(import.meta.dirname, '../../shared/fixtures');

/** A temp directory removed when the test ends. */
export function tempDir(t: { after: (fn: () => void) => void }, prefix = 'tf-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= m)) m = Number.isNaN(d) ? Number.POSITIVE_INFINITY : d;
  }
  return m;
}

/** A small config; token counts differ from each other and from hidden on purpose. */
export function tinyConfig(over: Partial<TokenFormerConfig> = {}): TokenFormerConfig {
  return validateModelConfig({
    vocab_size: 61,
    hidden_size: 24,
    num_layers: 2,
    num_heads: 3,
    rotary_pct: 0.25,
    rotary_base: 10000,
    layernorm_eps: 1e-5,
    max_seq_len: 64,
    norm_activation: 'l2_norm_gelu',
    qkv: { tokens: 20, tau: Math.sqrt(20) },
    proj: { tokens: 14, tau: Math.sqrt(14) },
    ffn: { tokens: 40, tau: Math.sqrt(40) },
    ...over,
  });
}

/** mulberry32: a small seeded 32-bit PRNG, uniform in [0, 1), so random cases are reproducible. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

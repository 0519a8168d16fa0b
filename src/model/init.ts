import { fillNormal, Rng } from '../util/rng.ts';
import type { TokenFormerConfig } from './config.ts';
import { EMBEDDING, FINAL_NORM_BIAS, FINAL_NORM_WEIGHT, paramSpecs } from './params.ts';

/**
 * Official initialisation (DESIGN.md §2): keys N(0, 0.02²); values N(0, σ²) with
 * σ = 2 / (L·√d) (GPT-NeoX "wang_init"); embeddings N(0, 0.02²); final LayerNorm weight 1, bias 0.
 * Deterministic for a seed.
 */
/** Std of keys and embeddings. */
export const KEY_INIT_STD = 0.02;

/** Std of value tokens: 2 / (L·√d). */
export function valueInitStd(cfg: TokenFormerConfig): number {
  return 2 / (cfg.num_layers * Math.sqrt(cfg.hidden_size));
}

export function initParams(cfg: TokenFormerConfig, seed: number): Map<string, Float32Array> {
  const rng = new Rng(seed);
  const valueStd = valueInitStd(cfg);
  const params = new Map<string, Float32Array>();
  for (const s of paramSpecs(cfg)) {
    const data = new Float32Array(s.shape.reduce((a, b) => a * b, 1));
    if (s.name === FINAL_NORM_WEIGHT) data.fill(1);
    else if (s.name === FINAL_NORM_BIAS) data.fill(0);
    else fillNormal(rng, data, s.name === EMBEDDING || s.name.endsWith('.keys') ? KEY_INIT_STD : valueStd);
    params.set(s.name, data);
  }
  return params;
}

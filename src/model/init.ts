import { Rng } from '../util/rng.ts';
import type { TokenFormerConfig } from './config.ts';
import { EMBEDDING, FINAL_NORM_BIAS, FINAL_NORM_WEIGHT, paramSpecs } from './params.ts';

/**
 * Official initialisation (DESIGN.md §2): keys N(0, 0.02²); values N(0, σ²) with
 * σ = 2 / (L·√d) (GPT-NeoX "wang_init"); embeddings N(0, 0.02²); final LayerNorm weight 1, bias 0.
 * Deterministic for a seed.
 */
export function initParams(cfg: TokenFormerConfig, seed: number): Map<string, Float32Array> {
  const rng = new Rng(seed);
  const normal = (out: Float32Array, std: number) => {
    for (let i = 0; i < out.length; i += 2) {
      // Box–Muller: two normals per two uniforms.
      const u = 1 - rng.nextFloat();
      const r = Math.sqrt(-2 * Math.log(u)) * std;
      const a = 2 * Math.PI * rng.nextFloat();
      out[i] = r * Math.cos(a);
      if (i + 1 < out.length) out[i + 1] = r * Math.sin(a);
    }
    return out;
  };
  const valueStd = 2 / (cfg.num_layers * Math.sqrt(cfg.hidden_size));
  const params = new Map<string, Float32Array>();
  for (const s of paramSpecs(cfg)) {
    const data = new Float32Array(s.shape.reduce((a, b) => a * b, 1));
    if (s.name === FINAL_NORM_WEIGHT) data.fill(1);
    else if (s.name === FINAL_NORM_BIAS) data.fill(0);
    else normal(data, s.name === EMBEDDING || s.name.endsWith('.keys') ? 0.02 : valueStd);
    params.set(s.name, data);
  }
  return params;
}

import type { TokenFormerConfig } from '../../src/model/config.ts';
import { randomParams } from '../reference/tokenformer-f64.ts';

/** Random float32 weights, scaled up from the official init so logits are O(1–10) and differences show. */
export function f32Params(cfg: TokenFormerConfig, seed: number): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const [name, p] of randomParams(cfg, seed)) {
    const scale =
      name === 'embed.weight' ? 40 : name.endsWith('.keys') ? 30 : name.startsWith('final_norm') ? 1 : 4;
    out.set(
      name,
      Float32Array.from(p, (x) => x * scale),
    );
  }
  return out;
}

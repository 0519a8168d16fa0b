import type { TokenFormerConfig } from '../model/config.ts';
import { paramCount } from '../model/params.ts';

/** Training FLOPs per token: 6 per weight used in a matmul (incl. the tied output layer) + attention. */
export function trainFlopsPerToken(cfg: TokenFormerConfig, seqLen: number): number {
  const matmulWeights = paramCount(cfg) - 2 * cfg.hidden_size; // all but the final norm; the embedding once (output layer)
  return 6 * matmulWeights + 12 * cfg.num_layers * seqLen * cfg.hidden_size;
}

import type { PattentionKind, TokenFormerConfig } from './config.ts';

/**
 * Parameter naming of our checkpoints (model.safetensors) and graphs. One place maps a
 * parameter to its name, shape and the official state-dict name it was imported from.
 */

export type AttnPart = 'q' | 'k' | 'v' | 'o';
export const ATTN_PARTS: readonly AttnPart[] = ['q', 'k', 'v', 'o'];

/** A Pattention site in the model: its parameter-name prefix and which token count it uses. */
export interface PattentionSite {
  prefix: string;
  kind: PattentionKind;
  layer: number;
  /** Official state-dict prefix, e.g. `sequential.2.attention.query`. */
  official: string;
}

const OFFICIAL_ATTN: Record<AttnPart, string> = { q: 'query', k: 'key', v: 'value', o: 'proj' };

export function attnSite(layer: number, part: AttnPart): PattentionSite {
  return {
    prefix: `layers.${layer}.attn.${part}`,
    kind: part === 'o' ? 'proj' : 'qkv',
    layer,
    official: `sequential.${layer + 2}.attention.${OFFICIAL_ATTN[part]}`,
  };
}

export function ffnSite(layer: number): PattentionSite {
  return { prefix: `layers.${layer}.ffn`, kind: 'ffn', layer, official: `sequential.${layer + 2}.mlp` };
}

/** Every Pattention of the model, in graph order. */
export function pattentionSites(c: TokenFormerConfig): PattentionSite[] {
  const sites: PattentionSite[] = [];
  for (let i = 0; i < c.num_layers; i++) {
    for (const p of ATTN_PARTS) sites.push(attnSite(i, p));
    sites.push(ffnSite(i));
  }
  return sites;
}

export const EMBEDDING = 'embed.weight';
export const FINAL_NORM_WEIGHT = 'final_norm.weight';
export const FINAL_NORM_BIAS = 'final_norm.bias';

export interface ParamSpec {
  name: string;
  shape: number[];
  /** Name in the official Hugging Face state dict. */
  official: string;
  /** AdamW decays every tensor except the final LayerNorm (official recipe). */
  decay: boolean;
}

/** All parameters with their shapes, in a fixed order (the order of model.safetensors). */
export function paramSpecs(c: TokenFormerConfig): ParamSpec[] {
  const d = c.hidden_size;
  const specs: ParamSpec[] = [
    {
      name: EMBEDDING,
      shape: [c.vocab_size, d],
      official: 'sequential.0.word_embeddings.weight',
      decay: true,
    },
  ];
  for (const s of pattentionSites(c)) {
    const n = c[s.kind].tokens;
    specs.push({
      name: `${s.prefix}.keys`,
      shape: [n, d],
      official: `${s.official}.key_param_tokens`,
      decay: true,
    });
    specs.push({
      name: `${s.prefix}.values`,
      shape: [n, d],
      official: `${s.official}.value_param_tokens`,
      decay: true,
    });
  }
  const norm = `sequential.${c.num_layers + 3}.norm`;
  specs.push({ name: FINAL_NORM_WEIGHT, shape: [d], official: `${norm}.weight`, decay: false });
  specs.push({ name: FINAL_NORM_BIAS, shape: [d], official: `${norm}.bias`, decay: false });
  return specs;
}

export function paramCount(c: TokenFormerConfig): number {
  return paramSpecs(c).reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);
}

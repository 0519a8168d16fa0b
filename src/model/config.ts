import { fail } from '../util/errors.ts';

/** One Pattention layer kind: how many parameter tokens it has and the scale τ of its scores. */
export interface PattentionConfig {
  /** Number of key/value parameter tokens (rows of K and V). Growth appends rows. */
  tokens: number;
  /** Score scale: Z = A / ‖A‖₂ · τ. √tokens at creation; kept or recomputed at growth. */
  tau: number;
}

/**
 * The architecture of a TokenFormer decoder. `config.json` of our checkpoints stores exactly this
 * under `model`; it is validated once, at the boundary, by `validateModelConfig`.
 */
export interface TokenFormerConfig {
  /** Rows of the (tied) embedding matrix; may exceed the tokenizer's size (padding rows). */
  vocab_size: number;
  /** Model width d. */
  hidden_size: number;
  num_layers: number;
  /** Attention heads H; head size is hidden_size / H. */
  num_heads: number;
  /** Fraction of each head's dims that get rotary embedding (GPT-NeoX rotate_half). */
  rotary_pct: number;
  rotary_base: number;
  layernorm_eps: number;
  /** Longest context the model is meant for (positions are absolute, rotary only). */
  max_seq_len: number;
  /** The only normalisation the official code and this project implement. */
  norm_activation: 'l2_norm_gelu';
  /** Pattention of the query, key and value projections. */
  qkv: PattentionConfig;
  /** Pattention of the attention output projection. */
  proj: PattentionConfig;
  /** The FFN, a single Pattention hidden → hidden. */
  ffn: PattentionConfig;
}

export type PattentionKind = 'qkv' | 'proj' | 'ffn';
export const PATTENTION_KINDS: readonly PattentionKind[] = ['qkv', 'proj', 'ffn'];

export function headDim(c: TokenFormerConfig): number {
  return c.hidden_size / c.num_heads;
}

/** Rotary dims per head: floor(Dh · rotary_pct), as GPT-NeoX computes it. */
export function rotaryDims(c: TokenFormerConfig): number {
  return Math.floor(headDim(c) * c.rotary_pct);
}

/** The official default: τ = √n. */
export function defaultTau(tokens: number): number {
  return Math.sqrt(tokens);
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function positiveInt(where: string, obj: Json, key: string): number {
  const v = obj[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
    fail('TF_ERR_BAD_CONFIG', `${where}: "${key}" must be a positive integer, got ${JSON.stringify(v)}`);
  }
  return v;
}

function positiveNumber(where: string, obj: Json, key: string, fallback?: number): number {
  const v = obj[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    fail('TF_ERR_BAD_CONFIG', `${where}: "${key}" must be a positive number, got ${JSON.stringify(v)}`);
  }
  return v;
}

function checkNormActivation(where: string, v: unknown): 'l2_norm_gelu' {
  if (v !== 'l2_norm_gelu') {
    fail(
      'TF_ERR_BAD_CONFIG',
      `${where}: norm_activation_type ${JSON.stringify(v)} is not supported; only "l2_norm_gelu" ` +
        '(Z = A/‖A‖₂·τ, then GELU) is implemented, and computing another would give wrong results',
    );
  }
  return v;
}

function pattention(where: string, obj: Json, key: PattentionKind): PattentionConfig {
  const v = obj[key];
  if (!isObject(v)) fail('TF_ERR_BAD_CONFIG', `${where}: "${key}" must be an object {tokens, tau}`);
  return {
    tokens: positiveInt(`${where}.${key}`, v, 'tokens'),
    tau: positiveNumber(`${where}.${key}`, v, 'tau'),
  };
}

/** Cross-field rules shared by our config and the official one. */
function checkShapes(where: string, c: TokenFormerConfig): TokenFormerConfig {
  if (c.hidden_size % c.num_heads !== 0) {
    fail(
      'TF_ERR_BAD_CONFIG',
      `${where}: num_heads (${c.num_heads}) must divide hidden_size (${c.hidden_size})`,
    );
  }
  if (!(c.rotary_pct >= 0 && c.rotary_pct <= 1)) {
    fail('TF_ERR_BAD_CONFIG', `${where}: rotary_pct must be in [0, 1], got ${c.rotary_pct}`);
  }
  const r = rotaryDims(c);
  if (r % 2 !== 0) {
    fail(
      'TF_ERR_BAD_CONFIG',
      `${where}: rotary dims per head (floor(${headDim(c)} · ${c.rotary_pct}) = ${r}) must be even`,
    );
  }
  return c;
}

/** Validates our own `model` config object (from config.json); returns a clean copy. */
export function validateModelConfig(raw: unknown, where = 'config.json'): TokenFormerConfig {
  if (!isObject(raw)) fail('TF_ERR_BAD_CONFIG', `${where}: model config must be a JSON object`);
  return checkShapes(where, {
    vocab_size: positiveInt(where, raw, 'vocab_size'),
    hidden_size: positiveInt(where, raw, 'hidden_size'),
    num_layers: positiveInt(where, raw, 'num_layers'),
    num_heads: positiveInt(where, raw, 'num_heads'),
    rotary_pct: typeof raw.rotary_pct === 'number' ? raw.rotary_pct : Number.NaN,
    rotary_base: positiveNumber(where, raw, 'rotary_base'),
    layernorm_eps: positiveNumber(where, raw, 'layernorm_eps'),
    max_seq_len: positiveInt(where, raw, 'max_seq_len'),
    norm_activation: checkNormActivation(where, raw.norm_activation),
    qkv: pattention(where, raw, 'qkv'),
    proj: pattention(where, raw, 'proj'),
    ffn: pattention(where, raw, 'ffn'),
  });
}

/**
 * Converts an official TokenFormer `config.json` (Hugging Face release layout). τ is √n, as the
 * official code computes it. `vocab_size` may be absent (the embedding's row count decides).
 */
export function fromOfficialConfig(
  raw: unknown,
  vocabRows: number,
  where = 'config.json',
): TokenFormerConfig {
  if (!isObject(raw)) fail('TF_ERR_BAD_CONFIG', `${where}: must be a JSON object`);
  const act = raw.norm_activation_type ?? 'l2_norm_gelu';
  const qkv = positiveInt(where, raw, 'qkv_slot_num');
  const proj = positiveInt(where, raw, 'proj_slot_num');
  const ffn = positiveInt(where, raw, 'ffn_slot_num');
  const rotary = raw.rotary_pct ?? 1;
  if (typeof rotary !== 'number') fail('TF_ERR_BAD_CONFIG', `${where}: rotary_pct must be a number`);
  if (raw.vocab_size !== undefined) {
    const v = positiveInt(where, raw, 'vocab_size');
    if (v > vocabRows) {
      fail(
        'TF_ERR_BAD_CONFIG',
        `${where}: vocab_size ${v} exceeds the ${vocabRows} rows of sequential.0.word_embeddings.weight`,
      );
    }
  }
  return checkShapes(where, {
    vocab_size: vocabRows,
    hidden_size: positiveInt(where, raw, 'hidden_size'),
    num_layers: positiveInt(where, raw, 'num_layers'),
    num_heads: positiveInt(where, raw, 'num_attention_heads'),
    rotary_pct: rotary,
    rotary_base: positiveNumber(where, raw, 'rotary_emb_base', 10000),
    layernorm_eps: positiveNumber(where, raw, 'layernorm_epsilon', 1e-5),
    max_seq_len: positiveInt(
      where,
      raw,
      raw.seq_length === undefined ? 'max_position_embeddings' : 'seq_length',
    ),
    norm_activation: checkNormActivation(where, act),
    qkv: { tokens: qkv, tau: defaultTau(qkv) },
    proj: { tokens: proj, tau: defaultTau(proj) },
    ffn: { tokens: ffn, tau: defaultTau(ffn) },
  });
}

import { manifestDType } from '../export/export.ts';
import { fail } from '../util/errors.ts';
import type { Engine } from './engine.ts';

/**
 * Migration policy: whether a stream can move between two models at all (re-prefilled), and
 * whether its KV cache can move as is (no re-prefill).
 */

type Served = Pick<Engine, 'manifest'>;

export function sameTokenizer(a: Served, b: Served): boolean {
  return a.manifest.tokenizer?.sha256 === b.manifest.tokenizer?.sha256;
}

/** Migration re-prefills the stream's tokens on the new model: same tokenizer and context needed. */
export function checkMigratable(from: Served, to: Served): void {
  const a = from.manifest;
  const b = to.manifest;
  if (!sameTokenizer(from, to)) {
    fail(
      'TF_ERR_BAD_ARGS',
      'cannot migrate streams: the models use different tokenizers (use policy "drain")',
    );
  }
  if (b.model.max_seq_len < a.model.max_seq_len) {
    fail(
      'TF_ERR_BAD_ARGS',
      `cannot migrate streams: the new model's context (${b.model.max_seq_len}) is shorter (use policy "drain")`,
    );
  }
}

/** `checkMigratable` as a yes/no. */
export function migratable(from: Served, to: Served): boolean {
  try {
    checkMigratable(from, to);
    return true;
  } catch {
    return false;
  }
}

/**
 * Whether `to` computes exactly the keys and values `from` does, so a stream's KV cache can move
 * as is: the same weights, or — from the lineage in the checkpoints — `to` was grown from
 * exactly these weights with zero-initialised keys and τ kept (function-preserving, see
 * src/model/grow.ts) and not trained since (same step, provenance still `grow`), at the same
 * precision (dtype and quantization settings). Layer and head shapes never change in growth; they are
 * checked anyway.
 */
export function kvTransferable(from: Served, to: Served): boolean {
  const a = from.manifest;
  const b = to.manifest;
  if (!sameTokenizer(from, to)) return false;
  const shape = (m: typeof a.model) => [m.num_layers, m.num_heads, m.hidden_size, m.max_seq_len].join();
  if (shape(a.model) !== shape(b.model)) return false;
  // Quantized keys/values differ from the float ones (and between precisions).
  if (JSON.stringify(a.quantization ?? null) !== JSON.stringify(b.quantization ?? null)) return false;
  // A float16 cache is not a float32 one.
  if (manifestDType(a) !== manifestDType(b)) return false;
  if (a.source.weights_sha256 === b.source.weights_sha256) return true;
  // Quantized: the new tokens' values must fall in blocks of their own, or old blocks rescale.
  const q = a.quantization;
  if (q && [a.model.qkv, a.model.proj, a.model.ffn].some((p) => p.tokens % q.block_size !== 0)) return false;
  const src = b.source;
  return (
    src.parent?.sha256 === a.source.weights_sha256 &&
    src.provenance?.source === 'grow' &&
    src.provenance.growth?.init === 'zero' &&
    src.provenance.growth.tau === 'keep' &&
    src.step === src.parent.step
  );
}

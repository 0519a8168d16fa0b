import { fail } from '../util/errors.ts';
import { Rng } from '../util/rng.ts';

/**
 * Batches of (input_ids, labels) windows. A training batch is a pure function of (seed, step),
 * so a resumed run draws exactly the batches the uninterrupted run would have, with no sampler
 * state to save.
 */

export interface Batch {
  ids: BigInt64Array; // [B, T]
  labels: BigInt64Array; // [B, T]: ids shifted by one
  batchSize: number;
  seqLen: number;
}

function window(
  tokens: Uint32Array,
  start: number,
  seqLen: number,
  ids: BigInt64Array,
  labels: BigInt64Array,
  row: number,
) {
  for (let t = 0; t < seqLen; t++) {
    ids[row * seqLen + t] = BigInt(tokens[start + t]!);
    labels[row * seqLen + t] = BigInt(tokens[start + t + 1]!);
  }
}

/** Random windows of seqLen + 1 tokens from the training split. */
export function trainBatch(
  tokens: Uint32Array,
  batchSize: number,
  seqLen: number,
  seed: number,
  step: number,
): Batch {
  const span = tokens.length - seqLen - 1;
  if (span < 1) {
    fail(
      'TF_ERR_BAD_ARGS',
      `the training split has ${tokens.length} tokens, too few for --seq-len ${seqLen}`,
    );
  }
  const rng = new Rng(seed * 1_000_003 + step);
  const ids = new BigInt64Array(batchSize * seqLen);
  const labels = new BigInt64Array(batchSize * seqLen);
  for (let b = 0; b < batchSize; b++)
    window(tokens, Math.floor(rng.nextFloat() * span), seqLen, ids, labels, b);
  return { ids, labels, batchSize, seqLen };
}

/** Consecutive non-overlapping validation windows, the same every evaluation. */
export function evalBatches(
  tokens: Uint32Array,
  batchSize: number,
  seqLen: number,
  maxBatches: number,
): Batch[] {
  const windows = Math.floor((tokens.length - 1) / seqLen);
  if (windows < 1)
    fail(
      'TF_ERR_BAD_ARGS',
      `the validation split has ${tokens.length} tokens, too few for --seq-len ${seqLen}`,
    );
  const out: Batch[] = [];
  for (let w = 0; w < windows && out.length < maxBatches; w += batchSize) {
    const rows = Math.min(batchSize, windows - w);
    const ids = new BigInt64Array(rows * seqLen);
    const labels = new BigInt64Array(rows * seqLen);
    for (let r = 0; r < rows; r++) window(tokens, (w + r) * seqLen, seqLen, ids, labels, r);
    out.push({ ids, labels, batchSize: rows, seqLen });
  }
  return out;
}

import { fail } from '../util/errors.ts';
import type { GraphBuilder } from './builder.ts';
import { shapeToString, type Value } from './types.ts';

/**
 * Composites built only from the builder's primitives, so autodiff differentiates them through
 * the primitives' rules and they need none of their own.
 */

/**
 * Mean token cross-entropy: logits [B, T, V] (float), labels int64 [B, T] → scalar.
 * log p = x − max − log Σ exp(x − max) (the max is a stop-gradient: the loss does not depend on
 * it, so its gradient path would only add full-vocabulary work that sums to zero); the label's
 * log-prob is picked by a one-hot mask (Equal with a Range over V).
 */
export function crossEntropy(g: GraphBuilder, logits: Value, labels: Value): Value {
  const r = logits.shape.length;
  const vocab = logits.shape[r - 1];
  const lead = logits.shape.slice(0, -1);
  if (
    r < 2 ||
    labels.shape.length !== lead.length ||
    labels.shape.some((d, i) => d !== lead[i]) ||
    (labels.dtype !== 'int64' && labels.dtype !== 'int32')
  ) {
    fail(
      'TF_ERR_GRAPH',
      `crossEntropy: labels ${labels.dtype} ${shapeToString(labels.shape)} must be integers shaped like ` +
        `logits ${shapeToString(logits.shape)} without the last axis`,
    );
  }
  if (typeof vocab !== 'number') fail('TF_ERR_GRAPH', 'crossEntropy: the vocabulary axis must be static');
  const max = g.stopGradient(g.reduce('ReduceMax', logits, [-1], true)); // [B, T, 1]
  const shifted = g.sub(logits, max); // [B, T, V]
  const logSumExp = g.log(g.reduce('ReduceSum', g.exp(shifted), [-1], true)); // [B, T, 1]
  const logProbs = g.sub(shifted, logSumExp); // [B, T, V]
  const picked = g.where(g.oneHot(labels, vocab), logProbs, g.scalarLike(0, logits)); // [B, T, V]
  const tokenLoss = g.reduce('ReduceSum', picked, [-1], false); // [B, T]
  const all = Array.from({ length: r - 1 }, (_, i) => i);
  return g.neg(g.reduce('ReduceMean', tokenLoss, all, false)); // []
}

/** Global L2 norm of several tensors: sqrt(Σ Σ v²) → scalar (gradient clipping). */
export function globalNorm(g: GraphBuilder, values: readonly Value[]): Value {
  if (values.length === 0) fail('TF_ERR_GRAPH', 'globalNorm: needs at least one value');
  const squares = values.map((v) => {
    const all = Array.from({ length: v.shape.length }, (_, i) => i);
    const sq = g.mul(v, v);
    return all.length ? g.reduce('ReduceSum', sq, all, false) : sq; // []
  });
  return g.sqrt(g.sum(squares));
}

import { join } from 'node:path';
import { type Manifest, readManifest } from '../export/export.ts';
import { type Device, OrtSession } from '../runtime/ort.ts';
import { fail } from '../util/errors.ts';
import type { GeneratedToken } from './protocol.ts';
import type { TokenLogprob } from './sampling/sampler.ts';

/**
 * Prompt scoring (echo + logprobs, evaluation harnesses): one run of the full-sequence graph
 * (`model.onnx`, logits at every position) gives the log-probability of every prompt token
 * given the ones before it — not a token-by-token decode. The session is opened on the first
 * request, so servers that never score hold the weights once.
 */

export interface ScorerOptions {
  device: Device;
  threads?: number;
}

export class Scorer {
  private constructor(
    private readonly session: OrtSession,
    private readonly vocabSize: number,
    readonly maxSeqLen: number,
  ) {}

  static async create(exportDir: string, opts: ScorerOptions, manifest?: Manifest): Promise<Scorer> {
    const m = manifest ?? readManifest(exportDir);
    const entry = m.graphs.find((g) => g.role === 'full');
    if (!entry) fail('TF_ERR_BAD_CHECKPOINT', `${exportDir}: the manifest lists no full-sequence graph`);
    const session = await OrtSession.create(join(exportDir, entry.file), {
      device: opts.device,
      ...(opts.threads ? { intraOpThreads: opts.threads } : {}),
    });
    return new Scorer(session, m.model.vocab_size, m.model.max_seq_len);
  }

  /**
   * The logprob of `ids[i]` after `ids[0..i)` for i = 1…n−1 (the first token has none), each
   * with its rank and the `top` most likely tokens at that position (log-softmax of the raw
   * logits: no penalties, temperature 1, as the sampler reports generated tokens).
   */
  async score(ids: readonly number[], top: number): Promise<GeneratedToken[]> {
    const n = ids.length;
    const v = this.vocabSize;
    if (n === 0) fail('TF_ERR_BAD_ARGS', 'nothing to score: the prompt is empty');
    if (n > this.maxSeqLen)
      fail(
        'TF_ERR_CONTEXT_LENGTH',
        `a prompt of ${n} tokens exceeds the model's context (${this.maxSeqLen})`,
      );
    for (const t of ids)
      if (!Number.isInteger(t) || t < 0 || t >= v) fail('TF_ERR_BAD_ARGS', `token id ${t} is out of range`);
    const out = await this.session.run({ input_ids: [BigInt64Array.from(ids, BigInt), [1, n]] }, ['logits']);
    const logits = out.logits!.data as Float32Array; // [1, n, V]
    const scored: GeneratedToken[] = [];
    for (let i = 1; i < n; i++) {
      const row = logits.subarray((i - 1) * v, i * v);
      scored.push(scoreRow(row, ids[i]!, top));
    }
    return scored;
  }

  async close(): Promise<void> {
    await this.session.release();
  }
}

/** Log-softmax of one row (in float64) at `token`, its rank and the `top` likeliest tokens. */
export function scoreRow(row: Float32Array, token: number, top: number): GeneratedToken {
  let max = Number.NEGATIVE_INFINITY;
  for (let j = 0; j < row.length; j++) if (row[j]! > max) max = row[j]!;
  let sum = 0;
  for (let j = 0; j < row.length; j++) sum += Math.exp(row[j]! - max);
  const logZ = max + Math.log(sum);
  const chosen = row[token]!;
  let rank = 1;
  for (let j = 0; j < row.length; j++) if (row[j]! > chosen) rank++;
  const result: GeneratedToken = { token, logprob: chosen - logZ, rank };
  if (top > 0) result.top = topTokens(row, top).map((t) => ({ token: t.token, logprob: t.logprob - logZ }));
  return result;
}

/** The k largest logits, descending, ties to the lower id (the sampler's order). */
function topTokens(row: Float32Array, k: number): TokenLogprob[] {
  const best: TokenLogprob[] = [];
  for (let j = 0; j < row.length; j++) {
    const x = row[j]!;
    if (best.length === k && x <= best[k - 1]!.logprob) continue;
    let at = best.length;
    while (at > 0 && best[at - 1]!.logprob < x) at--;
    best.splice(at, 0, { token: j, logprob: x });
    if (best.length > k) best.pop();
  }
  return best;
}

import type { SamplingParams } from './params.ts';

const FLT_MAX = 3.4028234663852886e38;

/**
 * The logits-processor stage: repetition, presence and frequency penalties. It keeps the token
 * history of one sequence sparsely (a set and a map, not V-sized arrays) so applying it costs
 * O(distinct tokens seen), not O(V), and thousands of live sequences stay cheap.
 */
export class Penalties {
  /** Tokens in prompt + output: repetition_penalty (HF/vLLM semantics). */
  private readonly seen: Set<number>;
  /** Generated tokens only, with counts: presence/frequency penalties (OpenAI semantics). */
  private readonly counts = new Map<number, number>();
  private readonly repetition: number;
  private readonly presence: number;
  private readonly frequency: number;

  constructor(params: SamplingParams, promptTokens: readonly number[]) {
    this.repetition = params.repetition_penalty;
    this.presence = params.presence_penalty;
    this.frequency = params.frequency_penalty;
    this.seen = new Set(this.repetition === 1 ? [] : promptTokens);
  }

  accept(token: number): void {
    if (this.repetition !== 1) this.seen.add(token);
    this.counts.set(token, (this.counts.get(token) ?? 0) + 1);
  }

  /** True when apply() would change some logit, so the caller can skip copying the row. */
  get active(): boolean {
    return this.seen.size > 0 || (this.counts.size > 0 && (this.presence !== 0 || this.frequency !== 0));
  }

  /** Applies the penalties in place: repetition first, then presence/frequency, as vLLM does. */
  apply(z: Float32Array): void {
    const rep = this.repetition;
    for (const t of this.seen) {
      const v = z[t]!;
      // Clamped: a tiny penalty would push a float32 logit to +∞, which no softmax survives.
      z[t] = v > 0 ? Math.min(v / rep, FLT_MAX) : Math.max(v * rep, -FLT_MAX);
    }
    if (this.presence === 0 && this.frequency === 0) return;
    for (const [t, c] of this.counts) z[t] = z[t]! - this.frequency * c - this.presence;
  }
}

import type { SamplingParams } from './params.ts';

const FLT_MAX = 3.4028234663852886e38;

/**
 * The logits processors that act on fixed tokens, before the penalties (vLLM's order):
 * OpenAI's `logit_bias`, added to a token's logit, and vLLM's `min_tokens`, which gives the
 * end-of-text token (unless `ignore_eos`) and every `stop_token_ids` entry a logit of -Infinity
 * until that many tokens were generated. Costs O(biased + stop tokens) per step.
 */
export class LogitBias {
  private readonly bias: readonly (readonly [number, number])[];
  /** The tokens that would end the sequence, held back until min_tokens. */
  private readonly stopTokens: readonly number[];
  private readonly minTokens: number;
  private generated = 0;

  constructor(params: SamplingParams, eosTokenId: number | null) {
    this.bias = params.logit_bias;
    const stops = new Set(params.stop_token_ids);
    if (eosTokenId !== null && !params.ignore_eos) stops.add(eosTokenId);
    this.stopTokens = [...stops];
    this.minTokens = params.min_tokens;
  }

  accept(): void {
    this.generated++;
  }

  /** True when bias() or suppress() would change some logit, so the caller can skip copying the row. */
  get active(): boolean {
    return this.bias.length > 0 || this.suppressing;
  }

  private get suppressing(): boolean {
    return this.generated < this.minTokens && this.stopTokens.length > 0;
  }

  /** Adds the biases in place (clamped: a float32 logit must stay finite). */
  apply(z: Float32Array): void {
    for (const [t, b] of this.bias) z[t] = Math.min(Math.max(z[t]! + b, -FLT_MAX), FLT_MAX);
  }

  /**
   * Bans the stop tokens while fewer than min_tokens were generated; run after the penalties,
   * whose clamping would otherwise turn -Infinity back into a finite logit.
   */
  suppress(z: Float32Array): void {
    if (!this.suppressing) return;
    for (const t of this.stopTokens) z[t] = Number.NEGATIVE_INFINITY;
  }
}

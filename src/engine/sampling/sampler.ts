import { fail, invariant } from '../../util/errors.ts';
import { Rng, type RngState } from '../../util/rng.ts';
import { expNeg } from './fastexp.ts';
import { LogitBias } from './logit-bias.ts';
import { GREEDY_TEMPERATURE, type SamplingParams } from './params.ts';
import { Penalties } from './penalties.ts';
import { type Cut, topKCut, topPCut } from './select.ts';

/**
 * One sampler per sequence, called once per step on that sequence's row of logits:
 *   logit bias → penalties → min-tokens ban (logits processors) → temperature → top-k → top-p
 *   → min-p → argmax or one draw.
 * The stages after the penalties are fused rather than chained, since each on its own would be
 * another O(V) pass: one pass computes the weights at temperature T, their sum and a histogram
 * that bounds which tokens top-k/top-p can keep; selection (no full sort) runs on those only.
 * Greedy is one argmax pass, plus one exp pass for the logprob.
 *
 * Logprobs are the log-softmax of the processed logits (bias, penalties, min-tokens ban) at
 * temperature 1, before top-k/top-p/min-p. Doubt: vLLM v1's default (`raw_logprobs`) is taken
 * before all of these, so the two differ when a bias, penalty or ban is set. They describe the
 * model's distribution, so a token drawn at temperature 1.5 can carry a low logprob.
 *
 * The caller's logits are never written: penalties work on a scratch copy. Scratch buffers are
 * shared by all samplers of a thread (sample() is synchronous), so memory is O(V) once, plus
 * O(tokens seen) per sequence.
 */

export interface TokenLogprob {
  token: number;
  logprob: number;
}

export interface SampleResult extends TokenLogprob {
  /** 1 + the number of tokens with a strictly higher logprob (vLLM); only when logprobs is set. */
  rank?: number;
  /** The `logprobs` most likely tokens, logprob descending then id ascending; only when set. */
  top?: TokenLogprob[];
}

/**
 * The filters select over a pool: every token whose weight is at least a threshold, so the pool
 * is a prefix in weight order. The threshold comes from a histogram of log2(weight) built during
 * the softmax pass, at the edge of the first bin where the count reaches top_k, or the mass
 * reaches top_p; the pool then overshoots what is needed by at most one bin (weights within 2×).
 * The last bin holds everything below 2^-(BINS-1), zeros included; reaching it pools everything.
 */
const BINS = 64;

interface Scratch {
  z: Float32Array; // penalised logits
  w: Float64Array; // unnormalised weights exp((z - max) / T), max weight 1
  ids: Int32Array; // pool token ids, ascending
  pw: Float64Array; // pool weights, aligned with ids
  sel: Float64Array; // pool weights permuted by the selection
  hist: Float64Array; // by floor(-log2 weight): token count (top-k) or weight (top-p)
}
let shared: Scratch | undefined;
function scratch(v: number): Scratch {
  if (shared === undefined || shared.z.length < v) {
    shared = {
      z: new Float32Array(v),
      w: new Float64Array(v),
      ids: new Int32Array(v),
      pw: new Float64Array(v),
      sel: new Float64Array(v),
      hist: new Float64Array(BINS),
    };
  }
  return shared;
}

/** The pool threshold: the lower edge of the first bin where the histogram's running sum reaches target. */
function poolThreshold(hist: Float64Array, target: number): number {
  let acc = 0;
  for (let b = 0; b < BINS - 1; b++) {
    acc += hist[b]!;
    // Bin b holds weights in (2^-(b+1), 2^-b]; the slack covers rounding in the bin index.
    if (acc >= target) return 2 ** -(b + 1) * (1 - 1e-9);
  }
  return 0;
}

/** What to draw from: the argmax, all of s.w, or the first `n` of s.ids/s.pw. */
type Plan =
  | { kind: 'greedy'; token: number }
  | { kind: 'all'; sum: number }
  | { kind: 'pool'; n: number; sum: number };

export class Sampler {
  readonly rng: Rng;
  private readonly penalties: Penalties;
  private readonly bias: LogitBias;
  private readonly greedy: boolean;
  private readonly invTemp: number;
  private readonly topK: number; // 0 = off
  private readonly topP: number; // 1 = off
  private readonly minP: number; // 0 = off
  private readonly filtering: boolean;
  /** Set by plan(): log-sum-exp of the penalised logits at temperature 1, for the logprobs. */
  private lse = 0;

  constructor(
    private readonly params: SamplingParams,
    promptTokens: readonly number[],
    readonly vocabSize: number,
    /** The end-of-text token, which min_tokens holds back. */
    eosTokenId: number | null = null,
    /**
     * A stream moved from another model: how many of `promptTokens`' last tokens it generated
     * there, and where its random stream stopped.
     */
    moved: { generated: number; rng?: RngState } = { generated: 0 },
  ) {
    if (!Number.isSafeInteger(vocabSize) || vocabSize < 1) {
      fail('TF_ERR_BAD_ARGS', `vocabSize must be a positive integer, got ${vocabSize}`);
    }
    for (const t of promptTokens) this.checkToken(t, 'prompt token');
    for (const [t] of params.logit_bias) this.checkToken(t, 'logit_bias token');
    for (const t of params.stop_token_ids) this.checkToken(t, 'stop token');
    this.rng = new Rng(params.seed);
    if (moved.rng) this.rng.restore(moved.rng);
    // Tokens generated before a move stay output: presence and frequency penalties go on counting them.
    const split = promptTokens.length - moved.generated;
    this.penalties = new Penalties(params, promptTokens.slice(0, split));
    for (const t of promptTokens.slice(split)) this.penalties.accept(t);
    this.bias = new LogitBias(params, eosTokenId !== null && eosTokenId < vocabSize ? eosTokenId : null);
    // top_p 0 and min_p 1 keep only the most likely token, as OpenAI and vLLM read them.
    this.greedy =
      params.temperature < GREEDY_TEMPERATURE ||
      params.top_k === 1 ||
      params.top_p === 0 ||
      params.min_p === 1;
    this.invTemp = this.greedy ? 0 : 1 / params.temperature;
    this.topK = params.top_k > 0 && params.top_k < vocabSize ? params.top_k : 0;
    this.topP = params.top_p;
    this.minP = params.min_p;
    this.filtering = this.topK > 0 || this.topP < 1 || this.minP > 0;
  }

  /** Records a generated token (the sampled one, or one the engine forced) for the penalties. */
  accept(token: number): void {
    this.checkToken(token, 'accepted token');
    this.penalties.accept(token);
    this.bias.accept();
  }

  /** Picks the next token from one row of logits (length vocabSize). Does not call accept(). */
  sample(logits: Float32Array): SampleResult {
    const z = this.penalised(logits);
    const plan = this.plan(z);
    let token: number;
    if (plan.kind === 'greedy') {
      token = plan.token;
    } else {
      const s = scratch(this.vocabSize);
      const weights = plan.kind === 'all' ? s.w : s.pw;
      const n = plan.kind === 'all' ? this.vocabSize : plan.n;
      // The running sum repeats the additions that produced plan.sum in the same order, so it
      // reaches u < sum before the end; the fallback only guards against that reasoning failing.
      const u = this.rng.nextFloat() * plan.sum;
      let acc = 0;
      let j = 0;
      for (; j < n - 1; j++) {
        acc += weights[j]!;
        if (acc > u) break;
      }
      token = plan.kind === 'all' ? j : s.ids[j]!;
    }
    const out: SampleResult = { token, logprob: z[token]! - this.lse };
    const n = this.params.logprobs;
    if (n !== undefined) {
      out.rank = rankOf(z, this.vocabSize, z[token]!);
      out.top = topN(z, this.vocabSize, n, this.lse);
    }
    return out;
  }

  /** Whether sample() is an argmax (temperature 0 or top_k 1): no randomness is used. */
  get isGreedy(): boolean {
    return this.greedy;
  }

  /**
   * What sample() would report for `token` had it drawn it from this row: its logprob, and rank
   * and top alternatives when logprobs are asked. For a token chosen elsewhere (a speculative
   * draft the target accepted). Does not call accept().
   */
  describe(logits: Float32Array, token: number): SampleResult {
    this.checkToken(token, 'described token');
    const z = this.penalised(logits);
    let max = Number.NEGATIVE_INFINITY;
    for (let i = 0; i < this.vocabSize; i++) if (z[i]! > max) max = z[i]!;
    this.setLse(max, sumExp(z, this.vocabSize, max));
    const out: SampleResult = { token, logprob: z[token]! - this.lse };
    const n = this.params.logprobs;
    if (n !== undefined) {
      out.rank = rankOf(z, this.vocabSize, z[token]!);
      out.top = topN(z, this.vocabSize, n, this.lse);
    }
    return out;
  }

  /**
   * The exact distribution sample() draws from for this row (after penalties, temperature and
   * filters), as probabilities over the vocabulary; greedy gives a one-hot. Speculative
   * decoding's rejection rule compares the target's and the draft's; allocates.
   */
  distribution(logits: Float32Array): Float64Array {
    const plan = this.plan(this.penalised(logits));
    const p = new Float64Array(this.vocabSize);
    const s = scratch(this.vocabSize);
    if (plan.kind === 'greedy') p[plan.token] = 1;
    else if (plan.kind === 'all') for (let i = 0; i < this.vocabSize; i++) p[i] = s.w[i]! / plan.sum;
    else for (let j = 0; j < plan.n; j++) p[s.ids[j]!] = s.pw[j]! / plan.sum;
    return p;
  }

  private checkToken(t: number, what: string): void {
    if (!Number.isInteger(t) || t < 0 || t >= this.vocabSize) {
      fail('TF_ERR_BAD_ARGS', `${what} ${t} is outside the vocabulary [0, ${this.vocabSize})`);
    }
  }

  private penalised(logits: Float32Array): Float32Array {
    if (logits.length !== this.vocabSize) {
      fail(
        'TF_ERR_BAD_ARGS',
        `logits row has ${logits.length} entries, expected vocabSize ${this.vocabSize}`,
      );
    }
    if (!this.penalties.active && !this.bias.active) return logits;
    const z = scratch(this.vocabSize).z;
    z.set(logits);
    this.bias.apply(z);
    this.penalties.apply(z);
    this.bias.suppress(z);
    return z;
  }

  private plan(z: Float32Array): Plan {
    const v = this.vocabSize;
    let max = Number.NEGATIVE_INFINITY;
    let arg = 0;
    for (let i = 0; i < v; i++) {
      const x = z[i]!;
      if (x > max) {
        max = x;
        arg = i;
      }
    }
    if (!Number.isFinite(max)) {
      fail(
        'TF_ERR_RUNTIME',
        `logits row has no finite maximum (max ${max}): all -Infinity, or +Infinity/NaN`,
      );
    }

    if (this.greedy) {
      this.setLse(max, sumExp(z, v, max));
      return { kind: 'greedy', token: arg };
    }

    // One fused pass: weights at temperature T, their sum and, for top-k or top-p, a histogram
    // (token counts for top-k, mass for top-p) that sizes the pool.
    const s = scratch(v);
    const { w, ids, pw, hist } = s;
    const inv = this.invTemp;
    const k = this.topK;
    const binned = k > 0 || this.topP < 1;
    if (binned) hist.fill(0);
    const scaled = inv !== 1;
    let sum = 0;
    let sum1 = 0; // at temperature 1, for the logprobs
    for (let i = 0; i < v; i++) {
      const d = z[i]! - max;
      const x = d * inv;
      const e = expNeg(x);
      w[i] = e;
      sum += e;
      if (scaled) sum1 += expNeg(d);
      if (binned) {
        const y = -x * Math.LOG2E;
        const b = y < BINS - 1 ? y | 0 : BINS - 1; // -Infinity lands in the last bin
        hist[b] = hist[b]! + (k > 0 ? 1 : e);
      }
    }
    this.setLse(max, scaled ? sum1 : sum);
    if (!this.filtering) return { kind: 'all', sum };

    // The inflated target keeps rounding from choosing a bin one short of the needed mass.
    const tau =
      k > 0 ? poolThreshold(hist, k) : binned ? poolThreshold(hist, this.topP * sum * (1 + 1e-9)) : this.minP;
    let n = 0;
    for (let i = 0; i < v; i++) {
      const e = w[i]!;
      if (e >= tau) {
        ids[n] = i;
        pw[n++] = e;
      }
    }

    // Cut in (weight desc, id asc) order; the initial cut keeps everything.
    let cut: Cut = { value: -1, ties: 0 };
    const sel = s.sel;
    sel.set(pw.subarray(0, n));
    let m = n;
    if (k > 0) {
      invariant(n >= k, `top-k pool of ${n} tokens is smaller than k = ${k}`);
      cut = topKCut(sel, n, k);
      m = k;
    }
    if (this.topP < 1) {
      let total = sum;
      if (k > 0) {
        total = 0;
        for (let j = 0; j < m; j++) total += sel[j]!;
      }
      cut = topPCut(sel, m, this.topP * total);
    }

    // Compact the pool in place to the survivors, still in id order (ties go to the lowest ids).
    const minW = this.minP;
    let ties = cut.ties;
    let kept = 0;
    let keptSum = 0;
    for (let j = 0; j < n; j++) {
      const e = pw[j]!;
      if (e < minW) continue;
      if (e < cut.value) continue;
      if (e === cut.value) {
        if (ties === 0) continue;
        ties--;
      }
      ids[kept] = ids[j]!;
      pw[kept++] = e;
      keptSum += e;
    }
    return { kind: 'pool', n: kept, sum: keptSum };
  }

  private setLse(max: number, sum: number): void {
    this.lse = max + Math.log(sum);
    if (!Number.isFinite(this.lse)) fail('TF_ERR_RUNTIME', 'logits row contains NaN');
  }
}

/** Σ exp(z - max): the softmax denominator at temperature 1, for the logprobs. */
function sumExp(z: Float32Array, v: number, max: number): number {
  let sum = 0;
  for (let i = 0; i < v; i++) sum += expNeg(z[i]! - max);
  return sum;
}

function rankOf(z: Float32Array, v: number, x: number): number {
  let r = 1;
  for (let i = 0; i < v; i++) if (z[i]! > x) r++;
  return r;
}

/** The n largest logprobs by one pass with a small sorted buffer (n ≤ 20): O(V + hits·n). */
function topN(z: Float32Array, v: number, n: number, lse: number): TokenLogprob[] {
  if (n === 0) return [];
  const vals = new Float64Array(n);
  const ids = new Int32Array(n);
  let count = 0;
  let floor = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < v; i++) {
    const x = z[i]!;
    // Strict: among equal values the earlier (lower) id stays.
    if (count === n && !(x > floor)) continue;
    let j = count < n ? count++ : n - 1;
    while (j > 0 && vals[j - 1]! < x) {
      vals[j] = vals[j - 1]!;
      ids[j] = ids[j - 1]!;
      j--;
    }
    vals[j] = x;
    ids[j] = i;
    floor = vals[count - 1]!;
  }
  const out: TokenLogprob[] = [];
  for (let j = 0; j < count; j++) out.push({ token: ids[j]!, logprob: vals[j]! - lse });
  return out;
}

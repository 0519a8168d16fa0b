import { fail } from '../../util/errors.ts';
import { expNeg } from './fastexp.ts';
import type { SamplingParams } from './params.ts';
import { Penalties } from './penalties.ts';
import { Rng } from './rng.ts';
import { type Cut, topKCut, topPCut } from './select.ts';

/**
 * One sampler per sequence, called once per step on that sequence's row of logits:
 *   penalties (logits processor) → temperature → top-k → top-p → min-p → argmax or one draw.
 * Temperature and the three filters are fused into the softmax pass because each stage on its
 * own would be another O(V) pass; only top-k/top-p select, over the tokens that can matter.
 *
 * Logprobs are the log-softmax of the penalised logits at temperature 1, before top-k/top-p/
 * min-p: what the brief calls vLLM's default. Doubt: vLLM v1's default (`raw_logprobs`) is taken
 * before penalties too, so the two differ only when a penalty is set. They describe the model's
 * distribution, so a token drawn at temperature 1.5 can carry a low logprob.
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
 * Weights below this (relative to the max weight, 1) are left out of the selection pool. The pool
 * is always a prefix in weight order; if it cannot hold the answer (fewer than top_k tokens,
 * mass < top_p, min_p below it) the whole vocabulary is used instead, so results are exact.
 * With V = 50k the tokens left out weigh < 0.003 of the max, so top_p ≤ 0.997 never falls back.
 */
const POOL_MIN = 2 ** -24;

interface Scratch {
  z: Float32Array; // penalised logits
  w: Float64Array; // unnormalised weights exp((z - max) / T), max weight 1
  ids: Int32Array; // pool token ids, ascending
  pw: Float64Array; // pool weights, aligned with ids
  sel: Float64Array; // pool weights permuted by the selection
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
    };
  }
  return shared;
}

/** What to draw from: the argmax, all of s.w, or the first `n` of s.ids/s.pw. */
type Plan =
  | { kind: 'greedy'; token: number }
  | { kind: 'all'; sum: number }
  | { kind: 'pool'; n: number; sum: number };

export class Sampler {
  readonly rng: Rng;
  private readonly penalties: Penalties;
  private readonly greedy: boolean;
  private readonly invTemp: number;
  private readonly topK: number; // 0 = off
  private readonly topP: number; // 1 = off
  private readonly minP: number; // 0 = off
  private readonly filtering: boolean;
  /** Set by plan(): row max and log-sum-exp of the penalised logits at temperature 1. */
  private lse = 0;

  constructor(
    private readonly params: SamplingParams,
    promptTokens: readonly number[],
    readonly vocabSize: number,
  ) {
    if (!Number.isSafeInteger(vocabSize) || vocabSize < 1) {
      fail('TF_ERR_BAD_ARGS', `vocabSize must be a positive integer, got ${vocabSize}`);
    }
    for (const t of promptTokens) this.checkToken(t, 'prompt token');
    this.rng = new Rng(params.seed);
    this.penalties = new Penalties(params, promptTokens);
    this.greedy = params.temperature === 0 || params.top_k === 1;
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

  /**
   * The exact distribution sample() draws from for this row (after penalties, temperature and
   * filters), as probabilities over the vocabulary; greedy gives a one-hot. For tests and
   * debugging; allocates.
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
    if (!this.penalties.active) return logits;
    const z = scratch(this.vocabSize).z;
    z.set(logits);
    this.penalties.apply(z);
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
      let sum = 0;
      for (let i = 0; i < v; i++) sum += expNeg(z[i]! - max);
      this.setLse(max, sum);
      return { kind: 'greedy', token: arg };
    }

    // One fused pass: weights at temperature T, their sum, the temperature-1 sum for the
    // logprobs, and the pool of tokens heavy enough to matter for the filters.
    const s = scratch(v);
    const w = s.w;
    const ids = s.ids;
    const pw = s.pw;
    const inv = this.invTemp;
    const pool = this.filtering;
    let sum = 0;
    let sum1 = 0;
    let poolMass = 0;
    let n = 0;
    if (inv === 1) {
      for (let i = 0; i < v; i++) {
        const e = expNeg(z[i]! - max);
        w[i] = e;
        sum += e;
        if (pool && e >= POOL_MIN) {
          ids[n] = i;
          pw[n++] = e;
          poolMass += e;
        }
      }
      sum1 = sum;
    } else {
      for (let i = 0; i < v; i++) {
        const d = z[i]! - max;
        const e = expNeg(d * inv);
        w[i] = e;
        sum += e;
        sum1 += expNeg(d);
        if (pool && e >= POOL_MIN) {
          ids[n] = i;
          pw[n++] = e;
          poolMass += e;
        }
      }
    }
    this.setLse(max, sum1);
    if (!pool) return { kind: 'all', sum };

    const k = this.topK;
    const short = k > 0 ? n < k : this.topP < 1 ? poolMass < this.topP * sum : this.minP < POOL_MIN;
    if (short) {
      n = v;
      for (let i = 0; i < v; i++) ids[i] = i;
      pw.set(w.subarray(0, v));
    }

    // Cut in (weight desc, id asc) order; the initial cut keeps everything.
    let cut: Cut = { value: -1, ties: 0 };
    const sel = s.sel;
    sel.set(pw.subarray(0, n));
    let m = n;
    if (k > 0) {
      cut = topKCut(sel, n, k);
      m = k;
    }
    if (this.topP < 1) {
      let mass = 0;
      if (k > 0) for (let j = 0; j < m; j++) mass += sel[j]!;
      else mass = sum;
      cut = topPCut(sel, m, this.topP * mass);
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

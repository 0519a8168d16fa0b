import type { SampleResult, Sampler } from './sampling/sampler.ts';

/**
 * Speculative decoding with a draft model (for a grown TokenFormer, its parent). Per step the
 * draft proposes k tokens per sequence, the target scores [pending, d1..dk] in one decoder run
 * (logits at every position), and the longest acceptable prefix plus one token of the target's
 * own is emitted; both KV caches drop what was rejected.
 *
 * Exact: greedy acceptance compares the target's own argmax with the draft token, so the output
 * is token for token what decoding without a draft gives (logprobs too: they come from the
 * target's logits at each position). With temperature > 0 the standard rule keeps the target's
 * distribution: accept d ~ q with probability min(1, p(d)/q(d)), else draw from the normalised
 * max(0, p − q); when all k are accepted the extra token is drawn from p. p and q are the full
 * processed distributions (penalties, temperature, top-k/top-p/min-p) of target and draft.
 *
 * k adapts (1..maxDraft) to the measured acceptance and step times; speculation turns itself
 * off when it does not pay (batches above `maxBatch`, where verification is no longer nearly
 * free, or a measured speed-up below 1) and probes now and then to notice when it would again.
 */

/** What speculation needs from a model; ModelRunner implements it. */
export interface SpecModel {
  readonly vocabSize: number;
  /** The decoder returns logits at chosen positions (ModelRunner.canVerify). */
  readonly canVerify: boolean;
  addSequence(): number;
  prefill(id: number, tokens: readonly number[], chunkSize?: number): Promise<Float32Array>;
  decode(ids: readonly number[], tokens: readonly number[]): Promise<Float32Array>;
  extend(
    ids: readonly number[],
    rows: readonly (readonly number[])[],
    logits: 'last' | 'all',
  ): Promise<Float32Array>;
  truncate(id: number, length: number): void;
  length(id: number): number;
  release(id: number): void;
}

/** A running sequence as the speculator sees it (the scheduler owns it). */
export interface SpecSequence {
  /** The target model's sequence id. */
  readonly runnerId: number;
  /** Every token of the sequence: the target has cached all but the last, which is fed next. */
  readonly fed: readonly number[];
  /** The sequence's sampler (the target's processing and its random stream). */
  readonly sampler: Sampler;
  /** The draft model's sequence and a sampler that processes its logits like the target's. */
  readonly draft: { id: number; sampler: Sampler } | undefined;
  /** The most tokens this step may emit (max_tokens and context left). */
  readonly budget: number;
}

/** How the speculator reaches the scheduler's sequences. */
export interface SpecHooks<S> {
  /** Whether a sequence still runs (a cancel can arrive while a run is in flight). */
  alive(s: S): boolean;
  /** Records one emitted token with what the target's logits say of it; false once finished. */
  take(s: S, r: SampleResult): boolean;
  /** The sequence's sampling failed (its parameters, its logits): end it, not the step. */
  fail(s: S, err: unknown): void;
}

export interface SpecStats {
  drafted: number;
  accepted: number;
}

export interface SpeculatorOptions {
  /** Most tokens drafted per step (k ≤ this). */
  maxDraft?: number;
  /** Batches larger than this decode without a draft. */
  maxBatch?: number;
  /** Always draft this many (no adaptation, no batch limit): tests and benches. */
  fixedK?: number;
}

export const DEFAULT_MAX_DRAFT = 8;
export const DEFAULT_SPEC_MAX_BATCH = 4;
/**
 * While speculation does not pay, a step now and then speculates (with PROBE_K drafts) to
 * re-measure it: first after PROBE_EVERY steps, then, while probes keep finding that it does not
 * pay, twice as long each time up to MAX_PROBE_EVERY. Rare and short: a probe first catches the
 * draft up on every token since the last one (a prefill), so frequent probes cost more than they
 * could find (measured: one in 32 took a fifth off models/default-grown's plain speed).
 */
const PROBE_EVERY = 128;
const MAX_PROBE_EVERY = 4096;
const PROBE_K = 2;
/** While speculating, one step in this many decodes plainly to re-measure the reference. */
const REMEASURE_EVERY = 64;
/** Weight of the newest measurement in the running averages of times. */
const EMA = 0.2;
/** Steps of each kind whose times are not taken (the first runs at new shapes are slow). */
const WARMUP_STEPS = 2;
/** Per-step decay of the acceptance counts (a window of some 50 steps). */
const DECAY = 0.98;

/** Draws an index from unnormalised non-negative weights with one uniform u ∈ [0, 1). */
export function drawFrom(weights: Float64Array, u: number): number {
  let sum = 0;
  for (let i = 0; i < weights.length; i++) sum += weights[i]!;
  const target = u * sum;
  let acc = 0;
  let last = -1;
  for (let i = 0; i < weights.length; i++) {
    const w = weights[i]!;
    if (w <= 0) continue;
    acc += w;
    last = i;
    if (acc > target) return i;
  }
  return last; // rounding at the top end
}

/**
 * The rejection rule for one drafted token `d` drawn from q, under the target's p: accepted with
 * probability min(1, p(d)/q(d)); rejected, the token is drawn from the normalised max(0, p − q).
 * `u` gives uniforms in [0, 1). The result is distributed exactly as p.
 */
export function acceptOrResample(
  p: Float64Array,
  q: Float64Array,
  d: number,
  u: () => number,
): { token: number; accepted: boolean } {
  const pd = p[d]!;
  const qd = q[d]!;
  if (qd > 0 && (pd >= qd || u() * qd < pd)) return { token: d, accepted: true };
  const residual = new Float64Array(p.length);
  let mass = 0;
  for (let i = 0; i < p.length; i++) {
    const r = p[i]! - q[i]!;
    if (r > 0) {
      residual[i] = r;
      mass += r;
    }
  }
  // No residual mass means p ≤ q everywhere, i.e. p = q: a rejection cannot happen then except
  // through rounding, and p itself is the right distribution.
  return { token: drawFrom(mass > 0 ? residual : p, u()), accepted: false };
}

/** Expected tokens one step emits with k drafts at per-token acceptance a (the bonus included). */
function expectedTokens(a: number, k: number): number {
  return a >= 1 ? k + 1 : (1 - a ** (k + 1)) / (1 - a);
}

/**
 * Chooses k from running averages of the acceptance rate and of the time of one draft run, of
 * a plain decode step, and of what verification adds per drafted position over a plain step.
 */
export class AdaptiveK {
  /** Decayed counts of drafts checked and accepted; the prior is one step of 4 accepted of 5. */
  private checked = 5;
  private acceptedSum = 4;
  private draftMs: number | undefined;
  private plainMs: number | undefined;
  private extraMs = 0;
  private steps = 0;
  /** Steps between probes now, and the step of the last decision to speculate. */
  private probeEvery = PROBE_EVERY;
  private lastSpec = 0;
  /** Whether the last choice found a k that pays (false: probing only). */
  private paying = true;
  private specSeen = 0;
  private plainSeen = 0;
  private k: number;

  constructor(
    readonly maxDraft: number,
    readonly maxBatch: number,
    private readonly fixed?: number,
  ) {
    this.k = fixed ?? Math.min(4, maxDraft);
  }

  /** Per-token acceptance: accepted over drafts the target checked (accepted or rejected). */
  get acceptance(): number {
    return this.acceptedSum / this.checked;
  }

  /** Drafts per sequence for a batch of `batch` this step; 0 decodes without the draft. */
  choose(batch: number): number {
    if (this.fixed !== undefined) return this.fixed;
    if (batch > this.maxBatch || this.maxDraft < 1) return 0;
    this.steps++;
    // Plain steps first: the reference time.
    if (this.plainMs === undefined) return 0;
    if (this.draftMs === undefined) return this.k;
    let best = 0;
    let bestGain = 1; // plain decoding: one token per plainMs
    for (let k = 1; k <= this.maxDraft; k++) {
      const stepMs = k * this.draftMs + this.plainMs + k * this.extraMs;
      const gain = (expectedTokens(this.acceptance, k) * this.plainMs) / stepMs;
      if (gain > bestGain) {
        best = k;
        bestGain = gain;
      }
    }
    // Not paying now: probe now and then, since acceptance depends on the text; less often while
    // the probes keep saying no.
    if (best === 0) {
      // The first probe after speculation stopped paying comes after PROBE_EVERY steps.
      if (this.paying) this.probeEvery = PROBE_EVERY;
      this.paying = false;
      if (this.steps - this.lastSpec < this.probeEvery) return 0;
      this.lastSpec = this.steps;
      const k = Math.min(PROBE_K, this.maxDraft);
      this.probeEvery = Math.min(2 * this.probeEvery, MAX_PROBE_EVERY);
      return k;
    }
    this.paying = true;
    this.lastSpec = this.steps;
    // While speculating, a plain step now and then keeps the reference time current (batch
    // sizes change); when it does not pay, every step but the probes is plain anyway.
    if (this.steps % REMEASURE_EVERY === 0) return 0;
    this.k = best;
    return best;
  }

  /**
   * After a speculative step with k drafts: drafts accepted and rejected (those after a
   * rejection were never checked), one draft run's time and the verify run's.
   */
  recordSpec(k: number, accepted: number, rejected: number, draftRunMs: number, verifyMs: number): void {
    this.checked = this.checked * DECAY + accepted + rejected;
    this.acceptedSum = this.acceptedSum * DECAY + accepted;
    // The first runs at new shapes are slow (onnxruntime plans them): not what a step costs.
    if (++this.specSeen <= WARMUP_STEPS) return;
    this.draftMs = this.draftMs === undefined ? draftRunMs : ema(this.draftMs, draftRunMs);
    if (this.plainMs !== undefined && k > 0)
      this.extraMs = ema(this.extraMs, Math.max(0, verifyMs - this.plainMs) / k);
  }

  /** After a plain decode step. */
  recordPlain(ms: number): void {
    if (++this.plainSeen <= WARMUP_STEPS) return;
    this.plainMs = this.plainMs === undefined ? ms : ema(this.plainMs, ms);
  }

  get state(): { k: number; acceptance: number } {
    return { k: this.k, acceptance: this.acceptance };
  }

  /**
   * Whether the draft is in use: drafting, or not yet measured. While it is not, the draft need
   * not follow prompts as they are prefilled; a probe catches it up.
   */
  get drafting(): boolean {
    return this.fixed !== undefined || this.draftMs === undefined || this.paying;
  }
}

/**
 * CPU time of this process in ms: what k is chosen by. Wall time on a shared machine swings by
 * 2× between identical runs with other processes' load, which made the choice noise; CPU time
 * keeps the draft/target cost ratio that matters (onnxruntime's threads are in this process).
 */
export function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

function ema(old: number, x: number): number {
  return old + EMA * (x - old);
}

/**
 * Runs speculative steps for a scheduler: owns the draft model's sequences (one per target
 * sequence), keeps them in step with the target's tokens, and hands each emitted token to the
 * scheduler's `take`, which records it and says whether the sequence goes on.
 */
export class Speculator {
  readonly adaptive: AdaptiveK;
  readonly totals: SpecStats = { drafted: 0, accepted: 0 };

  constructor(
    readonly target: SpecModel,
    readonly draft: SpecModel,
    opts: SpeculatorOptions = {},
  ) {
    this.adaptive = new AdaptiveK(
      opts.maxDraft ?? DEFAULT_MAX_DRAFT,
      opts.maxBatch ?? DEFAULT_SPEC_MAX_BATCH,
      opts.fixedK,
    );
  }

  /** A draft sequence for a new target sequence; undefined when the draft has no free slot. */
  admit(): number | undefined {
    try {
      return this.draft.addSequence();
    } catch {
      return undefined;
    }
  }

  release(draftId: number): void {
    try {
      this.draft.release(draftId);
    } catch {
      // already gone (released twice through cancel and finish): nothing to free
    }
  }

  /** One speculative step over `seqs` with up to `k` drafts each (see SpecHooks). */
  async step<S extends SpecSequence>(seqs: readonly S[], k: number, hooks: SpecHooks<S>): Promise<SpecStats> {
    const { alive, take } = hooks;
    const v = this.draft.vocabSize;
    const ks = seqs.map((s) => (s.draft ? Math.max(0, Math.min(k, s.budget - 1)) : 0));
    const drafts: number[][] = seqs.map(() => []);
    const qs: Float64Array[][] = seqs.map(() => []);
    // Draft: catch up on the tokens it has not seen (the pending one at least), then propose.
    let draftRuns = 0;
    let drafting = seqs.map((_, j) => j).filter((j) => ks[j]! > 0);
    const missing = new Map<number, number[]>();
    for (const j of drafting) {
      const s = seqs[j]!;
      if (!alive(s)) continue;
      let m = s.fed.slice(this.draft.length(s.draft!.id));
      if (m.length > 2) {
        // Far behind (a moved stream, or steps decoded without the draft): prefill it once.
        await this.draft.prefill(s.draft!.id, m.slice(0, -1));
        m = m.slice(-1);
      }
      missing.set(j, m);
    }
    drafting = drafting.filter((j) => alive(seqs[j]!));
    const started = cpuMs(); // a catch-up prefill is not what a draft run costs
    let logits =
      drafting.length > 0
        ? await this.draft.extend(
            drafting.map((j) => seqs[j]!.draft!.id),
            drafting.map((j) => missing.get(j)!),
            'last',
          )
        : new Float32Array(0);
    draftRuns++;
    for (let i = 0; drafting.length > 0; i++) {
      const next: number[] = [];
      drafting.forEach((j, row) => {
        const s = seqs[j]!;
        const ds = s.draft!.sampler;
        const lg = logits.subarray(row * v, (row + 1) * v);
        let d: number;
        if (s.sampler.isGreedy) d = ds.sample(lg).token;
        else {
          const q = ds.distribution(lg);
          d = drawFrom(q, s.sampler.rng.nextFloat());
          qs[j]!.push(q);
        }
        drafts[j]!.push(d);
        if (i + 1 < ks[j]!) next.push(j);
      });
      drafting = next.filter((j) => alive(seqs[j]!));
      if (drafting.length === 0) break;
      logits = await this.draft.decode(
        drafting.map((j) => seqs[j]!.draft!.id),
        drafting.map((j) => drafts[j]!.at(-1)!),
      );
      draftRuns++;
    }
    const draftMs = (cpuMs() - started) / Math.max(1, draftRuns);
    // Verify: every live sequence feeds [pending, d1..dk] and gets logits at each position.
    const live = seqs.map((_, j) => j).filter((j) => alive(seqs[j]!));
    const stats: SpecStats = { drafted: 0, accepted: 0 };
    if (live.length === 0) return stats;
    const verifyStarted = cpuMs();
    const target = await this.target.extend(
      live.map((j) => seqs[j]!.runnerId),
      live.map((j) => [seqs[j]!.fed.at(-1)!, ...drafts[j]!]),
      'all',
    );
    const verifyMs = cpuMs() - verifyStarted;
    let offset = 0;
    let rejected = 0; // drafts the target decided against (the rest after one went unchecked)
    for (const j of live) {
      const s = seqs[j]!;
      const d = drafts[j]!;
      const base = offset;
      offset += d.length + 1;
      if (!alive(s)) continue;
      const before = s.fed.length; // the target held before − 1 tokens, and now before + d.length
      let emitted = 0;
      let going = true;
      stats.drafted += d.length;
      try {
        for (let i = 0; i <= d.length && going; i++) {
          const row = target.subarray((base + i) * v, (base + i + 1) * v);
          let r: SampleResult;
          let accepted = false;
          if (i === d.length) r = s.sampler.sample(row);
          else if (s.sampler.isGreedy) {
            r = s.sampler.sample(row);
            accepted = r.token === d[i];
          } else {
            const res = acceptOrResample(s.sampler.distribution(row), qs[j]![i]!, d[i]!, () =>
              s.sampler.rng.nextFloat(),
            );
            r = s.sampler.describe(row, res.token);
            accepted = res.accepted;
          }
          if (accepted) stats.accepted++;
          else if (i < d.length) rejected++;
          emitted++;
          going = take(s, r) && accepted;
        }
      } catch (err) {
        hooks.fail(s, err);
      }
      if (!alive(s)) continue; // finished: its sequences are released
      // Roll back what was not kept: the target keeps before − 1 + emitted tokens, the draft
      // the accepted drafts it had fed (it never fed the last one).
      this.target.truncate(s.runnerId, before - 1 + emitted);
      if (s.draft) {
        const fedToDraft = this.draft.length(s.draft.id);
        this.draft.truncate(s.draft.id, Math.min(fedToDraft, before + emitted - 1));
      }
    }
    this.totals.drafted += stats.drafted;
    this.totals.accepted += stats.accepted;
    this.adaptive.recordSpec(k, stats.accepted, rejected, draftMs, verifyMs);
    return stats;
  }
}

import { fail } from '../util/errors.ts';
import type { KvSnapshot } from './kv-cache.ts';
import type { Detached, FinishReason, GeneratedToken, MovedSequence, SequenceUpdate } from './protocol.ts';
import type { SamplingParams } from './sampling/params.ts';
import { type SampleResult, Sampler } from './sampling/sampler.ts';
import { cpuMs, type SpecSequence, type Speculator } from './speculative.ts';

/**
 * Continuous batching (vLLM v1 style): `add` queues a request, `step()` runs one scheduler step
 * and returns what each sequence produced, `cancel` ends one. A step admits waiting requests
 * while KV slots are free, prefills at most `prefillChunk` prompt tokens (long prompts take
 * several steps, so running sequences keep decoding in between), then decodes one token for
 * every running sequence in one batched run. Finished and cancelled sequences free their slot
 * at once. With a Speculator (a draft model), the decode step drafts and verifies several
 * tokens per sequence instead (src/engine/speculative.ts), when that pays.
 */

/** What the scheduler needs from the model (ModelRunner implements it). */
export interface DecodeModel {
  readonly vocabSize: number;
  readonly config: { max_seq_len: number };
  addSequence(): number;
  /** Starts a sequence from another model's KV cache (a lossless hot swap). */
  addSequenceFrom(snap: KvSnapshot): number;
  snapshot(id: number): KvSnapshot;
  prefill(id: number, tokens: readonly number[], chunkSize?: number): Promise<Float32Array>;
  decode(ids: readonly number[], tokens: readonly number[]): Promise<Float32Array>;
  release(id: number): void;
}

type Status = 'waiting' | 'prefilling' | 'running';

interface Sequence {
  id: number;
  prompt: number[];
  /** The prompt and every generated token: the target has cached all but the pending one. */
  tokens: number[];
  /** Its sequence in the draft model, and a sampler for the draft's logits. */
  draft?: { id: number; sampler: Sampler };
  params: SamplingParams;
  sampler: Sampler;
  status: Status;
  arrived: number;
  /** The runner's sequence id once admitted. */
  runnerId?: number;
  /** Prompt tokens already prefilled. */
  prefilled: number;
  /** The sampled token not yet fed to the model. */
  pending?: number;
  generated: number;
  /** Moved from another model: how many of the prompt's last tokens it generated there. */
  carried: number;
  /** Moved from another model: the KV cache of all prompt tokens but the last, which is pending. */
  resume?: KvSnapshot;
}

interface Detach {
  id: number;
  withKv: boolean;
  done: (d: Detached) => void;
}

export interface SchedulerOptions {
  maxSequences: number;
  maxQueue: number;
  prefillChunk: number;
  eosTokenId: number | null;
}

export interface StepResult {
  updates: SequenceUpdate[];
  admitted: { id: number; queueMs: number }[];
}

export class Scheduler {
  private readonly waiting: Sequence[] = [];
  private readonly active = new Map<number, Sequence>();
  private detaching: Detach[] = [];

  constructor(
    private readonly model: DecodeModel,
    private readonly opts: SchedulerOptions,
    private readonly spec?: Speculator,
  ) {}

  get runningCount(): number {
    return this.active.size;
  }
  get waitingCount(): number {
    return this.waiting.length;
  }
  get idle(): boolean {
    return this.active.size === 0 && this.waiting.length === 0 && this.detaching.length === 0;
  }

  /**
   * Queues a request; refuses it when the queue is full or the prompt cannot fit. A `moved`
   * stream (from another model) is never refused for a full queue — dropping it would break a
   * stream the server already took; with `moved.kv` the prompt's last token is the one to feed
   * next and the snapshot holds the cache of all tokens before it: no prefill.
   */
  add(id: number, prompt: number[], params: SamplingParams, moved?: MovedSequence): void {
    const resume = moved?.kv;
    // Requests that free slots will take at the next step do not count as queued.
    const freeSlots = Math.max(0, this.opts.maxSequences - this.active.size);
    if (!moved && this.waiting.length >= this.opts.maxQueue + freeSlots) {
      fail('TF_ERR_QUEUE_FULL', `the queue is full (${this.opts.maxQueue} requests waiting); retry later`);
    }
    const max = this.model.config.max_seq_len;
    if (prompt.length === 0) fail('TF_ERR_BAD_ARGS', 'the prompt is empty');
    if (prompt.length >= max) {
      fail(
        'TF_ERR_CONTEXT_LENGTH',
        `This model's maximum context length is ${max} tokens. However, the prompt has ${prompt.length} tokens, which leaves no room for a completion (at least one token).`,
      );
    }
    const carried = moved?.generated ?? 0;
    if (!Number.isSafeInteger(carried) || carried < 0 || carried >= prompt.length)
      fail('TF_ERR_BAD_ARGS', `${carried} generated tokens do not fit a ${prompt.length}-token prompt`);
    if (resume && resume.length !== prompt.length - 1)
      fail(
        'TF_ERR_BAD_ARGS',
        `a KV snapshot of ${resume.length} positions does not fit a ${prompt.length}-token prompt`,
      );
    const sampler = new Sampler(params, prompt, this.model.vocabSize, this.opts.eosTokenId, {
      generated: carried,
      ...(moved?.rng ? { rng: moved.rng } : {}),
    });
    this.waiting.push({
      id,
      prompt,
      tokens: [...prompt],
      params,
      sampler,
      status: 'waiting',
      arrived: performance.now(),
      prefilled: 0,
      generated: 0,
      carried,
      ...(resume ? { resume } : {}),
    });
  }

  /**
   * Ends a request at the next token boundary (the start of the next step) and hands over its KV
   * cache when `withKv` and it has one (it is decoding; else null) and its random stream's state.
   * Unknown ids: nothing.
   */
  detach(id: number, withKv: boolean): Promise<Detached> {
    if (!this.active.has(id) && !this.waiting.some((s) => s.id === id)) return Promise.resolve({ kv: null });
    return new Promise((done) => this.detaching.push({ id, withKv, done }));
  }

  /** A moved KV cache that does not fit this model (it should not happen) is prefilled instead. */
  private resume(snap: KvSnapshot): number | undefined {
    try {
      return this.model.addSequenceFrom(snap);
    } catch {
      return undefined;
    }
  }

  private takeDetached(): void {
    for (const d of this.detaching.splice(0)) {
      const s = this.active.get(d.id) ?? this.waiting.find((w) => w.id === d.id);
      const decoding = s?.status === 'running' && s.pending !== undefined;
      const kv = d.withKv && decoding ? this.model.snapshot(s.runnerId!) : null;
      this.cancel(d.id);
      d.done({ kv, ...(s ? { rng: s.sampler.rng.state } : {}) });
    }
  }

  /** Ends a request now; its slot is free for the next step. Unknown ids are ignored. */
  cancel(id: number): void {
    const w = this.waiting.findIndex((s) => s.id === id);
    if (w >= 0) this.waiting.splice(w, 1);
    const s = this.active.get(id);
    if (s) this.retire(s);
  }

  private retire(s: Sequence): void {
    this.active.delete(s.id);
    if (s.runnerId !== undefined) this.model.release(s.runnerId);
    if (s.draft) this.spec?.release(s.draft.id);
    s.draft = undefined;
  }

  /** Samples a token for `s` from `logits`; returns the update and whether `s` is finished. */
  private emit(s: Sequence, logits: Float32Array, updates: SequenceUpdate[]): void {
    let r: SampleResult;
    try {
      r = s.sampler.sample(logits);
    } catch (err) {
      this.failed(s, err, updates);
      return;
    }
    const update: SequenceUpdate = { id: s.id, tokens: [] };
    updates.push(update);
    this.record(s, r, update);
  }

  /** One request's failure (its parameters, its logits) ends that request, not the worker. */
  private failed(s: Sequence, err: unknown, updates: SequenceUpdate[]): void {
    this.retire(s);
    const i = updates.findIndex((u) => u.id === s.id);
    if (i >= 0) updates.splice(i, 1); // tokens of this step not yet delivered go with it
    updates.push({ id: s.id, tokens: [], error: err instanceof Error ? err.message : String(err) });
  }

  /**
   * Appends a generated token to `s` and its update, ending `s` at end-of-text, max_tokens or
   * the context; returns whether it goes on.
   */
  private record(s: Sequence, r: SampleResult, update: SequenceUpdate): boolean {
    s.sampler.accept(r.token);
    s.draft?.sampler.accept(r.token);
    s.generated++;
    s.tokens.push(r.token);
    update.tokens.push({
      token: r.token,
      logprob: r.logprob,
      ...(r.rank ? { rank: r.rank } : {}),
      ...(r.top ? { top: r.top } : {}),
    } satisfies GeneratedToken);
    let finish: FinishReason | undefined;
    if (!s.params.ignore_eos && this.opts.eosTokenId !== null && r.token === this.opts.eosTokenId)
      finish = 'stop';
    else if (s.params.stop_token_ids.includes(r.token)) finish = 'stop';
    else if (s.generated >= s.params.max_tokens) finish = 'length';
    else if (s.prompt.length + s.generated >= this.model.config.max_seq_len) finish = 'length';
    if (finish) {
      update.finish = finish;
      this.retire(s);
      return false;
    }
    s.pending = r.token;
    return true;
  }

  /** A draft sequence for `s` when a draft model is loaded and `s` may use it. */
  private attachDraft(s: Sequence): void {
    // A seeded sampled request must give the same text with or without a draft, and speculation
    // consumes its random stream differently: only greedy or unseeded requests speculate.
    if (!this.spec || (!s.sampler.isGreedy && s.params.seed !== undefined)) return;
    const id = this.spec.admit();
    if (id === undefined) return;
    const sampler = new Sampler(s.params, s.prompt, this.model.vocabSize, this.opts.eosTokenId, {
      generated: s.carried,
    });
    s.draft = { id, sampler };
  }

  async step(): Promise<StepResult> {
    const updates: SequenceUpdate[] = [];
    const admitted: StepResult['admitted'] = [];
    this.takeDetached();
    // Admit while slots are free.
    while (this.waiting.length && this.active.size < this.opts.maxSequences) {
      const s = this.waiting.shift()!;
      const resumed = s.resume ? this.resume(s.resume) : undefined;
      s.resume = undefined;
      if (resumed !== undefined) {
        s.runnerId = resumed;
        s.prefilled = s.prompt.length;
        s.pending = s.prompt[s.prompt.length - 1];
        s.status = 'running';
      } else {
        s.runnerId = this.model.addSequence();
        s.status = 'prefilling';
      }
      this.attachDraft(s);
      this.active.set(s.id, s);
      admitted.push({ id: s.id, queueMs: performance.now() - s.arrived });
    }
    // One prefill chunk budget per step, oldest admitted first.
    let budget = this.opts.prefillChunk;
    for (const s of this.active.values()) {
      if (budget <= 0) break;
      if (s.status !== 'prefilling') continue;
      const chunk = s.prompt.slice(s.prefilled, s.prefilled + budget);
      const logits = await this.model.prefill(s.runnerId!, chunk, chunk.length);
      // The draft follows chunk by chunk while it is in use (one far behind, e.g. while drafting
      // does not pay, is caught up in one go when it drafts).
      if (s.draft && this.spec!.adaptive.drafting && this.active.has(s.id))
        await this.spec!.draft.prefill(s.draft.id, chunk, chunk.length);
      s.prefilled += chunk.length;
      budget -= chunk.length;
      if (s.prefilled === s.prompt.length) {
        s.status = 'running';
        if (this.active.has(s.id)) this.emit(s, logits, updates);
      }
    }
    // One decode step for every running sequence with a token to feed.
    const batch = [...this.active.values()].filter(
      (s) => s.status === 'running' && s.pending !== undefined && !updates.some((u) => u.id === s.id),
    );
    const k = batch.some((s) => s.draft) ? (this.spec?.adaptive.choose(batch.length) ?? 0) : 0;
    if (k > 0) await this.speculate(batch, k, updates);
    else if (batch.length) {
      const started = cpuMs();
      const logits = await this.model.decode(
        batch.map((s) => s.runnerId!),
        batch.map((s) => s.pending!),
      );
      this.spec?.adaptive.recordPlain(cpuMs() - started);
      const v = this.model.vocabSize;
      batch.forEach((s, j) => {
        if (this.active.has(s.id)) this.emit(s, logits.subarray(j * v, (j + 1) * v), updates);
      });
    }
    return { updates, admitted };
  }

  /** The decode step with the draft: up to k drafted tokens per sequence, verified in one run. */
  private async speculate(batch: Sequence[], k: number, updates: SequenceUpdate[]): Promise<void> {
    const max = this.model.config.max_seq_len;
    type Spec = SpecSequence & { seq: Sequence; update: SequenceUpdate };
    const seqs: Spec[] = batch.map((s) => ({
      seq: s,
      update: { id: s.id, tokens: [] },
      runnerId: s.runnerId!,
      fed: s.tokens,
      sampler: s.sampler,
      draft: s.draft,
      budget: Math.min(s.params.max_tokens - s.generated, max - s.prompt.length - s.generated),
    }));
    await this.spec!.step(seqs, k, {
      alive: (x) => this.active.has(x.seq.id),
      take: (x, r) => {
        if (!x.update.tokens.length) updates.push(x.update);
        return this.record(x.seq, r, x.update);
      },
      fail: (x, err) => this.failed(x.seq, err, updates),
    });
  }

  /** Tokens drafted and accepted so far (metrics). */
  get specTotals(): { drafted: number; accepted: number } {
    return { ...(this.spec?.totals ?? { drafted: 0, accepted: 0 }) };
  }
}

import { fail } from '../util/errors.ts';
import type { KvSnapshot } from './kv-cache.ts';
import type { FinishReason, GeneratedToken, MovedSequence, SequenceUpdate } from './protocol.ts';
import type { SamplingParams } from './sampling/params.ts';
import { Sampler } from './sampling/sampler.ts';

/**
 * Continuous batching (vLLM v1 style): `add` queues a request, `step()` runs one scheduler step
 * and returns what each sequence produced, `cancel` ends one. A step admits waiting requests
 * while KV slots are free, prefills at most `prefillChunk` prompt tokens (long prompts take
 * several steps, so running sequences keep decoding in between), then decodes one token for
 * every running sequence in one batched run. Finished and cancelled sequences free their slot
 * at once.
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
  /** Moved from another model: the KV cache of all prompt tokens but the last, which is pending. */
  resume?: KvSnapshot;
}

interface Detach {
  id: number;
  withKv: boolean;
  done: (snap: KvSnapshot | null) => void;
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
        `the prompt has ${prompt.length} tokens; the model's context is ${max} (prompt + at least one generated token)`,
      );
    }
    if (resume && resume.length !== prompt.length - 1)
      fail(
        'TF_ERR_BAD_ARGS',
        `a KV snapshot of ${resume.length} positions does not fit a ${prompt.length}-token prompt`,
      );
    const sampler = new Sampler(params, prompt, this.model.vocabSize, this.opts.eosTokenId);
    this.waiting.push({
      id,
      prompt,
      params,
      sampler,
      status: 'waiting',
      arrived: performance.now(),
      prefilled: 0,
      generated: 0,
      ...(resume ? { resume } : {}),
    });
  }

  /**
   * Ends a request at the next token boundary (the start of the next step) and hands over its KV
   * cache when `withKv` and it has one (it is decoding); otherwise null. Unknown ids: null.
   */
  detach(id: number, withKv: boolean): Promise<KvSnapshot | null> {
    if (!this.active.has(id) && !this.waiting.some((s) => s.id === id)) return Promise.resolve(null);
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
      const s = this.active.get(d.id);
      const decoding = s?.status === 'running' && s.pending !== undefined;
      const snap = d.withKv && decoding ? this.model.snapshot(s.runnerId!) : null;
      this.cancel(d.id);
      d.done(snap);
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
  }

  /** Samples a token for `s` from `logits`; returns the update and whether `s` is finished. */
  private emit(s: Sequence, logits: Float32Array, updates: SequenceUpdate[]): void {
    let r: ReturnType<Sampler['sample']>;
    try {
      r = s.sampler.sample(logits);
    } catch (err) {
      // One request's failure (its parameters, its logits) ends that request, not the worker.
      this.retire(s);
      updates.push({ id: s.id, tokens: [], error: err instanceof Error ? err.message : String(err) });
      return;
    }
    s.sampler.accept(r.token);
    s.generated++;
    const token: GeneratedToken = {
      token: r.token,
      logprob: r.logprob,
      ...(r.rank ? { rank: r.rank } : {}),
      ...(r.top ? { top: r.top } : {}),
    };
    let finish: FinishReason | undefined;
    if (!s.params.ignore_eos && this.opts.eosTokenId !== null && r.token === this.opts.eosTokenId)
      finish = 'stop';
    else if (s.params.stop_token_ids.includes(r.token)) finish = 'stop';
    else if (s.generated >= s.params.max_tokens) finish = 'length';
    else if (s.prompt.length + s.generated >= this.model.config.max_seq_len) finish = 'length';
    updates.push({ id: s.id, tokens: [token], ...(finish ? { finish } : {}) });
    if (finish) this.retire(s);
    else s.pending = r.token;
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
    if (batch.length) {
      const logits = await this.model.decode(
        batch.map((s) => s.runnerId!),
        batch.map((s) => s.pending!),
      );
      const v = this.model.vocabSize;
      batch.forEach((s, j) => {
        if (this.active.has(s.id)) this.emit(s, logits.subarray(j * v, (j + 1) * v), updates);
      });
    }
    return { updates, admitted };
  }
}

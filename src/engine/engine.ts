import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import type { Worker } from 'node:worker_threads';
import { MANIFEST_FILE, type Manifest, verifyExport } from '../export/export.ts';
import { checkTokenizerFits } from '../tokenizer/fit.ts';
import { Tokenizer } from '../tokenizer/tokenizer.ts';
import { type ErrorCode, fail, TokenFormerError } from '../util/errors.ts';
import { readJsonFile } from '../util/files.ts';
import { startWorker } from '../util/worker.ts';
import type {
  Detached,
  DraftConfig,
  EngineStats,
  FromWorker,
  GeneratedToken,
  MovedSequence,
  SequenceUpdate,
  ToWorker,
  WorkerConfig,
} from './protocol.ts';
import type { SamplingParams } from './sampling/params.ts';
import { type GenerationEvent, type TokenUpdate, textStream } from './text-stream.ts';

/**
 * The inference engine as the server sees it: `generate()` yields an AsyncIterable of text
 * deltas, cancelled by an AbortSignal (web-llm / ollama-js style). The model, its KV cache and
 * the continuous-batching scheduler live in a worker thread; this side holds the tokenizer,
 * turns token ids into text (never half a UTF-8 character) and matches stop strings on text.
 */

export interface EngineOptions {
  exportDir: string;
  /** The export's manifest, already checked by verifyExport (its files are not hashed again). */
  verified?: Manifest;
  device: 'auto' | 'cpu' | 'cuda';
  threads?: number;
  maxSequences: number;
  maxQueue: number;
  prefillChunk: number;
  /** A draft model for speculative decoding (see src/engine/draft.ts for how one is chosen). */
  draft?: DraftConfig;
}

/**
 * How many sequences the engine holds at once: decoding in KV slots, plus waiting. A request
 * that needs more sequences than both together could never be admitted.
 */
export interface EngineCapacity {
  maxSequences: number;
  maxQueue: number;
}

/** The draft model as loaded: its export, or why it is not used. */
export type DraftStatus =
  | { used: true; exportDir: string }
  | { used: false; exportDir: string; reason: string };

interface Stream {
  push(e: TokenUpdate | Error): void;
  update(u: SequenceUpdate): void;
  /** Ends the stream without a finish (the sequence was detached to move to another model). */
  end(): void;
}

/** A sequence's token stream; `detach` moves it off this engine (see Engine.tokens). */
export interface TokenStream extends AsyncIterable<TokenUpdate> {
  /**
   * Ends the sequence at the next token boundary: updates produced before it are still
   * delivered, then the stream ends without a finish. Resolves with the sequence's KV cache when
   * `withKv` and it was decoding (else null, also when it had already finished) and its random
   * stream's state.
   */
  detach(withKv: boolean): Promise<Detached>;
}

/**
 * Emits `admitted` (id, queueMs), `stats` (EngineStats) and `released` (id) for metrics and
 * draining, and `crash` (Error) when the worker dies without being asked to.
 */
export class Engine extends EventEmitter {
  private readonly streams = new Map<number, Stream>();
  private readonly detaching = new Map<number, (d: Detached) => void>();
  private readonly active = new Set<number>();
  private scored = false;
  private readonly scoring = new Map<
    number,
    { resolve(t: GeneratedToken[]): void; reject(e: Error): void }
  >();
  private nextId = 1;
  private latest: EngineStats = {
    running: 0,
    waiting: 0,
    kvUsage: 0,
    kvBytes: 0,
    kvBytesPerToken: 0,
    specDrafted: 0,
    specAccepted: 0,
  };
  private dead: Error | undefined;
  private closing = false;

  private constructor(
    private readonly worker: Worker,
    readonly manifest: Manifest,
    readonly tokenizer: Tokenizer,
    readonly device: 'cpu' | 'cuda',
    readonly fallbackReason: string | undefined,
    readonly capacity: EngineCapacity,
    /** The model's tokenizer_config.json (its chat template), when the export has one. */
    readonly tokenizerConfig: Record<string, unknown> | null = null,
    /** The draft model, when one was configured. */
    readonly draft: DraftStatus | undefined = undefined,
  ) {
    super();
    worker.on('message', (m: FromWorker) => this.onMessage(m));
    worker.on('error', (err) => this.die(err));
    worker.on('exit', (code) => this.die(new Error(`model worker exited (code ${code})`)));
  }

  /** Loads an export directory in a new worker; resolves once the model is ready. */
  static async start(opts: EngineOptions): Promise<Engine> {
    // Checksums: refuse a damaged model up front (once: the caller may have checked already).
    const manifest = opts.verified ?? (await verifyExport(opts.exportDir));
    if (!manifest.tokenizer)
      fail(
        'TF_ERR_BAD_CHECKPOINT',
        `${opts.exportDir}: the model has no tokenizer.json; it cannot serve text`,
      );
    const tokenizer = Tokenizer.fromFile(join(opts.exportDir, manifest.tokenizer.file));
    // Names without directories: load errors reach API clients (swap refusals).
    checkTokenizerFits(
      manifest.tokenizer.file,
      tokenizer.vocabSize,
      MANIFEST_FILE,
      manifest.model.vocab_size,
    );
    const tokenizerConfig = manifest.tokenizer_config
      ? readTokenizerConfig(join(opts.exportDir, manifest.tokenizer_config.file))
      : null;
    const { verified: _checked, ...workerOpts } = opts;
    const cfg: WorkerConfig = {
      ...workerOpts,
      eosTokenId: manifest.tokenizer.eos_token_id ?? tokenizer.eosTokenId,
    };
    const worker = startWorker(new URL('./worker.ts', import.meta.url), { workerData: cfg });
    let onMessage: ((m: FromWorker) => void) | undefined;
    let onError: ((err: Error) => void) | undefined;
    let onExit: ((code: number) => void) | undefined;
    const ready = await new Promise<Extract<FromWorker, { type: 'ready' }>>((resolve, reject) => {
      onMessage = (m) => {
        if (m.type === 'ready') resolve(m);
        else if (m.type === 'fatal')
          reject(new TokenFormerError('TF_ERR_RUNTIME', `model failed to load: ${m.message}`));
      };
      onError = reject;
      onExit = (code) =>
        reject(new TokenFormerError('TF_ERR_RUNTIME', `model worker exited during load (code ${code})`));
      worker.on('message', onMessage).on('error', onError).on('exit', onExit);
    }).finally(() => {
      // Only our listeners: removeAllListeners() would also drop the Worker's own.
      worker.off('message', onMessage!).off('error', onError!).off('exit', onExit!);
    });
    const capacity = { maxSequences: opts.maxSequences, maxQueue: opts.maxQueue };
    const draft: DraftStatus | undefined =
      opts.draft && ready.draft
        ? ready.draft.used
          ? { used: true, exportDir: opts.draft.exportDir }
          : { used: false, exportDir: opts.draft.exportDir, reason: ready.draft.reason }
        : undefined;
    return new Engine(
      worker,
      manifest,
      tokenizer,
      ready.device,
      ready.fallbackReason,
      capacity,
      tokenizerConfig,
      draft,
    );
  }

  get stats(): EngineStats {
    return this.latest;
  }

  get eosTokenId(): number | null {
    return this.manifest.tokenizer?.eos_token_id ?? this.tokenizer.eosTokenId;
  }

  private post(m: ToWorker, transfer: ArrayBuffer[] = []): void {
    this.worker.postMessage(m, transfer);
  }

  private die(err: Error): void {
    if (this.dead) return;
    this.dead = err;
    // Not asked to stop: the worker crashed (a supervisor restarts the model; see ModelRegistry).
    if (!this.closing) this.emit('crash', err);
    for (const s of this.streams.values()) s.push(new TokenFormerError('TF_ERR_RUNTIME', err.message));
    this.streams.clear();
    for (const done of this.detaching.values()) done({ kv: null });
    this.detaching.clear();
    for (const p of this.scoring.values()) p.reject(new TokenFormerError('TF_ERR_RUNTIME', err.message));
    this.scoring.clear();
  }

  private onMessage(m: FromWorker): void {
    switch (m.type) {
      case 'step':
        this.latest = m.stats;
        for (const u of m.updates) this.streams.get(u.id)?.update(u);
        this.emit('stats', m.stats);
        break;
      case 'queued':
        this.streams.get(m.id)?.push({ tokens: [], queued: true });
        break;
      case 'admitted':
        this.emit('admitted', m.id, m.queueMs);
        break;
      case 'rejected':
        this.streams.get(m.id)?.push(new TokenFormerError(m.code as ErrorCode, m.message));
        this.streams.delete(m.id);
        break;
      case 'detached':
        this.streams.get(m.id)?.end();
        this.streams.delete(m.id);
        this.detaching.get(m.id)?.(m.detached);
        this.detaching.delete(m.id);
        break;
      case 'scored':
        this.scoring.get(m.id)?.resolve(m.tokens);
        this.scoring.delete(m.id);
        break;
      case 'score-failed':
        this.scoring.get(m.id)?.reject(new TokenFormerError(m.code as ErrorCode, m.message));
        this.scoring.delete(m.id);
        break;
      case 'fatal':
        this.die(new Error(m.message));
        void this.worker.terminate(); // its loop has stopped; free the model
        break;
      case 'ready':
        break;
    }
  }

  /**
   * Generates from prompt token ids: text deltas (with their tokens and logprobs), then `done`.
   * Aborting the signal, or leaving the loop early, cancels the sequence; its KV slot is freed
   * at the next scheduler step.
   */
  generate(
    prompt: readonly number[],
    params: SamplingParams,
    signal?: AbortSignal,
  ): AsyncIterable<GenerationEvent> {
    return textStream(this.tokens(prompt, params, signal), {
      tokenizer: this.tokenizer,
      eosTokenId: this.eosTokenId,
      params,
      promptTokens: prompt.length,
    });
  }

  /** Whether prompt scoring was asked for: the worker then holds the full-sequence graph too. */
  get scorerOpened(): boolean {
    return this.scored;
  }

  /**
   * Scores a prompt in one full-sequence pass: for each token after the first, its logprob given
   * the tokens before it, its rank and the `top` likeliest alternatives (see Scorer).
   */
  score(prompt: readonly number[], top: number): Promise<GeneratedToken[]> {
    if (this.dead)
      throw new TokenFormerError('TF_ERR_RUNTIME', `the model worker is not running: ${this.dead.message}`);
    this.scored = true;
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.scoring.set(id, { resolve, reject });
      this.post({ type: 'score', id, prompt: [...prompt], top });
    });
  }

  /**
   * The raw token stream of one sequence (no text): what `generate` and migration build on.
   * `moved`: the stream comes from another model (never refused for a full queue); with
   * `moved.kv` it starts from that model's KV cache (a lossless move): the prompt's last token is
   * fed next and the snapshot holds the cache of every token before it.
   */
  tokens(
    prompt: readonly number[],
    params: SamplingParams,
    signal?: AbortSignal,
    moved?: MovedSequence,
  ): TokenStream {
    if (this.dead)
      throw new TokenFormerError('TF_ERR_RUNTIME', `the model worker is not running: ${this.dead.message}`);
    const id = this.nextId++;
    const queue: (TokenUpdate | Error)[] = [];
    let wake: (() => void) | undefined;
    let finished = false;
    const push = (e: TokenUpdate | Error) => {
      queue.push(e);
      wake?.();
    };
    // The sequence is over in the worker (finished, cancelled or detached): this engine owes the
    // stream nothing more, even if its consumer has not read the last updates (drains wait on it).
    const release = () => {
      signal?.removeEventListener('abort', cancel);
      if (this.active.delete(id)) this.emit('released', id);
    };
    this.streams.set(id, {
      push,
      update: (u) => {
        if (finished) return;
        if (u.error !== undefined) {
          finished = true;
          this.streams.delete(id);
          release();
          push(new TokenFormerError('TF_ERR_RUNTIME', `generation failed: ${u.error}`));
          return;
        }
        if (u.finish) {
          finished = true;
          this.streams.delete(id);
          release();
        }
        push({ tokens: u.tokens, ...(u.finish ? { finish: u.finish } : {}) });
      },
      end: () => {
        finished = true;
        release();
        wake?.();
      },
    });
    this.active.add(id);
    const cancel = () => {
      if (!finished) {
        finished = true;
        this.streams.delete(id);
        this.post({ type: 'cancel', id });
      }
      release();
      wake?.();
    };
    if (signal?.aborted) cancel();
    else {
      signal?.addEventListener('abort', cancel, { once: true });
      const kv = moved?.kv;
      const transfer = kv ? [...kv.keys, ...kv.values].map((a) => a.buffer as ArrayBuffer) : [];
      this.post({ type: 'add', id, prompt: [...prompt], params, ...(moved ? { moved } : {}) }, transfer);
    }
    return {
      detach: (withKv) => {
        if (finished || this.dead) return Promise.resolve({ kv: null });
        return new Promise((done) => {
          this.detaching.set(id, done);
          this.post({ type: 'detach', id, withKv });
        });
      },
      [Symbol.asyncIterator]: () => ({
        next: async (): Promise<IteratorResult<TokenUpdate>> => {
          for (;;) {
            const e = queue.shift();
            if (e instanceof Error) {
              cancel();
              throw e;
            }
            if (e) return { value: e, done: false };
            if (finished) {
              release();
              return { value: undefined, done: true };
            }
            await new Promise<void>((r) => {
              wake = r;
            });
            wake = undefined;
          }
        },
        return: async (): Promise<IteratorResult<TokenUpdate>> => {
          cancel(); // a consumer that stops early (stop string, client gone) frees the sequence
          return { value: undefined, done: true };
        },
      }),
    };
  }

  /** Sequences of this engine whose streams are still open (for draining before a swap). */
  get openStreams(): number {
    return this.active.size;
  }

  /** True once the worker died without being asked to stop. */
  get crashed(): boolean {
    return this.dead !== undefined && !this.closing;
  }

  /**
   * Fault injection for the supervisor's tests: the worker dies of an uncaught error at its next
   * step boundary, as a crash would (no `close`): open streams fail and `crash` is emitted.
   * Not `worker.terminate()`: tearing a worker thread down while onnxruntime-node runs aborts
   * the whole process (measured here: "terminate called after throwing Napi::Error").
   */
  async kill(): Promise<void> {
    if (this.dead) return;
    const exited = new Promise<void>((r) => this.worker.once('exit', () => r()));
    this.post({ type: 'crash' });
    await exited;
  }

  /** Stops the worker (after the current step). */
  async close(): Promise<void> {
    this.closing = true;
    if (this.dead) return;
    this.post({ type: 'shutdown' });
    await new Promise<void>((r) => this.worker.once('exit', () => r()));
  }
}

function readTokenizerConfig(path: string): Record<string, unknown> {
  const raw = readJsonFile(path, 'TF_ERR_BAD_CHECKPOINT');
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    fail('TF_ERR_BAD_CHECKPOINT', `${path}: expected a JSON object`);
  return raw as Record<string, unknown>;
}

export type { GenerationEvent, TokenUpdate } from './text-stream.ts';

import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import type { Worker } from 'node:worker_threads';
import { type Manifest, readManifest } from '../export/export.ts';
import { StreamingDetokenizer } from '../tokenizer/stream-decoder.ts';
import { Tokenizer } from '../tokenizer/tokenizer.ts';
import { type ErrorCode, fail, TokenFormerError } from '../util/errors.ts';
import { startWorker } from '../util/worker.ts';
import type {
  EngineStats,
  FinishReason,
  FromWorker,
  GeneratedToken,
  SequenceUpdate,
  ToWorker,
  WorkerConfig,
} from './protocol.ts';
import type { SamplingParams } from './sampling/params.ts';
import { StopMatcher } from './sampling/stop.ts';

/**
 * The inference engine as the server sees it: `generate()` yields an AsyncIterable of text
 * deltas, cancelled by an AbortSignal (web-llm / ollama-js style). The model, its KV cache and
 * the continuous-batching scheduler live in a worker thread; this side holds the tokenizer,
 * turns token ids into text (never half a UTF-8 character) and matches stop strings on text.
 */

export interface EngineOptions {
  exportDir: string;
  device: 'auto' | 'cpu' | 'cuda';
  threads?: number;
  maxSequences: number;
  maxQueue: number;
  prefillChunk: number;
}

export type GenerationEvent =
  | { type: 'delta'; text: string; tokens: GeneratedToken[] }
  | { type: 'done'; finishReason: FinishReason; promptTokens: number; completionTokens: number };

interface Stream {
  push(e: GenerationEvent | Error): void;
  update(u: SequenceUpdate): void;
}

/** Emits `admitted` (id, queueMs) and `stats` (EngineStats) for metrics. */
export class Engine extends EventEmitter {
  private readonly streams = new Map<number, Stream>();
  private nextId = 1;
  private latest: EngineStats = { running: 0, waiting: 0, kvUsage: 0, kvBytes: 0, kvBytesPerToken: 0 };
  private dead: Error | undefined;

  private constructor(
    private readonly worker: Worker,
    readonly manifest: Manifest,
    readonly tokenizer: Tokenizer,
    readonly device: 'cpu' | 'cuda',
    readonly fallbackReason: string | undefined,
  ) {
    super();
    worker.on('message', (m: FromWorker) => this.onMessage(m));
    worker.on('error', (err) => this.die(err));
    worker.on('exit', (code) => this.die(new Error(`model worker exited (code ${code})`)));
  }

  /** Loads an export directory in a new worker; resolves once the model is ready. */
  static async start(opts: EngineOptions): Promise<Engine> {
    const manifest = readManifest(opts.exportDir);
    if (!manifest.tokenizer)
      fail(
        'TF_ERR_BAD_CHECKPOINT',
        `${opts.exportDir}: the model has no tokenizer.json; it cannot serve text`,
      );
    const tokenizer = Tokenizer.fromFile(join(opts.exportDir, manifest.tokenizer.file));
    const cfg: WorkerConfig = {
      ...opts,
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
    return new Engine(worker, manifest, tokenizer, ready.device, ready.fallbackReason);
  }

  get stats(): EngineStats {
    return this.latest;
  }

  get eosTokenId(): number | null {
    return this.manifest.tokenizer?.eos_token_id ?? this.tokenizer.eosTokenId;
  }

  private post(m: ToWorker): void {
    this.worker.postMessage(m);
  }

  private die(err: Error): void {
    if (this.dead) return;
    this.dead = err;
    for (const s of this.streams.values()) s.push(new TokenFormerError('TF_ERR_RUNTIME', err.message));
    this.streams.clear();
  }

  private onMessage(m: FromWorker): void {
    switch (m.type) {
      case 'step':
        this.latest = m.stats;
        for (const u of m.updates) this.streams.get(u.id)?.update(u);
        this.emit('stats', m.stats);
        break;
      case 'admitted':
        this.emit('admitted', m.id, m.queueMs);
        break;
      case 'rejected':
        this.streams.get(m.id)?.push(new TokenFormerError(m.code as ErrorCode, m.message));
        this.streams.delete(m.id);
        break;
      case 'fatal':
        this.die(new Error(m.message));
        break;
      case 'ready':
        break;
    }
  }

  /**
   * Generates from prompt token ids. Yields text deltas (with their tokens and logprobs) and a
   * final `done`. Aborting the signal cancels the sequence; its KV slot is freed at the next step.
   */
  generate(
    prompt: readonly number[],
    params: SamplingParams,
    signal?: AbortSignal,
  ): AsyncIterable<GenerationEvent> {
    if (this.dead)
      throw new TokenFormerError('TF_ERR_RUNTIME', `the model worker is not running: ${this.dead.message}`);
    const id = this.nextId++;
    const queue: (GenerationEvent | Error)[] = [];
    let wake: (() => void) | undefined;
    let finished = false;
    const detok = new StreamingDetokenizer(this.tokenizer);
    const stop = new StopMatcher(params.stop);
    const eos = this.eosTokenId;
    let completion = 0;
    const push = (e: GenerationEvent | Error) => {
      queue.push(e);
      wake?.();
    };
    const end = (reason: FinishReason, tail: string, tokens: GeneratedToken[]) => {
      if (finished) return;
      finished = true;
      this.streams.delete(id);
      if (tail || tokens.length) push({ type: 'delta', text: tail, tokens });
      push({ type: 'done', finishReason: reason, promptTokens: prompt.length, completionTokens: completion });
    };
    const stream: Stream = {
      push,
      update: (u) => {
        if (finished) return;
        let text = '';
        for (const t of u.tokens) {
          completion++;
          // The end-of-text token ends the text; it is not part of it.
          if (!(u.finish === 'stop' && t.token === eos && !params.ignore_eos)) text += detok.push(t.token);
        }
        if (u.finish) text += detok.flush();
        const r = stop.push(text);
        if (r.stopped) {
          this.post({ type: 'cancel', id });
          end('stop', r.emit, u.tokens);
        } else if (u.finish) end(u.finish, r.emit + stop.flush(), u.tokens);
        else if (r.emit || u.tokens.length) push({ type: 'delta', text: r.emit, tokens: u.tokens });
      },
    };
    this.streams.set(id, stream);
    const onAbort = () => {
      if (finished) return;
      finished = true;
      this.streams.delete(id);
      this.post({ type: 'cancel', id });
      wake?.();
    };
    if (signal?.aborted) onAbort();
    else {
      signal?.addEventListener('abort', onAbort, { once: true });
      this.post({ type: 'add', id, prompt: [...prompt], params });
    }
    return {
      [Symbol.asyncIterator]: () => ({
        next: async (): Promise<IteratorResult<GenerationEvent>> => {
          for (;;) {
            const e = queue.shift();
            if (e instanceof Error) throw e;
            if (e) {
              if (e.type === 'done') signal?.removeEventListener('abort', onAbort);
              return { value: e, done: false };
            }
            if (finished) return { value: undefined, done: true };
            await new Promise<void>((r) => {
              wake = r;
            });
            wake = undefined;
          }
        },
        return: async (): Promise<IteratorResult<GenerationEvent>> => {
          onAbort(); // a consumer that stops early (break, client gone) frees the sequence
          return { value: undefined, done: true };
        },
      }),
    };
  }

  /** Stops the worker (after the current step). */
  async close(): Promise<void> {
    if (this.dead) return;
    this.post({ type: 'shutdown' });
    await new Promise<void>((r) => this.worker.once('exit', () => r()));
  }
}

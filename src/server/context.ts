import type { FastifyBaseLogger } from 'fastify';
import type { Engine, GenerationEvent } from '../engine/engine.ts';
import type { LoadedModel, ModelRegistry, SwapEvent } from '../engine/registry.ts';
import type { SamplingParams } from '../engine/sampling/params.ts';
import type { ModelRef } from '../engine/text-stream.ts';
import { TokenFormerError } from '../util/errors.ts';
import { ApiError, quoted } from './errors.ts';
import type { ServerMetrics } from './metrics.ts';

/** Bounds that keep one client from taking the server; all configurable through `buildApp`. */
export interface ServerLimits {
  /** Largest request body (413 beyond it). */
  bodyLimitBytes: number;
  /** Most choices (prompts × n) one completion request may ask for. */
  maxChoices: number;
  /** A completion running longer than this ends with TF_ERR_TIMEOUT; 0 = no limit. */
  requestTimeoutMs: number;
  /** Largest WebSocket message a client may send (the socket is closed with 1009 beyond it). */
  wsMaxMessageBytes: number;
  /** Completions one WebSocket may have in flight. */
  wsMaxConcurrent: number;
  /** A WebSocket stream stops reading from the engine while more than this is unsent. */
  wsMaxBufferedBytes: number;
  /** Ping period; a socket that has not answered the previous ping is closed. */
  wsPingIntervalMs: number;
  /** Messages per second one WebSocket may send (bursts up to one second's worth); beyond: closed with 1008. */
  wsMaxMessagesPerSecond: number;
  /** Largest request head (request line and headers); 431 beyond it. */
  maxHeaderBytes: number;
  /** A request's headers must all arrive within this (slowloris); 408 beyond it. */
  headersTimeoutMs: number;
  /** A whole request, headers and body, must arrive within this; 408 beyond it. */
  receiveTimeoutMs: number;
  /** An idle keep-alive connection is closed after this; above a load balancer's idle timeout (60 s). */
  keepAliveTimeoutMs: number;
  /** An SSE stream with nothing to send (queued, prefilling) gets a `: keep-alive` comment this often. */
  sseKeepAliveMs: number;
}

export const DEFAULT_LIMITS: ServerLimits = {
  bodyLimitBytes: 1 << 20,
  maxChoices: 16,
  requestTimeoutMs: 0,
  wsMaxMessageBytes: 1 << 20,
  wsMaxConcurrent: 16,
  wsMaxBufferedBytes: 1 << 20,
  wsPingIntervalMs: 30_000,
  wsMaxMessagesPerSecond: 100,
  maxHeaderBytes: 16 << 10,
  headersTimeoutMs: 10_000,
  receiveTimeoutMs: 30_000,
  keepAliveTimeoutMs: 72_000,
  sseKeepAliveMs: 15_000,
};

export type ServerState = 'loading' | 'ready' | 'draining' | 'failed';

/** What open WebSockets are told after a swap (`model.swapped`). */
export interface SwapNotice {
  from: ModelRef;
  to: ModelRef;
  policy: 'drain' | 'migrate';
  /** Streams moved to the new model (the others finish on the old one). */
  migrated: number;
}

/** The model a request is served by, as the completion adapters see it. */
export interface ServingEngine
  extends Pick<Engine, 'score' | 'tokenizer' | 'tokenizerConfig' | 'eosTokenId' | 'manifest' | 'capacity'> {
  generate(
    prompt: readonly number[],
    params: SamplingParams,
    signal?: AbortSignal,
  ): AsyncIterable<GenerationEvent>;
  /** What responses name as `model`: the name the request used, or the primary served name. */
  name: string;
  /** The version that takes the request (`x-model-version`); chunks name the one that produced them. */
  version: string;
}

/** One completion in flight: its abort signal (client gone, timeout, shutdown) and its end. */
export interface Job {
  readonly signal: AbortSignal;
  /** performance.now() at acceptance. */
  readonly started: number;
  abort(reason: ApiError): void;
  end(): void;
}

/**
 * What the routes share: the model registry (possibly still loading) and the served names
 * clients use for it, the limits, the metrics, and the completions in flight, so a shutdown can
 * drain them. Every model the server reaches comes from the registry.
 */
export class ServerContext {
  state: ServerState = 'loading';
  private current: ModelRegistry | undefined;
  private failure: 'load' | 'supervisor' | undefined;
  private readonly jobs = new Set<AbortController>();
  private readonly swapListeners = new Set<(swap: SwapNotice) => void>();
  private idleWaiters: (() => void)[] = [];
  /** Settles once the registry has loaded its first model or has failed to. */
  readonly loaded: Promise<void>;
  /** The names clients use for whichever model serves; the first is reported and labels metrics. */
  readonly servedNames: readonly string[];

  constructor(
    registry: ModelRegistry | Promise<ModelRegistry>,
    servedNames: readonly string[],
    readonly limits: ServerLimits,
    readonly metrics: ServerMetrics,
    log: FastifyBaseLogger,
  ) {
    if (servedNames.length === 0 || servedNames.some((n) => n.trim() === ''))
      throw new TokenFormerError('TF_ERR_BAD_ARGS', 'served model names must be non-empty');
    this.servedNames = [...new Set(servedNames)];
    metrics.setServedName(this.servedNames[0]!);
    this.loaded = Promise.resolve(registry).then(
      (r) => this.attach(r),
      (err: unknown) => {
        if (this.state === 'loading') {
          this.state = 'failed';
          this.failure = 'load';
        }
        // A user error (bad directory, bad checkpoint) is one line; anything else keeps its stack.
        if (err instanceof TokenFormerError)
          log.error({ code: err.code }, `the model failed to load: ${err.message}`);
        else log.error({ err }, 'the model failed to load');
      },
    );
  }

  /** Serves from `registry`: metrics follow every loaded model; swaps are told to WebSockets. */
  private attach(registry: ModelRegistry): void {
    this.current = registry;
    this.metrics.watchRegistry(registry);
    // Speculation counters follow every engine a model gets (load, swap, restart).
    for (const m of registry.loaded) this.metrics.watchSpeculation(m.engine);
    registry.on('adopted', (m: LoadedModel) => this.metrics.watchSpeculation(m.engine));
    registry.on('admitted', (e: { model: ModelRef; queueMs: number }) =>
      this.metrics.queueWait.observe({ ...this.metrics.labels, version: e.model.version }, e.queueMs / 1000),
    );
    registry.on('swap', (e: SwapEvent) => {
      this.metrics.swaps.inc({ result: e.result });
      this.metrics.swapDuration.observe(e.durationMs / 1000);
      if (e.result !== 'success') return;
      const notice: SwapNotice = { from: e.from, to: e.to, policy: e.policy, migrated: e.migrated };
      for (const l of this.swapListeners) l(notice);
    });
    registry.on('migrated', (e: { kvMoved: boolean }) =>
      this.metrics.streamsMigrated.inc({ kv: e.kvMoved ? 'moved' : 'recomputed' }),
    );
    // Supervisor: a restarted worker serves under the same name; one given up on is not alive.
    registry.on('crash', () => this.metrics.workerCrashes.inc());
    registry.on('failed', () => {
      if (this.state === 'ready' || this.state === 'draining') {
        this.state = 'failed';
        this.failure = 'supervisor';
      }
    });
    if (this.state === 'loading') this.state = 'ready';
  }

  /** The primary served name (responses' `model`, the `model_name` metric label). */
  get modelName(): string {
    return this.servedNames[0]!;
  }

  /** Calls `listener` after every successful swap (WebSockets tell their clients); returns an unsubscribe. */
  onSwap(listener: (swap: SwapNotice) => void): () => void {
    this.swapListeners.add(listener);
    return () => this.swapListeners.delete(listener);
  }

  /** The registry once loaded, or why there is none to use (503). */
  requireRegistry(): ModelRegistry {
    if (this.current && this.state !== 'failed') return this.current;
    throw new ApiError('TF_ERR_NOT_READY', this.notReadyReason());
  }

  /** Why the server cannot serve: loading, failed to load, or the supervisor gave up. */
  notReadyReason(): string {
    if (this.state !== 'failed') return 'the model is still loading; retry shortly';
    return this.failure === 'supervisor'
      ? 'the model worker crashed repeatedly and is not restarted; this replica needs a restart'
      : 'the model failed to load';
  }

  /** The registry, or undefined while loading (for status routes). */
  get registry(): ModelRegistry | undefined {
    return this.current;
  }

  /** The serving model's version, or `loading`. */
  get modelVersion(): string {
    return this.current?.model.version ?? 'loading';
  }

  /**
   * The model `requested` names, for work that only reads it (tokenize; fine while draining):
   * none, a served name or an alias → the serving model; a loaded version id → that version.
   */
  lookup(requested: string | null | undefined): { model: LoadedModel; pinned: boolean } {
    const registry = this.requireRegistry();
    if (!requested || this.servedNames.includes(requested)) return { model: registry.model, pinned: false };
    const pinned = registry.byVersion(requested);
    if (pinned) return { model: pinned, pinned: true };
    const versions = registry.loaded.map((m) => m.version).join(', ');
    throw new ApiError(
      'TF_ERR_MODEL_NOT_FOUND',
      `the model ${quoted(requested)} does not exist; this server serves ${this.servedNames.map((n) => JSON.stringify(n)).join(', ')} (loaded versions: ${versions})`,
      'model',
    );
  }

  /** The model for a new generation: refused while loading or draining. */
  acceptGeneration(requested?: string | null): ServingEngine {
    if (this.state === 'draining')
      throw new ApiError('TF_ERR_SHUTTING_DOWN', 'the server is shutting down; retry on another replica');
    const { model, pinned } = this.lookup(requested);
    const registry = this.requireRegistry();
    const engine = model.engine;
    return {
      generate: (prompt, params, signal) => registry.generate(prompt, params, signal, pinned ? model : null),
      score: (prompt, top) => engine.score(prompt, top),
      tokenizer: engine.tokenizer,
      tokenizerConfig: engine.tokenizerConfig,
      eosTokenId: engine.eosTokenId,
      manifest: engine.manifest,
      capacity: engine.capacity,
      // As vLLM: the name the request used (a served name, an alias or a version), else the primary.
      name: requested || this.modelName,
      version: model.version,
    };
  }

  get inFlight(): number {
    return this.jobs.size;
  }

  /** Starts tracking a completion; it is aborted at the per-request timeout, if one is set. */
  startJob(): Job {
    const ac = new AbortController();
    this.jobs.add(ac);
    const ms = this.limits.requestTimeoutMs;
    const timer =
      ms > 0
        ? setTimeout(
            () =>
              ac.abort(new ApiError('TF_ERR_TIMEOUT', `the request ran past the server's ${ms} ms limit`)),
            ms,
          )
        : undefined;
    timer?.unref();
    let ended = false;
    return {
      signal: ac.signal,
      started: performance.now(),
      abort: (reason) => {
        if (!ac.signal.aborted) ac.abort(reason);
      },
      end: () => {
        if (ended) return;
        ended = true;
        clearTimeout(timer);
        this.jobs.delete(ac);
        if (this.jobs.size === 0) {
          for (const w of this.idleWaiters.splice(0)) w();
        }
      },
    };
  }

  private idle(ms: number): Promise<boolean> {
    if (this.jobs.size === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), ms);
      this.idleWaiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  /**
   * Refuses new generations (/ready answers 503), waits up to `timeoutMs` for those in flight to
   * finish, then aborts the rest. Resolves true when everything finished on its own.
   */
  async drain(timeoutMs: number): Promise<boolean> {
    this.state = 'draining';
    const clean = await this.idle(timeoutMs);
    if (!clean) {
      this.abortAll(new ApiError('TF_ERR_SHUTTING_DOWN', 'the server is shutting down'));
      await this.idle(5_000);
    }
    return clean;
  }

  abortAll(reason: ApiError): void {
    for (const ac of this.jobs) if (!ac.signal.aborted) ac.abort(reason);
  }
}

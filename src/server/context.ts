import type { FastifyBaseLogger } from 'fastify';
import type { Engine } from '../engine/engine.ts';
import type { ModelRegistry, SwapEvent } from '../engine/registry.ts';
import type { ModelRef } from '../engine/text-stream.ts';
import { TokenFormerError } from '../util/errors.ts';
import { ApiError } from './errors.ts';
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

/** What a completion needs from the serving model (an Engine, or the registry's view of it). */
export type ServingEngine = Pick<
  Engine,
  'generate' | 'score' | 'tokenizer' | 'tokenizerConfig' | 'eosTokenId' | 'manifest' | 'capacity'
>;

/** One completion in flight: its abort signal (client gone, timeout, shutdown) and its end. */
export interface Job {
  readonly signal: AbortSignal;
  /** performance.now() at acceptance. */
  readonly started: number;
  abort(reason: ApiError): void;
  end(): void;
}

/**
 * What the routes share: the engine (possibly still loading), the model's name and version, the
 * limits, the metrics, and the completions in flight, so a shutdown can drain them.
 */
export class ServerContext {
  state: ServerState = 'loading';
  private current: Engine | undefined;
  private version: string | undefined;
  private registry: ModelRegistry | undefined;
  private readonly onAdmitted = (_id: number, queueMs: number) =>
    this.metrics.queueWait.observe(queueMs / 1000);
  private readonly jobs = new Set<AbortController>();
  private readonly swapListeners = new Set<(swap: SwapNotice) => void>();
  private idleWaiters: (() => void)[] = [];
  /** Settles once the engine is loaded or has failed to load. */
  readonly loaded: Promise<void>;

  constructor(
    engine: Engine | Promise<Engine>,
    public modelName: string,
    modelVersion: string | undefined,
    readonly limits: ServerLimits,
    readonly metrics: ServerMetrics,
    log: FastifyBaseLogger,
  ) {
    this.version = modelVersion;
    this.loaded = Promise.resolve(engine).then(
      (e) => this.attach(e),
      (err: unknown) => {
        if (this.state === 'loading') this.state = 'failed';
        // A user error (bad directory, bad checkpoint) is one line; anything else keeps its stack.
        if (err instanceof TokenFormerError)
          log.error({ code: err.code }, `the model failed to load: ${err.message}`);
        else log.error({ err }, 'the model failed to load');
      },
    );
  }

  private attach(engine: Engine): void {
    this.current?.off('admitted', this.onAdmitted);
    this.current = engine;
    this.version ??= engine.manifest.source.weights_sha256.slice(0, 12);
    engine.on('admitted', this.onAdmitted);
    this.metrics.watchEngine(() => engine.stats);
    this.metrics.watchSpeculation(engine);
    this.metrics.setModel(this.modelName, this.version);
    if (this.state === 'loading') this.state = 'ready';
  }

  /**
   * Serves through a model registry: generations go through it (so open streams can migrate),
   * and after a swap the routes, stats and model_info follow the new model.
   */
  attachRegistry(registry: ModelRegistry): void {
    this.registry = registry;
    this.metrics.watchRegistry(() => ({
      modelsLoaded: registry.loaded.length,
      openStreams: registry.openStreams,
    }));
    registry.on('swap', (e: SwapEvent) => {
      this.metrics.swaps.inc({ result: e.result });
      this.metrics.swapDuration.observe(e.durationMs / 1000);
      if (e.result !== 'success') return;
      this.follow(registry);
      const notice: SwapNotice = { from: e.from, to: e.to, policy: e.policy, migrated: e.migrated };
      for (const l of this.swapListeners) l(notice);
    });
    registry.on('migrated', (e: { kvMoved: boolean }) =>
      this.metrics.streamsMigrated.inc({ kv: e.kvMoved ? 'moved' : 'recomputed' }),
    );
    // Supervisor: a restarted worker serves under the same name; one given up on is not ready.
    registry.on('crash', () => this.metrics.workerCrashes.inc());
    registry.on('restarted', () => this.follow(registry));
    registry.on('failed', () => {
      if (this.state === 'ready') this.state = 'failed';
    });
    // Name, version (weights checksum prefix and step) and gauges follow the serving model.
    this.follow(registry);
  }

  /** Routes, stats and model_info follow the registry's serving model. */
  private follow(registry: ModelRegistry): void {
    this.modelName = registry.model.name;
    this.version = registry.model.version;
    this.attach(registry.model.engine);
  }

  /** Calls `listener` after every successful swap (WebSockets tell their clients); returns an unsubscribe. */
  onSwap(listener: (swap: SwapNotice) => void): () => void {
    this.swapListeners.add(listener);
    return () => this.swapListeners.delete(listener);
  }

  /** The registry, for the admin routes; refused when the server runs a single engine. */
  requireRegistry(): ModelRegistry {
    if (this.registry) return this.registry;
    throw new ApiError('TF_ERR_NOT_READY', 'model swaps are not available on this server');
  }

  /** The engine, or undefined while loading. */
  get engine(): Engine | undefined {
    return this.current;
  }

  get modelVersion(): string {
    return this.version ?? 'loading';
  }

  /** The engine for work that only reads it (tokenize): fine while draining. */
  requireEngine(): Engine {
    if (this.current && this.state !== 'failed') return this.current;
    throw new ApiError(
      'TF_ERR_NOT_READY',
      this.state === 'failed'
        ? this.current
          ? 'the model worker crashed repeatedly and is not restarted; this replica needs a restart'
          : 'the model failed to load'
        : 'the model is still loading; retry shortly',
    );
  }

  /** The model for new generations: refused while loading or draining. */
  acceptGeneration(): ServingEngine {
    if (this.state === 'draining')
      throw new ApiError('TF_ERR_SHUTTING_DOWN', 'the server is shutting down; retry on another replica');
    const engine = this.requireEngine();
    const registry = this.registry;
    if (!registry) return engine;
    return {
      generate: (prompt, params, signal) => registry.generate(prompt, params, signal),
      score: (prompt, top) => engine.score(prompt, top),
      tokenizer: engine.tokenizer,
      tokenizerConfig: engine.tokenizerConfig,
      eosTokenId: engine.eosTokenId,
      manifest: engine.manifest,
      capacity: engine.capacity,
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

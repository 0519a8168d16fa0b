import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { EngineStats } from '../engine/protocol.ts';

/**
 * The server's Prometheus metrics (names fixed by DESIGN.md §5), in a registry of their own so
 * that two apps in one process (tests) never share counters. Engine gauges are read from the
 * engine's latest stats at scrape time, so they cannot drift from it.
 */

export interface RegistryStats {
  modelsLoaded: number;
  openStreams: number;
}

const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const TOKEN_GAP_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
const DURATION_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

export class ServerMetrics {
  readonly registry = new Registry();
  private stats: () => EngineStats | undefined = () => undefined;
  private readonly info: Gauge<'model' | 'version'>;

  readonly requests: Counter<'route' | 'status'>;
  readonly promptTokens: Counter;
  readonly generationTokens: Counter;
  readonly timeToFirstToken: Histogram;
  readonly interTokenLatency: Histogram;
  readonly requestDuration: Histogram;
  readonly queueWait: Histogram;
  readonly swaps: Counter<'result'>;
  readonly swapDuration: Histogram;
  readonly streamsMigrated: Counter<'kv'>;
  readonly workerCrashes: Counter;
  readonly specDrafted: Counter;
  readonly specAccepted: Counter;
  /** Per engine, the speculation totals already counted (engines count from 0 each). */
  private readonly specSeen = new WeakMap<object, { drafted: number; accepted: number }>();
  private registryStats: () => RegistryStats | undefined = () => undefined;

  constructor() {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'tokenformer_' });
    // promtool rejects gauges named *_total; the same counts remain, labelled by type, in
    // tokenformer_nodejs_active_{handles,requests,resources}.
    for (const kind of ['handles', 'requests', 'resources'])
      this.registry.removeSingleMetric(`tokenformer_nodejs_active_${kind}_total`);
    this.requests = new Counter({
      name: 'tokenformer_requests_total',
      help: 'HTTP requests by route and status (WebSocket completions count under /v1/stream; 499: client went away)',
      labelNames: ['route', 'status'],
      registers,
    });
    this.promptTokens = new Counter({
      name: 'tokenformer_prompt_tokens_total',
      help: 'Prompt tokens of accepted completions (per choice: each choice prefills its prompt)',
      registers,
    });
    this.generationTokens = new Counter({
      name: 'tokenformer_generation_tokens_total',
      help: 'Generated tokens streamed to clients',
      registers,
    });
    this.timeToFirstToken = new Histogram({
      name: 'tokenformer_time_to_first_token_seconds',
      help: 'From the request being accepted to the first generated token of each choice',
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.interTokenLatency = new Histogram({
      name: 'tokenformer_inter_token_latency_seconds',
      help: 'Time between successive generated tokens of one choice',
      buckets: TOKEN_GAP_BUCKETS,
      registers,
    });
    this.requestDuration = new Histogram({
      name: 'tokenformer_request_duration_seconds',
      help: 'Completion requests from acceptance to their end (finished, failed or cancelled)',
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.queueWait = new Histogram({
      name: 'tokenformer_queue_wait_seconds',
      help: 'Time sequences waited in the engine queue for a KV-cache slot',
      buckets: LATENCY_BUCKETS,
      registers,
    });
    /** A gauge read at scrape time from `source` (0 while there is nothing to read). */
    const gauge = <S>(name: string, help: string, source: () => S | undefined, read: (s: S) => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect(this: Gauge) {
          const s = source();
          this.set(s === undefined ? 0 : read(s));
        },
      });
    const engine = () => this.stats();
    gauge(
      'tokenformer_requests_running',
      'Sequences decoding in the engine (holding a KV-cache slot)',
      engine,
      (s) => s.running,
    );
    gauge('tokenformer_requests_waiting', 'Sequences waiting in the engine queue', engine, (s) => s.waiting);
    gauge(
      'tokenformer_kv_cache_usage_ratio',
      'Fraction of the KV cache in use (0 to 1)',
      engine,
      (s) => s.kvUsage,
    );
    this.info = new Gauge({
      name: 'tokenformer_model_info',
      help: 'The served model (value 1; labels name it)',
      labelNames: ['model', 'version'],
      registers,
    });
    this.swaps = new Counter({
      name: 'tokenformer_model_swaps_total',
      help: 'Model hot swaps by result',
      labelNames: ['result'],
      registers,
    });
    this.swapDuration = new Histogram({
      name: 'tokenformer_model_swap_duration_seconds',
      help: 'Duration of model hot swaps',
      buckets: [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
      registers,
    });
    this.streamsMigrated = new Counter({
      name: 'tokenformer_streams_migrated_total',
      help: 'Open streams moved to another model (hot swap, drain timeout or worker restart), by whether their KV cache moved as is or was recomputed',
      labelNames: ['kv'],
      registers,
    });
    // Both series from the start, so dashboards and rate() see zeros rather than nothing.
    for (const kv of ['moved', 'recomputed']) this.streamsMigrated.inc({ kv }, 0);
    this.workerCrashes = new Counter({
      name: 'tokenformer_worker_crashes_total',
      help: 'Model workers that died without being asked to (the supervisor restarts them)',
      registers,
    });
    this.specDrafted = new Counter({
      name: 'tokenformer_spec_draft_tokens_total',
      help: 'Speculative decoding: tokens the draft model proposed',
      registers,
    });
    this.specAccepted = new Counter({
      name: 'tokenformer_spec_accepted_tokens_total',
      help: 'Speculative decoding: proposed tokens the served model accepted (acceptance = accepted / draft)',
      registers,
    });
    const serving = () => this.registryStats();
    gauge(
      'tokenformer_models_loaded',
      'Models with a live worker: the serving one plus those draining after a swap',
      serving,
      (s) => s.modelsLoaded,
    );
    gauge(
      'tokenformer_open_streams',
      'Generation streams open across every loaded model (draining ones included)',
      serving,
      (s) => s.openStreams,
    );
  }

  /** Reads the models-loaded and open-streams gauges from `stats` (a server with a registry). */
  watchRegistry(stats: () => RegistryStats): void {
    this.registryStats = stats;
  }

  /** Reads engine gauges from `stats` from now on (undefined while no model is loaded). */
  watchEngine(stats: () => EngineStats | undefined): void {
    this.stats = stats;
  }

  /**
   * Counts an engine's speculative tokens from its step stats, for as long as it runs (a
   * draining engine too); the counters stay monotonic across swaps and restarts.
   */
  watchSpeculation(engine: { on(event: 'stats', listener: (s: EngineStats) => void): unknown }): void {
    if (this.specSeen.has(engine)) return;
    const seen = { drafted: 0, accepted: 0 };
    this.specSeen.set(engine, seen);
    engine.on('stats', (s: EngineStats) => {
      if (s.specDrafted > seen.drafted) this.specDrafted.inc(s.specDrafted - seen.drafted);
      if (s.specAccepted > seen.accepted) this.specAccepted.inc(s.specAccepted - seen.accepted);
      seen.drafted = Math.max(seen.drafted, s.specDrafted);
      seen.accepted = Math.max(seen.accepted, s.specAccepted);
    });
  }

  /** Names the served model; a previous name/version pair is dropped. */
  setModel(model: string, version: string): void {
    this.info.reset();
    this.info.set({ model, version }, 1);
  }

  async text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

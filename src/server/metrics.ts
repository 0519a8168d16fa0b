import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { EngineStats } from '../engine/protocol.ts';

/**
 * The server's Prometheus metrics (names fixed by DESIGN.md §5; the README maps them to vLLM's),
 * in a registry of their own so that two apps in one process (tests) never share counters.
 * Request metrics carry `model_name` (the served name, stable across swaps, so they keep
 * counting); those produced by one set of weights (tokens, TTFT, inter-token, queue) also carry
 * its `version`. Engine gauges are read at scrape time from every loaded model (the serving one
 * and any still draining), so they cannot drift from it.
 */

/** What the gauges read at scrape time: every model with a live worker. */
export interface LoadedModels {
  readonly loaded: readonly {
    name: string;
    version: string;
    engine: { stats: EngineStats; openStreams: number };
  }[];
  readonly model: { version: string };
}

const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const TOKEN_GAP_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
const DURATION_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
/** Token counts per request, as vLLM's 1-2-5 series (up to a long context). */
const LENGTH_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000];

type Name = 'model_name';
type Versioned = 'model_name' | 'version';

export class ServerMetrics {
  readonly registry = new Registry();
  private models: LoadedModels | undefined;
  /** `{model_name}`: the served name, set once by the server. */
  labels: { model_name: string } = { model_name: '' };

  readonly requests: Counter<'route' | 'status' | Name>;
  readonly promptTokens: Counter<Name>;
  readonly generationTokens: Counter<Versioned>;
  readonly timeToFirstToken: Histogram<Versioned>;
  readonly interTokenLatency: Histogram<Versioned>;
  readonly requestDuration: Histogram<Name>;
  readonly queueWait: Histogram<Versioned>;
  readonly requestPromptTokens: Histogram<Name>;
  readonly requestGenerationTokens: Histogram<Name>;
  readonly requestSuccess: Counter<'finished_reason' | Name>;
  readonly swaps: Counter<'result'>;
  readonly swapDuration: Histogram;
  readonly streamsMigrated: Counter<'kv'>;
  readonly workerCrashes: Counter;
  readonly specDrafted: Counter;
  readonly specAccepted: Counter;
  /** Per engine, the speculation totals already counted (engines count from 0 each). */
  private readonly specSeen = new WeakMap<object, { drafted: number; accepted: number }>();

  constructor() {
    const registers = [this.registry];
    const self = this; // gauges read the loaded models in their collect(), where `this` is the gauge
    collectDefaultMetrics({ register: this.registry, prefix: 'tokenformer_' });
    // promtool rejects gauges named *_total; the same counts remain, labelled by type, in
    // tokenformer_nodejs_active_{handles,requests,resources}.
    for (const kind of ['handles', 'requests', 'resources'])
      this.registry.removeSingleMetric(`tokenformer_nodejs_active_${kind}_total`);
    const name: Name[] = ['model_name'];
    const versioned: Versioned[] = ['model_name', 'version'];
    this.requests = new Counter({
      name: 'tokenformer_requests_total',
      help: 'HTTP requests by route and status (WebSocket completions count under /v1/stream; 499: client went away; a stream that failed after its headers counts with its error status)',
      labelNames: ['route', 'status', ...name],
      registers,
    });
    this.promptTokens = new Counter({
      name: 'tokenformer_prompt_tokens_total',
      help: 'Prompt tokens of accepted completions (per choice: each choice prefills its prompt)',
      labelNames: name,
      registers,
    });
    this.generationTokens = new Counter({
      name: 'tokenformer_generation_tokens_total',
      help: 'Generated tokens streamed to clients, by the model version that generated them',
      labelNames: versioned,
      registers,
    });
    this.timeToFirstToken = new Histogram({
      name: 'tokenformer_time_to_first_token_seconds',
      help: 'From the request being accepted to the first generated token of each choice (version: the one that generated it)',
      buckets: LATENCY_BUCKETS,
      labelNames: versioned,
      registers,
    });
    this.interTokenLatency = new Histogram({
      name: 'tokenformer_inter_token_latency_seconds',
      help: 'Time between successive generated tokens of one choice (version: the one that generated the later token)',
      buckets: TOKEN_GAP_BUCKETS,
      labelNames: versioned,
      registers,
    });
    this.requestDuration = new Histogram({
      name: 'tokenformer_request_duration_seconds',
      help: 'Completion requests from acceptance to their end (finished, failed or cancelled)',
      buckets: DURATION_BUCKETS,
      labelNames: name,
      registers,
    });
    this.queueWait = new Histogram({
      name: 'tokenformer_queue_wait_seconds',
      help: 'Time sequences waited in the engine queue for a KV-cache slot, by the model version that queued them',
      buckets: LATENCY_BUCKETS,
      labelNames: versioned,
      registers,
    });
    this.requestPromptTokens = new Histogram({
      name: 'tokenformer_request_prompt_tokens',
      help: 'Prompt tokens per finished choice',
      buckets: LENGTH_BUCKETS,
      labelNames: name,
      registers,
    });
    this.requestGenerationTokens = new Histogram({
      name: 'tokenformer_request_generation_tokens',
      help: 'Generated tokens per finished choice',
      buckets: LENGTH_BUCKETS,
      labelNames: name,
      registers,
    });
    this.requestSuccess = new Counter({
      name: 'tokenformer_request_success_total',
      help: 'Choices that finished, by finish reason (stop: end-of-text or a stop string; length: max_tokens or the context)',
      labelNames: ['finished_reason', ...name],
      registers,
    });
    const perModel = (metric: string, help: string, read: (s: EngineStats) => number) =>
      new Gauge({
        name: metric,
        help,
        labelNames: versioned,
        registers,
        collect(this: Gauge<Versioned>) {
          // Models released since the last scrape leave no stale series.
          this.reset();
          for (const m of self.models?.loaded ?? [])
            this.set({ ...self.labels, version: m.version }, read(m.engine.stats));
        },
      });
    perModel(
      'tokenformer_requests_running',
      'Sequences decoding in the engine (holding a KV-cache slot), per loaded model version',
      (s) => s.running,
    );
    perModel(
      'tokenformer_requests_waiting',
      'Sequences waiting in the engine queue, per loaded model version',
      (s) => s.waiting,
    );
    perModel(
      'tokenformer_kv_cache_usage_ratio',
      'Fraction of the KV cache in use (0 to 1), per loaded model version',
      (s) => s.kvUsage,
    );
    new Gauge({
      name: 'tokenformer_model_info',
      help: 'Every loaded model (value 1): model and model_name are the served name, source its directory, state serving or draining',
      labelNames: ['model', 'version', 'model_name', 'source', 'state'],
      registers,
      collect(this: Gauge<'model' | 'version' | 'model_name' | 'source' | 'state'>) {
        this.reset();
        const serving = self.models?.model.version;
        for (const m of self.models?.loaded ?? [])
          this.set(
            {
              model: self.labels.model_name,
              version: m.version,
              model_name: self.labels.model_name,
              source: m.name,
              state: m.version === serving ? 'serving' : 'draining',
            },
            1,
          );
      },
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
    const whole = (metric: string, help: string, read: (m: LoadedModels) => number) =>
      new Gauge({
        name: metric,
        help,
        registers,
        collect(this: Gauge) {
          this.set(self.models ? read(self.models) : 0);
        },
      });
    whole(
      'tokenformer_models_loaded',
      'Models with a live worker: the serving one plus those draining after a swap',
      (m) => m.loaded.length,
    );
    whole(
      'tokenformer_open_streams',
      'Generation streams open across every loaded model (draining ones included)',
      (m) => m.loaded.reduce((n, x) => n + x.engine.openStreams, 0),
    );
  }

  /** The served name every request metric is labelled with; zero series for the finish reasons. */
  setServedName(name: string): void {
    this.labels = { model_name: name };
    for (const finished_reason of ['stop', 'length'])
      this.requestSuccess.inc({ ...this.labels, finished_reason }, 0);
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

  /** Reads the per-model gauges and model_info from `models` (the registry) at scrape time. */
  watchRegistry(models: LoadedModels): void {
    this.models = models;
  }

  async text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

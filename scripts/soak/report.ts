import type { Metrics } from '../harness/metrics.ts';
import type { RssSample } from './rss.ts';
import { type Interval, type Summary, slopePerMinute, summarize } from './stats.ts';
import type { OutcomeCounts, Tally } from './streams.ts';
import type { ConcurrentCheck, SwapRecord } from './swapper.ts';

/**
 * The soak's figures (the --json file) and its verdict. A swap's window, for latency, runs from
 * its request to 2 s after its answer: samples overlapping one count as "during swaps".
 */

const MIB = 1024 * 1024;
const SWAP_WINDOW_TAIL_MS = 2_000;
const round = (v: number, digits = 1) => Number(v.toFixed(digits));
const mib = (bytes: number | null | undefined) => (bytes == null ? null : round(bytes / MIB));

export interface LeakReading {
  settledAfterS: number;
  requestsRunning: number | null;
  requestsWaiting: number | null;
  kvCacheUsageRatio: number | null;
  openStreams: number | null;
  modelsLoaded: number | null;
  adminModels: unknown;
}

export interface SoakInputs {
  config: Record<string, unknown>;
  elapsedS: number;
  cpus: number;
  loadavgStart: number[];
  loadavgEnd: number[];
  t0: number;
  tally: Tally;
  plannedSwaps: number;
  swaps: SwapRecord[];
  concurrent: ConcurrentCheck | null;
  rssSamples: RssSample[];
  idleFromBytes: number | null;
  idleToBytes: number | null;
  kernelPeakBytes: number | null;
  leaks: LeakReading;
  finalMetrics: Metrics;
  exitCode: number | null;
  serverErrorLines: string[];
}

type Latency = { steady: Summary; during_swaps: Summary };

export interface SoakReport {
  ok: boolean;
  failures: string[];
  config: Record<string, unknown>;
  machine: { cpus: number; loadavg_start: number[]; loadavg_end: number[] };
  elapsed_s: number;
  streams: {
    started: number;
    completed: number;
    finish: Record<'stop' | 'length' | 'cancelled', number>;
    dropped: number;
    errors: number;
    refused: number;
    hung: number;
    cancels: { planned: number; sent: number };
    by_transport: Record<'sse' | 'ws', OutcomeCounts>;
    client_exceptions: number;
    problems: string[];
  };
  versions: { streams_by_versions_seen: Record<string, number>; seen: string[] };
  websocket: {
    sockets_opened: number;
    open_failures: number;
    closed_by_server: number;
    stray_messages: number;
    model_swapped: {
      events: number;
      sockets_with_events: number;
      malformed: number;
      /** Socket lives spanning a successful swap without its event (null while no event came at all). */
      missed: number | null;
    };
  };
  swaps: {
    planned: number;
    done: number;
    failed: number;
    duration_ms: Summary;
    wall_ms: Summary;
    by_policy: Record<'migrate' | 'drain', number>;
    migrated_streams: number;
    draining_streams: number;
    corrupt: {
      status: number;
      refused: boolean;
      unchanged: boolean;
      reason: string | null;
      active_before: string | null;
      active_after: string | null;
    } | null;
    concurrent: ConcurrentCheck | null;
    list: {
      t_s: number;
      kind: string;
      target: string;
      policy: string;
      status: number;
      duration_ms: number | null;
      wall_ms: number;
      migrated: number | null;
      draining: number | null;
      error: string | null;
    }[];
    server_counters: { success: number | null; failure: number | null; streams_migrated: number | null };
  };
  latency_ms: { ttft: Latency; inter_token: Latency; note: string };
  rss_mib: {
    source: string;
    start: number | null;
    peak: number | null;
    end: number | null;
    kernel_peak: number | null;
    idle_from: number | null;
    idle_to: number | null;
    peak_over_idle_from_plus_to: number | null;
    slope_second_half_mib_per_min: number | null;
    series: { t_s: number; mib: number | null }[];
    note: string;
  };
  leaks: {
    settled_after_s: number;
    requests_running: number | null;
    requests_waiting: number | null;
    kv_cache_usage_ratio: number | null;
    open_streams: number | 'n/a';
    models_loaded: number | 'n/a';
    leaked: number;
    admin_models: unknown;
  };
  server: { exit_code: number | null; error_log_lines: string[]; requests_by_status: Record<string, number> };
}

function latency(
  spans: { split(w: readonly Interval[]): { steady: number[]; swap: number[] } },
  w: Interval[],
) {
  const { steady, swap } = spans.split(w);
  const r = (s: Summary): Summary => ({
    n: s.n,
    p50: s.p50 === null ? null : round(s.p50),
    p99: s.p99 === null ? null : round(s.p99),
    max: s.max === null ? null : round(s.max),
  });
  return { steady: r(summarize(steady)), during_swaps: r(summarize(swap)) };
}

function missedSwapEvents(tally: Tally, swaps: SwapRecord[]): number | null {
  if (tally.ws.swapped.length === 0) return null;
  const ok = swaps.filter((s) => s.kind === 'swap' && s.status === 200);
  let missed = 0;
  for (const life of tally.ws.lives) {
    // A socket open from before the request to a second after the answer must have been told.
    const spanned = ok.filter((s) => life.openAt < s.sentAt && life.closeAt > s.answeredAt + 1_000).length;
    missed += Math.max(0, spanned - life.swapped);
  }
  return missed;
}

export function buildReport(i: SoakInputs): SoakReport {
  const { tally, swaps } = i;
  const rel = (ms: number) => round((ms - i.t0) / 1000, 2);
  const windows = swaps.map((s) => ({ start: s.sentAt, end: s.answeredAt + SWAP_WINDOW_TAIL_MS }));
  const real = swaps.filter((s) => s.kind === 'swap');
  const done = real.filter((s) => s.status === 200);
  const corrupt = swaps.find((s) => s.kind === 'corrupt');
  const rssOf = (s: RssSample) => s.proc ?? s.metric;
  const rssSource = i.rssSamples.some((s) => s.proc !== null)
    ? '/proc/PID/status VmRSS'
    : 'tokenformer_process_resident_memory_bytes';
  const rssValues = i.rssSamples.map(rssOf).filter((v): v is number => v !== null);
  const peak = rssValues.length ? Math.max(...rssValues) : null;
  const second = i.rssSamples.filter((s) => s.t >= i.elapsedS / 2 && rssOf(s) !== null);
  const idleSum = i.idleFromBytes !== null && i.idleToBytes !== null ? i.idleFromBytes + i.idleToBytes : null;
  const m = (series: string) => i.finalMetrics.get(series) ?? null;
  // A counter with or without labels (the labels may come and go between versions).
  const sum = (name: string) => {
    const hits = [...i.finalMetrics].filter(([k]) => k === name || k.startsWith(`${name}{`));
    return hits.length ? hits.reduce((n, [, v]) => n + v, 0) : null;
  };
  const l = i.leaks;
  const leaked =
    (l.requestsRunning ?? 0) +
    (l.requestsWaiting ?? 0) +
    ((l.kvCacheUsageRatio ?? 0) > 0 ? 1 : 0) +
    (l.openStreams ?? 0) +
    (l.modelsLoaded === null ? 0 : Math.abs(l.modelsLoaded - 1));
  const requestsByStatus: Record<string, number> = {};
  for (const [k, v] of i.finalMetrics) {
    const hit = /^tokenformer_requests_total\{route="([^"]+)",status="(\d+)"[,}]/.exec(k);
    if (hit && (hit[1] === '/v1/completions' || hit[1] === '/v1/stream'))
      requestsByStatus[`${hit[1]} ${hit[2]}`] = (requestsByStatus[`${hit[1]} ${hit[2]}`] ?? 0) + v;
  }
  const byVersions: Record<string, number> = {};
  for (const [n, c] of [...tally.versionsPerStream].sort((a, b) => a[0] - b[0])) byVersions[String(n)] = c;

  const report: SoakReport = {
    ok: false,
    failures: [],
    config: i.config,
    machine: { cpus: i.cpus, loadavg_start: i.loadavgStart, loadavg_end: i.loadavgEnd },
    elapsed_s: round(i.elapsedS),
    streams: {
      started: tally.total('started'),
      completed: tally.total('completed'),
      finish: { ...tally.finish },
      dropped: tally.total('dropped'),
      errors: tally.total('error'),
      refused: tally.total('refused'),
      hung: tally.total('hung'),
      cancels: { planned: tally.cancelsPlanned, sent: tally.cancelsSent },
      by_transport: { sse: { ...tally.transports.sse }, ws: { ...tally.transports.ws } },
      client_exceptions: tally.clientExceptions,
      problems: [...tally.problems],
    },
    versions: { streams_by_versions_seen: byVersions, seen: [...tally.versionsSeen].sort() },
    websocket: {
      sockets_opened: tally.ws.opened,
      open_failures: tally.ws.openFailures,
      closed_by_server: tally.ws.closedByServer,
      stray_messages: tally.ws.strays,
      model_swapped: {
        events: tally.ws.swapped.length,
        sockets_with_events: new Set(tally.ws.swapped.map((e) => e.socket)).size,
        malformed: tally.ws.swapped.filter((e) => !e.wellFormed).length,
        missed: missedSwapEvents(tally, swaps),
      },
    },
    swaps: {
      planned: i.plannedSwaps,
      done: done.length,
      failed: real.length - done.length,
      duration_ms: roundSummary(
        summarize(done.flatMap((s) => (s.durationMs === null ? [] : [s.durationMs]))),
      ),
      wall_ms: roundSummary(summarize(done.map((s) => s.wallMs))),
      by_policy: {
        migrate: done.filter((s) => s.policy === 'migrate').length,
        drain: done.filter((s) => s.policy === 'drain').length,
      },
      migrated_streams: done.reduce((n, s) => n + (s.migrated ?? 0), 0),
      draining_streams: done.reduce((n, s) => n + (s.draining ?? 0), 0),
      corrupt: corrupt
        ? {
            status: corrupt.status,
            refused: corrupt.status === 422 && corrupt.error !== null,
            unchanged: corrupt.activeBefore !== undefined && corrupt.activeBefore === corrupt.activeAfter,
            reason: corrupt.error,
            active_before: corrupt.activeBefore ?? null,
            active_after: corrupt.activeAfter ?? null,
          }
        : null,
      concurrent: i.concurrent,
      list: swaps.map((s) => ({
        t_s: rel(s.sentAt),
        kind: s.kind,
        target: s.target,
        policy: s.policy,
        status: s.status,
        duration_ms: s.durationMs === null ? null : round(s.durationMs),
        wall_ms: round(s.wallMs),
        migrated: s.migrated,
        draining: s.draining,
        error: s.error,
      })),
      server_counters: {
        success: m('tokenformer_model_swaps_total{result="success"}'),
        failure: m('tokenformer_model_swaps_total{result="failure"}'),
        streams_migrated: sum('tokenformer_streams_migrated_total'),
      },
    },
    latency_ms: {
      ttft: latency(tally.ttft, windows),
      inter_token: latency(tally.itl, windows),
      note:
        'client-side, per text delta (a delta is usually one token; deltas read together give 0 gaps); ' +
        `a sample overlapping any swap window [request, answer + ${SWAP_WINDOW_TAIL_MS / 1000} s] counts as ` +
        'during swaps; TTFT is from sending the request, queueing included',
    },
    rss_mib: {
      source: rssSource,
      start: mib(rssValues[0]),
      peak: mib(peak),
      end: mib(rssValues.at(-1)),
      kernel_peak: mib(i.kernelPeakBytes),
      idle_from: mib(i.idleFromBytes),
      idle_to: mib(i.idleToBytes),
      peak_over_idle_from_plus_to: peak !== null && idleSum ? round(peak / idleSum, 3) : null,
      slope_second_half_mib_per_min: nullableRound(
        slopePerMinute(second.map((s) => ({ t: s.t, v: rssOf(s)! / MIB }))),
        2,
      ),
      series: i.rssSamples.map((s) => ({ t_s: round(s.t), mib: mib(rssOf(s)) })),
      note:
        'idle_from / idle_to: the whole server process idle on each model alone after one short request; ' +
        'each includes the Node.js + onnxruntime baseline, which the ratio therefore counts twice',
    },
    leaks: {
      settled_after_s: round(l.settledAfterS),
      requests_running: l.requestsRunning,
      requests_waiting: l.requestsWaiting,
      kv_cache_usage_ratio: l.kvCacheUsageRatio,
      open_streams: l.openStreams ?? 'n/a',
      models_loaded: l.modelsLoaded ?? 'n/a',
      leaked,
      admin_models: l.adminModels,
    },
    server: {
      exit_code: i.exitCode,
      error_log_lines: i.serverErrorLines,
      requests_by_status: requestsByStatus,
    },
  };
  report.failures = failures(report);
  report.ok = report.failures.length === 0;
  return report;
}

const nullableRound = (v: number | null, digits: number) => (v === null ? null : round(v, digits));
const roundSummary = (s: Summary): Summary => ({
  n: s.n,
  p50: nullableRound(s.p50, 1),
  p99: nullableRound(s.p99, 1),
  max: nullableRound(s.max, 1),
});

function failures(r: SoakReport): string[] {
  const f: string[] = [];
  const s = r.streams;
  if (s.started === 0) f.push('no stream started');
  if (s.dropped > 0) f.push(`${s.dropped} streams dropped`);
  if (s.errors > 0) f.push(`${s.errors} streams ended with an error`);
  if (s.hung > 0) f.push(`${s.hung} streams hung`);
  if (s.client_exceptions > 0) f.push(`${s.client_exceptions} exceptions in the soak's client code`);
  if (r.websocket.open_failures > 0) f.push(`${r.websocket.open_failures} WebSocket opens failed`);
  if (r.websocket.stray_messages > 0)
    f.push(`${r.websocket.stray_messages} WebSocket messages for no stream`);
  if (r.websocket.model_swapped.malformed > 0)
    f.push(`${r.websocket.model_swapped.malformed} malformed model.swapped events`);
  if ((r.websocket.model_swapped.missed ?? 0) > 0)
    f.push(`${r.websocket.model_swapped.missed} model.swapped events missing on sockets open across a swap`);
  if (r.swaps.failed > 0) f.push(`${r.swaps.failed} swaps failed`);
  if (r.swaps.done < r.swaps.planned) f.push(`${r.swaps.done} of ${r.swaps.planned} planned swaps done`);
  const c = r.swaps.corrupt;
  if (!c) f.push('the corrupt swap did not run');
  else {
    if (!c.refused) f.push(`the corrupt swap answered ${c.status}, not 422 with a reason`);
    if (!c.unchanged)
      f.push(`the corrupt swap changed the active model (${c.active_before} → ${c.active_after})`);
  }
  if (r.swaps.concurrent?.verdict === 'unexpected')
    f.push(`a swap sent during a swap answered ${r.swaps.concurrent.status}, not 409`);
  if (r.leaks.leaked > 0) f.push(`${r.leaks.leaked} leaked (sequences, KV, open streams or extra models)`);
  if (r.leaks.requests_running === null) f.push('tokenformer_requests_running was not readable at the end');
  if (r.server.exit_code !== 0) f.push(`the server exited with ${r.server.exit_code} on SIGTERM`);
  if (r.server.error_log_lines.length > 0)
    f.push(`${r.server.error_log_lines.length} error lines in the server log`);
  return f;
}

import type { SoakReport } from './report.ts';
import type { Summary } from './stats.ts';

/** The soak's human summary (stdout); the JSON report holds every figure. */

const fmt = (v: number | null | undefined, digits = 1) => (v == null ? '–' : v.toFixed(digits));
const pair = (s: Summary) => `${fmt(s.p50)} / ${fmt(s.p99)}`.padEnd(18) + `(n=${s.n})`;

export function summaryText(r: SoakReport): string {
  const c = r.config;
  const s = r.streams;
  const lines: string[] = [];
  lines.push(
    `soak: ${c.clients} clients for ${c.durationS} s (ran ${r.elapsed_s.toFixed(0)} s) on ${c.from} ⇄ ${c.to} ` +
      `(--max-sequences ${c.maxSequences} --max-queue ${c.maxQueue}, ${c.device}); ${r.machine.cpus} CPUs, ` +
      `load average ${r.machine.loadavg_start.map((v) => v.toFixed(2)).join(' ')} → ` +
      `${r.machine.loadavg_end.map((v) => v.toFixed(2)).join(' ')}`,
  );
  lines.push(
    `streams: ${s.started} started, ${s.completed} completed (stop ${s.finish.stop}, length ${s.finish.length}, ` +
      `cancelled ${s.finish.cancelled}), dropped ${s.dropped}, errors ${s.errors}, refused ${s.refused}, hung ${s.hung}; ` +
      `cancels sent ${s.cancels.sent}`,
  );
  for (const t of ['sse', 'ws'] as const) {
    const b = s.by_transport[t];
    lines.push(
      `  ${t.padEnd(3)} ${b.started} started, ${b.completed} completed, ${b.dropped} dropped, ${b.error} errors, ` +
        `${b.refused} refused, ${b.hung} hung`,
    );
  }
  const w = r.websocket;
  const ms = w.model_swapped;
  lines.push(
    `websocket: ${w.sockets_opened} sockets, ${w.closed_by_server} closed by the server, ${w.stray_messages} stray messages; ` +
      `model.swapped: ${ms.events} events on ${ms.sockets_with_events} sockets` +
      (ms.missed === null
        ? ' (none received: feature absent?)'
        : `, ${ms.missed} missed, ${ms.malformed} malformed`),
  );
  const vs = Object.entries(r.versions.streams_by_versions_seen);
  lines.push(
    `model versions per completed stream: ${vs.length ? vs.map(([n, k]) => `${k} saw ${n}`).join(', ') : 'n/a'}; seen ${r.versions.seen.join(', ') || 'n/a'}`,
  );
  const sw = r.swaps;
  lines.push(
    `swaps: ${sw.done}/${sw.planned} done (migrate ${sw.by_policy.migrate}, drain ${sw.by_policy.drain}; ` +
      `${sw.migrated_streams} streams migrated, ${sw.draining_streams} drained); durationMs p50 ${fmt(sw.duration_ms.p50, 0)} ` +
      `max ${fmt(sw.duration_ms.max, 0)}, wall p50 ${fmt(sw.wall_ms.p50, 0)} max ${fmt(sw.wall_ms.max, 0)}`,
  );
  lines.push(`   t(s)  target           policy   status  ms      migrated draining`);
  for (const x of sw.list)
    lines.push(
      `  ${x.t_s.toFixed(1).padStart(5)}  ${x.target.padEnd(16)} ${x.policy.padEnd(8)} ${String(x.status).padEnd(7)} ` +
        `${fmt(x.duration_ms ?? x.wall_ms, 0).padEnd(7)} ${String(x.migrated ?? '–').padEnd(8)} ${x.draining ?? '–'}` +
        (x.kind === 'corrupt' ? `  (corrupt: ${(x.error ?? '').slice(0, 90)})` : ''),
    );
  if (sw.corrupt)
    lines.push(
      `corrupt swap: ${sw.corrupt.status}, ${sw.corrupt.unchanged ? 'active model unchanged' : 'ACTIVE MODEL CHANGED'} (${sw.corrupt.active_after})`,
    );
  lines.push(
    `concurrent swap: ${sw.concurrent ? `${sw.concurrent.status} ${sw.concurrent.code ?? ''} (${sw.concurrent.verdict})` : 'not tried'}`,
  );
  lines.push(`latency (ms)       steady p50 / p99            during swaps p50 / p99`);
  lines.push(
    `  TTFT             ${pair(r.latency_ms.ttft.steady).padEnd(28)}${pair(r.latency_ms.ttft.during_swaps)}`,
  );
  lines.push(
    `  inter-token      ${pair(r.latency_ms.inter_token.steady).padEnd(28)}${pair(r.latency_ms.inter_token.during_swaps)}`,
  );
  const m = r.rss_mib;
  lines.push(
    `RSS (MiB, ${m.source}): start ${fmt(m.start)}, peak ${fmt(m.peak)}, end ${fmt(m.end)}, kernel peak ${fmt(m.kernel_peak)}; ` +
      `idle ${c.from} ${fmt(m.idle_from)} + idle ${c.to} ${fmt(m.idle_to)}; peak / (old + new) = ${fmt(m.peak_over_idle_from_plus_to, 3)}; ` +
      `second-half trend ${fmt(m.slope_second_half_mib_per_min, 2)} MiB/min`,
  );
  const every = Math.max(5, Math.round(r.elapsed_s / 12 / 5) * 5);
  const picks = m.series.filter(
    (p, k) => k === 0 || Math.floor(p.t_s / every) > Math.floor(m.series[k - 1]!.t_s / every),
  );
  lines.push(`  t(s) ${picks.map((p) => p.t_s.toFixed(0).padStart(6)).join('')}`);
  lines.push(`  MiB  ${picks.map((p) => fmt(p.mib, 0).padStart(6)).join('')}`);
  const l = r.leaks;
  lines.push(
    `leaks (after ${l.settled_after_s} s): requests_running ${l.requests_running ?? '?'}, requests_waiting ${l.requests_waiting ?? '?'}, ` +
      `kv_cache_usage_ratio ${l.kv_cache_usage_ratio ?? '?'}, open_streams ${l.open_streams}, models_loaded ${l.models_loaded} → ${l.leaked} leaked`,
  );
  lines.push(
    `server: exit ${r.server.exit_code}, ${r.server.error_log_lines.length} error log lines; ` +
      Object.entries(r.server.requests_by_status)
        .map(([k, v]) => `${k}: ${v}`)
        .join(', '),
  );
  if (s.problems.length) lines.push(`first problems:\n  ${s.problems.slice(0, 10).join('\n  ')}`);
  lines.push(r.ok ? 'PASS' : `FAIL: ${r.failures.join('; ')}`);
  return lines.join('\n');
}

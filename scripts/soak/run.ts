import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { type Metrics, metricSum } from '../harness/metrics.ts';
import { type ServerProcess, sleep } from '../harness/server.ts';
import { runClients } from './clients.ts';
import { CORRUPT_NAME, prepareModelsRoot } from './models.ts';
import { buildReport, type LeakReading, type SoakReport } from './report.ts';
import { idleRss, RssSampler } from './rss.ts';
import { type ServerOptions, startSoakServer } from './server.ts';
import { Tally } from './streams.ts';
import { planSwaps, runSwaps } from './swapper.ts';

/**
 * One soak run: a models root of its own (from, to, corrupt), an idle-memory baseline of each
 * model, then the real server under `clients` streaming loops while the swapper swaps, then the
 * leak check once the streams have settled, and the report.
 */

export interface SoakOptions {
  modelsDir: string;
  from: string;
  to: string;
  corruptFrom: string;
  clients: number;
  durationS: number;
  warmupS: number;
  swapEveryS: number;
  tailS: number;
  maxTokens: [number, number];
  cancelFraction: number;
  maxSequences: number;
  maxQueue: number;
  device: string;
  threads: number;
  /** The server's working directory (its .cache holds exported checkpoints). */
  serverCwd: string;
  settleS: number;
  stallS: number;
  seed: number;
  /** The server's --served-model-name: every client request names it, across every swap. */
  servedName: string;
  /** Measure the idle memory of `to` in a separate short server start. */
  baseline: boolean;
  keep: boolean;
}

const LEAK_SERIES = {
  running: 'tokenformer_requests_running',
  waiting: 'tokenformer_requests_waiting',
  kv: 'tokenformer_kv_cache_usage_ratio',
  openStreams: 'tokenformer_open_streams',
  modelsLoaded: 'tokenformer_models_loaded',
} as const;

function leakReading(m: Metrics, settledAfterS: number, adminModels: unknown): LeakReading {
  const get = (k: string) => metricSum(m, k);
  return {
    settledAfterS,
    requestsRunning: get(LEAK_SERIES.running),
    requestsWaiting: get(LEAK_SERIES.waiting),
    kvCacheUsageRatio: get(LEAK_SERIES.kv),
    openStreams: get(LEAK_SERIES.openStreams),
    modelsLoaded: get(LEAK_SERIES.modelsLoaded),
    adminModels,
  };
}

function settled(m: Metrics): boolean {
  const zero = (k: string) => (metricSum(m, k) ?? 0) === 0;
  const loaded = metricSum(m, LEAK_SERIES.modelsLoaded);
  return (
    metricSum(m, LEAK_SERIES.running) !== null &&
    zero(LEAK_SERIES.running) &&
    zero(LEAK_SERIES.waiting) &&
    zero(LEAK_SERIES.kv) &&
    zero(LEAK_SERIES.openStreams) &&
    (loaded === null || loaded === 1)
  );
}

/** Polls /metrics until nothing is left open (or `settleS` passes), then reads the leak figures. */
async function readLeaks(
  server: ServerProcess,
  settleS: number,
): Promise<{ leaks: LeakReading; metrics: Metrics }> {
  const start = performance.now();
  let m: Metrics = new Map();
  while (performance.now() - start < settleS * 1000) {
    m = await server.metrics().catch(() => new Map());
    if (settled(m)) break;
    await sleep(250);
  }
  const admin = await server
    .admin('/admin/models')
    .catch((e: unknown) => ({ status: 0, body: { error: String(e) } }));
  return { leaks: leakReading(m, (performance.now() - start) / 1000, admin.body), metrics: m };
}

export async function runSoak(o: SoakOptions, log: (m: string) => void): Promise<SoakReport> {
  const plan = planSwaps({ from: o.from, to: o.to, corrupt: CORRUPT_NAME }, { ...o, everyS: o.swapEveryS });
  const work = mkdtempSync(join(tmpdir(), 'tf-soak-'));
  const servers: ServerProcess[] = [];
  // A soak that exits or is interrupted takes its servers (and its temp directory) with it.
  const onExit = () => {
    for (const s of servers) if (s.alive) s.proc.kill('SIGKILL');
  };
  const onSignal = (signal: NodeJS.Signals) => {
    onExit();
    if (!o.keep) rmSync(work, { recursive: true, force: true });
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  process.on('exit', onExit).once('SIGINT', onSignal).once('SIGTERM', onSignal);
  try {
    const models = prepareModelsRoot(resolve(o.modelsDir), o, work);
    log(`models root ${models.root}: ${models.from}, ${models.to}, ${models.corrupt} (weights cut in half)`);
    const serverOpts = (model: string): ServerOptions => ({
      modelsRoot: models.root,
      model,
      servedName: o.servedName,
      cwd: resolve(o.serverCwd),
      adminToken: randomBytes(16).toString('hex'),
      maxSequences: o.maxSequences,
      maxQueue: o.maxQueue,
      device: o.device,
      ...(o.threads > 0 ? { threads: o.threads } : {}),
    });

    let idleTo: number | null = null;
    if (o.baseline) {
      log(`idle baseline: starting a server on ${models.to} alone`);
      const b = await startSoakServer(serverOpts(models.to));
      servers.push(b);
      idleTo = await idleRss(b);
      await b.stop(60_000);
    }
    log(`starting the server on ${models.from}`);
    const server = await startSoakServer(serverOpts(models.from));
    servers.push(server);
    const idleFrom = await idleRss(server);
    log(
      `idle RSS: ${models.from} ${idleFrom === null ? '?' : (idleFrom / 2 ** 20).toFixed(1)} MiB` +
        (idleTo === null ? '' : `, ${models.to} ${(idleTo / 2 ** 20).toFixed(1)} MiB`),
    );

    const loadavgStart = loadavg();
    const t0 = performance.now();
    const stopAt = t0 + o.durationS * 1000;
    // Swaps that run late (a loaded machine) still run under load, up to once more the duration.
    const lateStopAt = stopAt + Math.max(o.durationS, 60) * 1000;
    let swapsDone = false;
    const live = () => performance.now() < stopAt || (!swapsDone && performance.now() < lateStopAt);
    const tally = new Tally();
    const rss = new RssSampler(server, t0);
    rss.start();
    const progress = setInterval(() => {
      log(
        `t=${((performance.now() - t0) / 1000).toFixed(0)} s: ${tally.total('started')} started, ` +
          `${tally.total('completed')} completed, ${tally.active.size} open, ${tally.total('dropped')} dropped, ` +
          `${tally.total('error')} errors, ${tally.total('refused')} refused`,
      );
    }, 10_000);
    log(
      `load: ${o.clients} clients for ${o.durationS} s; ${plan.length} swap slots from ${o.warmupS} s every ${o.swapEveryS} s`,
    );
    const [, swapped] = await Promise.all([
      runClients(
        {
          url: server.url,
          model: o.servedName,
          clients: o.clients,
          live,
          settleMs: o.stallS * 1000 * 2,
          maxTokens: o.maxTokens,
          cancelFraction: o.cancelFraction,
          seed: o.seed,
          stallMs: o.stallS * 1000,
        },
        tally,
      ),
      runSwaps(server, plan, t0, log, () => performance.now() > lateStopAt || !server.alive).finally(() => {
        swapsDone = true;
      }),
    ]);
    clearInterval(progress);
    const elapsedS = (performance.now() - t0) / 1000;
    log(`load stopped after ${elapsedS.toFixed(0)} s; waiting for the streams to settle`);
    const { leaks, metrics } = await readLeaks(server, o.settleS);
    rss.stop();
    const kernelPeak = server.peakRssBytes() ?? null;
    const loadavgEnd = loadavg();
    const exitCode = await server.stop(60_000);
    log(`server stopped (exit ${exitCode})`);
    return buildReport({
      config: { ...o },
      elapsedS,
      cpus: cpus().length,
      loadavgStart,
      loadavgEnd,
      t0,
      tally,
      plannedSwaps: plan.filter((p) => p.swap.kind === 'swap').length,
      swaps: swapped.swaps,
      concurrent: swapped.concurrent,
      rssSamples: rss.samples,
      idleFromBytes: idleFrom,
      idleToBytes: idleTo,
      kernelPeakBytes: kernelPeak,
      leaks,
      finalMetrics: metrics,
      exitCode,
      serverErrorLines: server.errorLines,
    });
  } finally {
    await Promise.all(servers.map((s) => s.kill()));
    process.off('exit', onExit).off('SIGINT', onSignal).off('SIGTERM', onSignal);
    if (o.keep) log(`kept ${work}`);
    else rmSync(work, { recursive: true, force: true });
  }
}

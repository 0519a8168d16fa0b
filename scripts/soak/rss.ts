import { type ServerProcess, sleep } from '../harness/server.ts';

/**
 * The server's resident memory over time: /proc/PID/status VmRSS (the process, worker threads
 * included) and the server's own tokenformer_process_resident_memory_bytes, once a second.
 */

export interface RssSample {
  /** Seconds since the load started. */
  t: number;
  proc: number | null;
  metric: number | null;
}

const RSS_METRIC = 'tokenformer_process_resident_memory_bytes';

export class RssSampler {
  readonly samples: RssSample[] = [];
  private timer: NodeJS.Timeout | undefined;
  private busy = false;

  constructor(
    private readonly server: ServerProcess,
    private readonly t0: number,
  ) {}

  start(periodMs = 1_000): void {
    this.sample();
    this.timer = setInterval(() => this.sample(), periodMs);
  }

  private sample(): void {
    // A slow /metrics under load skips a beat instead of piling requests up.
    if (this.busy || !this.server.alive) return;
    this.busy = true;
    const t = (performance.now() - this.t0) / 1000;
    const proc = this.server.rssBytes() ?? null;
    this.server
      .metrics(2_000)
      .then(
        (m) => m.get(RSS_METRIC) ?? null,
        () => null,
      )
      .then((metric) => {
        this.samples.push({ t, proc, metric });
        this.busy = false;
      });
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

/** Resident memory of a server idle after one short request: the largest of three reads. */
export async function idleRss(server: ServerProcess): Promise<number | null> {
  await server.warm();
  await sleep(1_000);
  let best: number | null = null;
  for (let i = 0; i < 3; i++) {
    const v = server.rssBytes() ?? (await server.metrics()).get(RSS_METRIC) ?? null;
    if (v !== null) best = Math.max(best ?? 0, v);
    await sleep(300);
  }
  return best;
}

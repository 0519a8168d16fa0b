import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { type Metrics, metricSum, parseMetrics } from './metrics.ts';

/**
 * `scripts/serve.ts` as a child process on loopback, for the tests and the soak. Every wait is
 * bounded; `stop()` escalates from SIGTERM to SIGKILL so nothing outlives its caller.
 */

export const ROOT = resolve(import.meta.dirname, '../..');

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `probe` every 25 ms until it returns a value, for at most `ms`. */
export async function until<T>(
  probe: () => Promise<T | undefined> | T | undefined,
  what: string,
  ms = 20_000,
): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(25);
  }
}

/** A loopback port the OS had free a moment ago (for a server that does not log its address). */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const address = srv.address();
  await new Promise<void>((r) => srv.close(() => r()));
  if (address === null || typeof address === 'string') throw new Error('no port from the OS');
  return address.port;
}

export function exitOf(proc: ChildProcess): Promise<number | null> {
  return new Promise((r) => {
    if (proc.exitCode !== null || proc.signalCode !== null) r(proc.exitCode);
    else proc.once('exit', (code) => r(code));
  });
}

/** A /proc/PID/status field in bytes (undefined off Linux or once the process is gone). */
function procStatusBytes(pid: number, field: 'VmRSS' | 'VmHWM'): number | undefined {
  const path = `/proc/${pid}/status`;
  if (!existsSync(path)) return undefined;
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return undefined; // the process ended between the two calls
  }
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
  return m ? Number(m[1]) * 1024 : undefined;
}

export interface StartOptions {
  /** The server's working directory (its .cache holds exports); the repository by default. */
  cwd?: string;
  /** A fixed port; by default the OS picks one and the server's log line names it. */
  port?: number;
  /** Set as TOKENFORMER_ADMIN_TOKEN; {@link ServerProcess.admin} sends it. */
  adminToken?: string;
  /** Bound on start-up until /ready answers 200. */
  readyMs?: number;
  /** Another executable taking serve's flags (a bundle's `./serve`), started with exactly `env`. */
  launcher?: string;
  /** The launcher's whole environment. */
  env?: NodeJS.ProcessEnv;
}

export interface AdminAnswer {
  status: number;
  body: Record<string, unknown>;
}

export class ServerProcess {
  /** The tail of stdout and stderr together. */
  output = '';
  /** Server log lines at level error or fatal (pino levels 50, 60). */
  readonly errorLines: string[] = [];
  readonly exited: Promise<number | null>;
  private lineBuffer = '';

  private constructor(
    readonly proc: ChildProcess,
    public url: string,
    private readonly adminToken: string | undefined,
  ) {
    for (const stream of [proc.stdout!, proc.stderr!])
      stream.setEncoding('utf8').on('data', (s: string) => this.append(s));
    this.exited = exitOf(proc);
  }

  private append(s: string): void {
    this.output = (this.output + s).slice(-200_000);
    const lines = (this.lineBuffer + s).split('\n');
    this.lineBuffer = lines.pop()!;
    for (const line of lines) {
      const level = /"level":(\d+)/.exec(line)?.[1];
      if (level !== undefined && Number(level) >= 50 && this.errorLines.length < 50)
        this.errorLines.push(line.slice(0, 2_000));
    }
  }

  /** Starts `node --import tsx scripts/serve.ts --host 127.0.0.1 …` and waits until /ready answers 200. */
  static async start(args: string[], opts: StartOptions = {}): Promise<ServerProcess> {
    const readyMs = opts.readyMs ?? 60_000;
    // tsx by URL and the script by absolute path, so the server can run in any directory.
    const tsx = import.meta.resolve('tsx');
    const port = opts.port ?? 0;
    const flags = ['--host', '127.0.0.1', '--port', String(port), ...args];
    const proc = spawn(
      opts.launcher ?? process.execPath,
      opts.launcher ? flags : ['--import', tsx, join(ROOT, 'scripts/serve.ts'), ...flags],
      {
        cwd: opts.cwd ?? ROOT,
        stdio: ['ignore', 'pipe', 'pipe'],
        env: opts.env ?? {
          ...process.env,
          ...(opts.adminToken === undefined ? {} : { TOKENFORMER_ADMIN_TOKEN: opts.adminToken }),
          MODEL: '',
          PORT: '',
          HOST: '',
          DEVICE: '',
        },
      },
    );
    const s = new ServerProcess(proc, port === 0 ? '' : `http://127.0.0.1:${port}`, opts.adminToken);
    let exitCode: number | null | undefined;
    void s.exited.then((c) => {
      exitCode = c;
    });
    const running = () => {
      if (exitCode !== undefined) throw new Error(`the server exited (${exitCode}) before it was ready`);
    };
    try {
      if (s.url === '')
        s.url = await until(
          () => {
            running();
            return /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(s.output)?.[1];
          },
          'the server to print its address',
          readyMs,
        );
      await until(
        async () => {
          running();
          const res = await fetch(`${s.url}/ready`, { signal: AbortSignal.timeout(2_000) }).catch(
            () => undefined, // not listening yet
          );
          return res?.status === 200 ? true : undefined;
        },
        '/ready to answer 200',
        readyMs,
      );
    } catch (err) {
      await s.kill();
      throw new Error(`${(err as Error).message}\n--- server output ---\n${s.logTail()}`);
    }
    return s;
  }

  logTail(chars = 4_000): string {
    return this.output.slice(-chars);
  }

  get pid(): number {
    return this.proc.pid!;
  }

  get alive(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  rssBytes(): number | undefined {
    return procStatusBytes(this.pid, 'VmRSS');
  }

  /** The kernel's peak resident set of the process so far. */
  peakRssBytes(): number | undefined {
    return procStatusBytes(this.pid, 'VmHWM');
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code (null when killed). */
  async stop(graceMs = 30_000): Promise<number | null> {
    if (!this.alive) return this.proc.exitCode;
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), graceMs);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }

  async kill(): Promise<void> {
    if (this.alive) this.proc.kill('SIGKILL');
    await this.exited;
  }

  async metricsText(timeoutMs = 5_000): Promise<string> {
    return (await fetch(`${this.url}/metrics`, { signal: AbortSignal.timeout(timeoutMs) })).text();
  }

  async metrics(timeoutMs = 5_000): Promise<Metrics> {
    return parseMetrics(await this.metricsText(timeoutMs));
  }

  /**
   * A value from /metrics: the sum of the series of that name whose labels include the given
   * ones (`name` or `name{a="x"}`); 0 when none matches.
   */
  async metric(series: string): Promise<number> {
    return metricSum(await this.metrics(), series) ?? 0;
  }

  /** An admin call with the token the server was started with; a body that is not JSON comes back raw. */
  async admin(path: string, body?: unknown, timeoutMs = 300_000): Promise<AdminAnswer> {
    const res = await fetch(`${this.url}${path}`, {
      method: body === undefined ? 'GET' : 'POST',
      headers: {
        ...(this.adminToken === undefined ? {} : { authorization: `Bearer ${this.adminToken}` }),
        'content-type': 'application/json',
      },
      signal: AbortSignal.timeout(timeoutMs),
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    try {
      return { status: res.status, body: JSON.parse(text) as Record<string, unknown> };
    } catch {
      return { status: res.status, body: { raw: text.slice(0, 500) } };
    }
  }

  /** One short greedy completion (so the first measured request does not pay for a cold start). */
  async warm(): Promise<void> {
    const res = await fetch(`${this.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'Hello', max_tokens: 8, temperature: 0 }),
      signal: AbortSignal.timeout(60_000),
    });
    const text = await res.text();
    if (res.status !== 200) throw new Error(`the warm-up request answered ${res.status}: ${text}`);
  }
}

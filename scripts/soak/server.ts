import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';

/**
 * The server under soak: `scripts/serve.ts` as a child process on a free loopback port, with its
 * memory read from /proc (all its worker threads share the one process) and from /metrics.
 */

const ROOT = resolve(import.meta.dirname, '../..');

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export interface ServerOptions {
  modelsRoot: string;
  model: string;
  /** The server's working directory: its .cache holds the exports of checkpoints. */
  cwd: string;
  adminToken: string;
  maxSequences: number;
  maxQueue: number;
  device: string;
  threads?: number;
}

/** Prometheus text → value by series (`name` or `name{labels}` exactly as printed). */
export type Metrics = Map<string, number>;

export function parseMetrics(text: string): Metrics {
  const out: Metrics = new Map();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const cut = line.lastIndexOf(' ');
    out.set(line.slice(0, cut), Number(line.slice(cut + 1)));
  }
  return out;
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const address = srv.address();
  await new Promise<void>((r) => srv.close(() => r()));
  if (address === null || typeof address === 'string') throw new Error('no port from the OS');
  return address.port;
}

/** A /proc/PID/status field in bytes (undefined off Linux or once the process is gone). */
function procStatusBytes(pid: number, field: 'VmRSS' | 'VmHWM'): number | undefined {
  const path = `/proc/${pid}/status`;
  if (!existsSync(path)) return undefined;
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(path, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

export interface AdminAnswer {
  status: number;
  body: Record<string, unknown>;
}

export class SoakServer {
  /** Server log lines at level error or fatal (pino levels 50, 60). */
  errorLines: string[] = [];
  private tail = '';
  private lineBuffer = '';
  readonly exited: Promise<number | null>;

  private constructor(
    readonly proc: ChildProcess,
    readonly url: string,
    private readonly token: string,
  ) {
    for (const stream of [proc.stdout!, proc.stderr!])
      stream.setEncoding('utf8').on('data', (s: string) => this.onOutput(s));
    this.exited = new Promise((r) => {
      if (proc.exitCode !== null || proc.signalCode !== null) r(proc.exitCode);
      else proc.once('exit', (code) => r(code));
    });
  }

  /** Starts the server and waits (bounded) until /ready answers 200. */
  static async start(opts: ServerOptions, readyMs = 180_000): Promise<SoakServer> {
    const port = await freePort();
    // tsx by URL and the script by absolute path, so the server can run in any directory.
    const args = [
      '--import',
      import.meta.resolve('tsx'),
      join(ROOT, 'scripts/serve.ts'),
      ...['--model', opts.model, '--models-dir', opts.modelsRoot, '--host', '127.0.0.1'],
      ...['--port', String(port), '--device', opts.device, '--log-level', 'warn'],
      ...['--max-sequences', String(opts.maxSequences), '--max-queue', String(opts.maxQueue)],
      ...(opts.threads ? ['--threads', String(opts.threads)] : []),
    ];
    const proc = spawn(process.execPath, args, {
      cwd: opts.cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...process.env,
        TOKENFORMER_ADMIN_TOKEN: opts.adminToken,
        MODEL: '',
        PORT: '',
        HOST: '',
        DEVICE: '',
      },
    });
    const server = new SoakServer(proc, `http://127.0.0.1:${port}`, opts.adminToken);
    const end = Date.now() + readyMs;
    let exited = false;
    void server.exited.then(() => {
      exited = true;
    });
    for (;;) {
      if (exited) throw new Error(`the server exited before it was ready:\n${server.logTail()}`);
      const ok = await fetch(`${server.url}/ready`, { signal: AbortSignal.timeout(2_000) }).then(
        (r) => r.status === 200,
        () => false,
      );
      if (ok) return server;
      if (Date.now() > end) {
        await server.kill();
        throw new Error(`the server was not ready within ${readyMs} ms:\n${server.logTail()}`);
      }
      await sleep(100);
    }
  }

  private onOutput(s: string): void {
    this.tail = (this.tail + s).slice(-20_000);
    const lines = (this.lineBuffer + s).split('\n');
    this.lineBuffer = lines.pop()!;
    for (const line of lines) {
      const level = /"level":(\d+)/.exec(line)?.[1];
      if (level !== undefined && Number(level) >= 50 && this.errorLines.length < 50)
        this.errorLines.push(line.slice(0, 2_000));
    }
  }

  logTail(chars = 4_000): string {
    return this.tail.slice(-chars);
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

  async metrics(timeoutMs = 5_000): Promise<Metrics> {
    const res = await fetch(`${this.url}/metrics`, { signal: AbortSignal.timeout(timeoutMs) });
    return parseMetrics(await res.text());
  }

  async admin(path: string, body?: unknown, timeoutMs = 300_000): Promise<AdminAnswer> {
    const res = await fetch(`${this.url}${path}`, {
      method: body === undefined ? 'GET' : 'POST',
      headers: { authorization: `Bearer ${this.token}`, 'content-type': 'application/json' },
      signal: AbortSignal.timeout(timeoutMs),
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    let parsed: Record<string, unknown>;
    try {
      parsed = JSON.parse(text) as Record<string, unknown>;
    } catch {
      parsed = { raw: text.slice(0, 500) };
    }
    return { status: res.status, body: parsed };
  }

  /** One short greedy completion (so the first measured request does not pay for a cold start). */
  async warm(): Promise<void> {
    const res = await fetch(`${this.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'Hello', max_tokens: 8, temperature: 0 }),
      signal: AbortSignal.timeout(60_000),
    });
    if (res.status !== 200)
      throw new Error(`the warm-up request answered ${res.status}: ${await res.text()}`);
    await res.text();
  }

  /** SIGTERM (drain, exit 0 expected), then SIGKILL after `graceMs`; the exit code (null if killed). */
  async stop(graceMs = 60_000): Promise<number | null> {
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
}

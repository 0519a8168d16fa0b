import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Inbox, WebSocket, type WsClient } from './ws-client.ts';

/**
 * Real processes for the server end-to-end tests: `scripts/serve.ts` on a loopback port chosen by
 * the OS (read from its log on stdout), and headless Chromium. Every wait is bounded; `stop()`
 * escalates from SIGTERM to SIGKILL so nothing outlives the tests.
 */

export const ROOT = resolve(import.meta.dirname, '../..');

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `probe` every 25 ms until it returns a value, for at most `ms`. */
export async function until<T>(
  probe: () => Promise<T | undefined> | T | undefined,
  what: string,
  ms = 20_000,
) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(25);
  }
}

function exitOf(proc: ChildProcess): Promise<number | null> {
  return new Promise((r) => {
    if (proc.exitCode !== null || proc.signalCode !== null) r(proc.exitCode);
    else proc.once('exit', (code) => r(code));
  });
}

export class ServerProcess {
  output = '';
  readonly exited: Promise<number | null>;

  private constructor(
    readonly proc: ChildProcess,
    public url = '',
  ) {
    proc.stdout!.setEncoding('utf8').on('data', (s: string) => this.append(s));
    proc.stderr!.setEncoding('utf8').on('data', (s: string) => this.append(s));
    this.exited = exitOf(proc);
  }

  private append(s: string): void {
    this.output = (this.output + s).slice(-200_000);
  }

  /** Starts `node --import tsx scripts/serve.ts --port 0 …` and waits until /ready answers 200. */
  static async start(args: string[], opts: { cwd?: string } = {}): Promise<ServerProcess> {
    // tsx by URL, so the server can run from any directory (its cwd holds .cache and models/).
    const tsx = import.meta.resolve('tsx');
    const proc = spawn(
      process.execPath,
      ['--import', tsx, join(ROOT, 'scripts/serve.ts'), '--host', '127.0.0.1', '--port', '0', ...args],
      {
        cwd: opts.cwd ?? ROOT,
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, MODEL: '', PORT: '', HOST: '', DEVICE: '' },
      },
    );
    const s = new ServerProcess(proc);
    let exitCode: number | null | undefined;
    void s.exited.then((c) => {
      exitCode = c;
    });
    try {
      s.url = await until(
        () => {
          if (exitCode !== undefined) throw new Error(`the server exited (${exitCode}) before listening`);
          return /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(s.output)?.[1];
        },
        'the server to print its address',
        60_000,
      );
      await until(
        async () => ((await fetch(`${s.url}/ready`)).status === 200 ? true : undefined),
        '/ready to answer 200',
        60_000,
      );
    } catch (err) {
      await s.kill();
      throw new Error(`${(err as Error).message}\n--- server output ---\n${s.output.slice(-4000)}`);
    }
    return s;
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code (null when killed). */
  async stop(graceMs = 30_000): Promise<number | null> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return this.proc.exitCode;
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), graceMs);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }

  async kill(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
    await this.exited;
  }

  async metrics(): Promise<string> {
    return (await fetch(`${this.url}/metrics`)).text();
  }

  /** One sample's value from /metrics (0 when the series is absent). */
  async metric(series: string): Promise<number> {
    const line = (await this.metrics()).split('\n').find((l) => l.startsWith(`${series} `));
    return line === undefined ? 0 : Number(line.slice(series.length + 1));
  }
}

/**
 * Reads an SSE response until `stopWhen(text so far)` or its end; returns the text read. Stopping
 * early leaves the connection open (cancelling the reader would close it).
 */
export async function readSse(
  res: Response,
  stopWhen: (text: string) => boolean = () => false,
): Promise<string> {
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let text = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
    if (stopWhen(text)) {
      reader.releaseLock();
      break;
    }
  }
  return text;
}

export async function openWs(url: string): Promise<{ ws: WsClient; inbox: Inbox }> {
  const ws = new WebSocket(url.replace(/^http/, 'ws'));
  const inbox = new Inbox(ws);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the WebSocket did not open in 10 s')), 10_000);
    ws.once('open', () => {
      clearTimeout(timer);
      resolve();
    });
    ws.once('error', (err) => {
      clearTimeout(timer);
      reject(err as Error);
    });
  });
  return { ws, inbox };
}

/** The Chromium binary, or a failure telling how to install it. */
export function chromiumPath(): string {
  const r = spawnSync('sh', ['-c', 'command -v chromium || command -v chromium-browser'], {
    encoding: 'utf8',
  });
  const path = r.stdout.trim().split('\n')[0];
  if (!path)
    throw new Error(
      "chromium is not installed: install Debian's chromium package (apt-get install chromium)",
    );
  return path;
}

export const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--window-size=1000,700',
];

/**
 * Opens `url` in headless Chromium with the DevTools protocol on a free port and evaluates
 * `expression` in the page every 100 ms until `ok(value)`; returns that value. Chromium is
 * stopped before returning.
 */
export async function chromiumEvaluate(
  userDataDir: string,
  url: string,
  expression: string,
  ok: (value: unknown) => boolean,
  ms = 60_000,
): Promise<unknown> {
  const proc = spawn(
    chromiumPath(),
    [...CHROMIUM_FLAGS, `--user-data-dir=${userDataDir}`, '--remote-debugging-port=0', url],
    { stdio: 'ignore' },
  );
  const exited = exitOf(proc);
  let ws: WsClient | undefined;
  try {
    const portFile = join(userDataDir, 'DevToolsActivePort');
    const port = await until(
      () => (existsSync(portFile) ? readFileSync(portFile, 'utf8').split('\n')[0] || undefined : undefined),
      'Chromium to open its DevTools port',
      ms,
    );
    const target = await until(
      async () => {
        const list = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as {
          type: string;
          webSocketDebuggerUrl?: string;
        }[];
        return list.find((t) => t.type === 'page' && t.webSocketDebuggerUrl)?.webSocketDebuggerUrl;
      },
      'the page target',
      ms,
    );
    ws = new WebSocket(target);
    const opened = new Promise<void>((r) => ws!.once('open', () => r()));
    const replies = new Map<number, (v: unknown) => void>();
    ws.on('message', (data) => {
      const m = JSON.parse(data.toString('utf8')) as {
        id?: number;
        result?: { result?: { value?: unknown } };
      };
      if (m.id !== undefined) replies.get(m.id)?.(m.result?.result?.value);
    });
    await opened;
    let nextId = 1;
    const evaluate = (expr: string) =>
      new Promise<unknown>((r) => {
        const id = nextId++;
        replies.set(id, r);
        ws!.send(
          JSON.stringify({
            id,
            method: 'Runtime.evaluate',
            params: { expression: expr, returnByValue: true },
          }),
        );
      });
    return await until(
      async () => {
        const v = await Promise.race([evaluate(expression), sleep(2_000).then(() => undefined)]);
        return ok(v) ? v : undefined;
      },
      `the page to satisfy the check (${expression})`,
      ms,
    );
  } finally {
    ws?.terminate();
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  }
}

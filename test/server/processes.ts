import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { exitOf, sleep, until } from '../../scripts/harness/server.ts';
import { WebSocket, type WsClient } from '../../scripts/harness/ws.ts';

/**
 * Headless Chromium for the playground's end-to-end tests (servers are started with the harness
 * in scripts/harness/, shared with the soak). Every wait is bounded; Chromium is always stopped.
 */

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

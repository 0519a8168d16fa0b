import { createRequire } from 'node:module';

/**
 * The `ws` package (what @fastify/websocket is built on) as the client of tests and the soak. It
 * ships no types, so the members used are typed here.
 */
export interface WsClient {
  readonly readyState: number;
  readonly protocol: string;
  send(data: string, cb?: (err?: Error) => void): void;
  close(code?: number, reason?: string): void;
  terminate(): void;
  on(event: 'message', listener: (data: Buffer) => void): WsClient;
  on(event: 'close', listener: (code: number, reason: Buffer) => void): WsClient;
  on(event: 'unexpected-response', listener: (req: unknown, res: { statusCode: number }) => void): WsClient;
  on(event: 'open', listener: () => void): WsClient;
  on(event: 'error', listener: (err: Error) => void): WsClient;
  once(event: 'open', listener: () => void): WsClient;
  once(event: 'close', listener: (code: number, reason: Buffer) => void): WsClient;
  once(event: 'error', listener: (err: Error) => void): WsClient;
}

export interface WsOptions {
  headers?: Record<string, string>;
  origin?: string;
}

export const WebSocket = createRequire(import.meta.url)('ws') as new (
  url: string,
  protocols?: string[],
  options?: WsOptions,
) => WsClient;

export const WS_OPEN = 1;

/** Waits (bounded) for a socket to open; on a timeout it is terminated. */
export function opened(ws: WsClient, ms = 10_000): Promise<WsClient> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`the WebSocket did not open within ${ms} ms`));
    }, ms);
    ws.once('open', () => {
      clearTimeout(timer);
      resolve(ws);
    });
    ws.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** Opens a socket to `url` (http:// or ws://); rejects on an error or after `ms`. */
export function openSocket(url: string, ms = 10_000): Promise<WsClient> {
  return opened(new WebSocket(url.replace(/^http/, 'ws')), ms);
}

/** A socket with an {@link Inbox} attached before it opens, so no message is missed. */
export async function openWs(url: string, ms = 10_000): Promise<{ ws: WsClient; inbox: Inbox }> {
  const ws = new WebSocket(url.replace(/^http/, 'ws'));
  const inbox = new Inbox(ws);
  await opened(ws, ms);
  return { ws, inbox };
}

export type WsMessage = Record<string, unknown> & { type: string };

/** Collects a socket's JSON messages; `waitFor` waits (bounded) for one matching a predicate. */
export class Inbox {
  readonly messages: WsMessage[] = [];
  private waiters: (() => void)[] = [];
  closed: number | undefined;

  constructor(socket: WsClient) {
    socket.on('message', (data) => {
      this.messages.push(JSON.parse(data.toString('utf8')) as WsMessage);
      for (const w of this.waiters.splice(0)) w();
    });
    socket.on('close', (code) => {
      this.closed = code;
      for (const w of this.waiters.splice(0)) w();
    });
  }

  async waitFor(ok: (m: WsMessage) => boolean, what: string, ms = 20_000): Promise<WsMessage> {
    const end = Date.now() + ms;
    for (;;) {
      const found = this.messages.find(ok);
      if (found) return found;
      if (this.closed !== undefined) throw new Error(`socket closed (${this.closed}) before ${what}`);
      const left = end - Date.now();
      if (left <= 0)
        throw new Error(`no ${what} within ${ms} ms; got ${JSON.stringify(this.messages.slice(-5))}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  of(id: string): WsMessage[] {
    return this.messages.filter((m) => m.id === id);
  }
}

import { createRequire } from 'node:module';

/**
 * The `ws` package (what @fastify/websocket is built on) as a test client. It ships no types,
 * so the few members the tests use are typed here.
 */
export interface WsClient {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  terminate(): void;
  on(event: 'message', listener: (data: Buffer) => void): WsClient;
  on(event: 'close', listener: (code: number, reason: Buffer) => void): WsClient;
  on(event: 'open' | 'error', listener: (arg?: unknown) => void): WsClient;
  once(event: 'open' | 'close' | 'error', listener: (arg?: unknown) => void): WsClient;
}

type WsConstructor = new (url: string) => WsClient;

export const WebSocket = createRequire(import.meta.url)('ws') as WsConstructor;

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

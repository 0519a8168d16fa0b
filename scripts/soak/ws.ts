import { createRequire } from 'node:module';

/**
 * The `ws` package as the soak's WebSocket client (Node 20 has no stable global WebSocket). It
 * ships no types, so the members used here are typed here.
 */
export interface WsSocket {
  readonly readyState: number;
  send(data: string, cb?: (err?: Error) => void): void;
  close(code?: number, reason?: string): void;
  terminate(): void;
  on(event: 'message', listener: (data: Buffer) => void): WsSocket;
  on(event: 'close', listener: (code: number, reason: Buffer) => void): WsSocket;
  on(event: 'error', listener: (err: Error) => void): WsSocket;
  once(event: 'open', listener: () => void): WsSocket;
  once(event: 'error', listener: (err: Error) => void): WsSocket;
}

export const WS_OPEN = 1;

const WebSocketClass = createRequire(import.meta.url)('ws') as new (url: string) => WsSocket;

/** Opens a socket; rejects on an error or after `ms`. */
export function openSocket(url: string, ms = 10_000): Promise<WsSocket> {
  const ws = new WebSocketClass(url);
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

import { ApiError } from './errors.ts';

/** The part of a `ws` WebSocket the server uses (typed here: the `ws` package ships no types). */
export interface WsSocket {
  readonly readyState: number;
  /** Bytes queued but not yet written to the network. */
  readonly bufferedAmount: number;
  send(data: string, cb?: (err?: Error) => void): void;
  ping(): void;
  close(code?: number, reason?: string): void;
  terminate(): void;
  on(event: 'message', listener: (data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean) => void): unknown;
  on(event: 'pong' | 'close', listener: () => void): unknown;
}

export const WS_OPEN = 1;

/**
 * Sends one message with backpressure: while the socket's unsent bytes stay under `maxBuffered`
 * it resolves at once; past that it resolves only when this message has been written out, so a
 * caller that awaits it stops pulling from the engine and a slow reader cannot grow memory
 * without bound. Rejects with TF_ERR_CLIENT_CLOSED once the socket is closed.
 */
export function sendWithBackpressure(socket: WsSocket, data: string, maxBuffered: number): Promise<void> {
  const closed = () => new ApiError('TF_ERR_CLIENT_CLOSED', 'the WebSocket is closed');
  if (socket.readyState !== WS_OPEN) return Promise.reject(closed());
  if (socket.bufferedAmount + data.length <= maxBuffered) {
    socket.send(data);
    return Promise.resolve();
  }
  return new Promise((resolve, reject) => socket.send(data, (err) => (err ? reject(closed()) : resolve())));
}

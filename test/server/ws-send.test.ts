import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sendWithBackpressure, WS_OPEN, type WsSocket } from '../../src/server/ws-send.ts';

/** A socket whose network is as slow as the test says: sends queue until `flush()`. */
class SlowSocket implements WsSocket {
  readyState = WS_OPEN;
  bufferedAmount = 0;
  private pending: { size: number; cb: ((err?: Error) => void) | undefined }[] = [];
  send(data: string, cb?: (err?: Error) => void): void {
    this.bufferedAmount += data.length;
    this.pending.push({ size: data.length, cb });
  }
  flush(): void {
    for (const p of this.pending.splice(0)) {
      this.bufferedAmount -= p.size;
      p.cb?.();
    }
  }
  ping(): void {}
  close(): void {
    this.readyState = 3;
    for (const p of this.pending.splice(0)) p.cb?.(new Error('closed'));
  }
  terminate(): void {
    this.close();
  }
  on(): unknown {
    return this;
  }
}

test('sends resolve at once under the bound and wait for the network above it', async () => {
  const socket = new SlowSocket();
  await sendWithBackpressure(socket, 'x'.repeat(60), 100);
  assert.equal(socket.bufferedAmount, 60);
  let sent = false;
  const blocked = sendWithBackpressure(socket, 'y'.repeat(60), 100).then(() => {
    sent = true;
  });
  await new Promise((r) => setImmediate(r));
  assert.equal(sent, false, 'a send past the bound waits');
  socket.flush();
  await blocked;
  assert.equal(sent, true);
  assert.equal(socket.bufferedAmount, 0);
});

test('sending on a closed socket, or one closed while waiting, rejects as client-closed', async () => {
  const socket = new SlowSocket();
  await sendWithBackpressure(socket, 'x'.repeat(60), 100);
  const waiting = sendWithBackpressure(socket, 'y'.repeat(60), 100);
  socket.close();
  await assert.rejects(waiting, (err: Error & { code?: string }) => err.code === 'TF_ERR_CLIENT_CLOSED');
  await assert.rejects(
    sendWithBackpressure(socket, 'z', 100),
    (err: Error & { code?: string }) => err.code === 'TF_ERR_CLIENT_CLOSED',
  );
});

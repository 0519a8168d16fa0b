import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { test } from 'node:test';
import type { ModelRegistry } from '../../src/engine/registry.ts';
import { buildApp } from '../../src/server/app.ts';
import { WsConnection } from '../../src/server/ws-connection.ts';
import { WS_OPEN, type WsSocket } from '../../src/server/ws-send.ts';

/** A socket that answers pings (or not) and records what the server did. */
class FakeSocket extends EventEmitter implements WsSocket {
  readyState = WS_OPEN;
  bufferedAmount = 0;
  pings = 0;
  terminated = false;
  sent: string[] = [];
  constructor(private readonly answersPings: boolean) {
    super();
  }
  send(data: string, cb?: (err?: Error) => void): void {
    this.sent.push(data);
    cb?.();
  }
  ping(): void {
    this.pings++;
    if (this.answersPings) setImmediate(() => this.emit('pong'));
  }
  close(): void {
    this.terminate();
  }
  terminate(): void {
    this.terminated = true;
    this.readyState = 3;
    this.emit('close');
  }
}

async function until(ok: () => boolean, what: string): Promise<void> {
  const end = Date.now() + 10_000;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

test('keep-alive: a socket that answers pings stays open; one that does not is closed', async () => {
  const app = buildApp({
    registry: new Promise<ModelRegistry>(() => {}),
    servedNames: ['m'],
    limits: { wsPingIntervalMs: 10 },
  });
  try {
    const live = new FakeSocket(true);
    const dead = new FakeSocket(false);
    new WsConnection(live, app.tokenformer, () => null, app.log);
    new WsConnection(dead, app.tokenformer, () => null, app.log);
    await until(() => live.pings >= 4 && dead.terminated, 'pings and the dead socket to be closed');
    assert.equal(live.terminated, false);
    assert.equal(dead.pings, 1, 'closed at the first tick without a pong');
    live.terminate(); // stops its pinger
    // A create on a server whose model is loading is refused with the request's id.
    const s = new FakeSocket(true);
    new WsConnection(s, app.tokenformer, () => null, app.log);
    s.emit('message', Buffer.from(JSON.stringify({ type: 'completion.create', id: 7, prompt: 'a' })), false);
    await until(() => s.sent.length > 0, 'an answer');
    assert.deepEqual(JSON.parse(s.sent[0]!), {
      type: 'error',
      id: '7',
      message: 'the model is still loading; retry shortly',
      code: 'TF_ERR_NOT_READY',
      status: 503,
    });
    s.terminate();
  } finally {
    await app.close();
  }
});

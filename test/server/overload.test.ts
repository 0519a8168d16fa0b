import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { sseData } from '../../scripts/harness/sse.ts';
import { Inbox, type WsClient } from '../../scripts/harness/ws.ts';
import { assertErrorShape, type TestApp, testApp } from './helpers.ts';

let t: TestApp;
before(async () => {
  // One KV slot and no queue: a second concurrent request is refused at once.
  t = await testApp({ maxSequences: 1, maxQueue: 0 });
});
after(() => t.close());

async function until(ok: () => boolean, what: string): Promise<void> {
  const end = Date.now() + 10_000;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const long = { prompt: 'a', max_tokens: 2000, temperature: 0, ignore_eos: true };

test('a full queue is 429 with Retry-After (plain and streaming requests)', async () => {
  const ws = (await t.app.injectWS('/v1/stream')) as WsClient;
  const inbox = new Inbox(ws);
  try {
    ws.send(JSON.stringify({ type: 'completion.create', id: 'hog', ...long }));
    await inbox.waitFor((m) => m.type === 'completion.delta', 'the first request running');
    for (const stream of [false, true]) {
      const r = await t.app.inject({
        method: 'POST',
        url: '/v1/completions',
        payload: { prompt: 'b', stream },
      });
      assert.equal(r.statusCode, 429);
      assert.equal(r.headers['retry-after'], '1');
      const e = assertErrorShape(r.json(), 'TF_ERR_QUEUE_FULL');
      assert.equal(e.type, 'rate_limit_error');
    }
    ws.send(JSON.stringify({ type: 'completion.cancel', id: 'hog' }));
    await inbox.waitFor((m) => m.type === 'completion.done', 'the cancel');
  } finally {
    ws.terminate();
  }
  await until(() => t.engine.stats.running === 0, 'the slot to be free');
  const again = await t.app.inject({
    method: 'POST',
    url: '/v1/completions',
    payload: { prompt: 'b', max_tokens: 2 },
  });
  assert.equal(again.statusCode, 200);
});

test('the per-request timeout ends a plain request with 504 and a stream with an error event', async () => {
  // 2000 tokens are 2000 scheduler steps (each a worker round trip and a model run), far more
  // than 50 ms; a machine too slow for even the first token gets the plain 504 on the stream too.
  t.app.tokenformer.limits.requestTimeoutMs = 50;
  try {
    const plain = await t.app.inject({ method: 'POST', url: '/v1/completions', payload: long });
    assert.equal(plain.statusCode, 504);
    assert.match(assertErrorShape(plain.json(), 'TF_ERR_TIMEOUT').message, /50 ms/);
    const streamed = await t.app.inject({
      method: 'POST',
      url: '/v1/completions',
      payload: { ...long, stream: true },
    });
    if (streamed.statusCode === 200) {
      const events = sseData(streamed.body);
      assert.notEqual(events.at(-1), '[DONE]');
      assertErrorShape(JSON.parse(events.at(-1)!), 'TF_ERR_TIMEOUT');
    } else {
      // A machine too slow to produce the first token within the limit gets the plain 504.
      assert.equal(streamed.statusCode, 504);
      assertErrorShape(streamed.json(), 'TF_ERR_TIMEOUT');
    }
  } finally {
    t.app.tokenformer.limits.requestTimeoutMs = 0;
  }
  await until(() => t.engine.stats.running === 0, 'the timed-out sequences to be freed');
});

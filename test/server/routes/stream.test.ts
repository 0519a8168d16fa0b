import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Inbox, type WsClient } from '../../../scripts/harness/ws.ts';
import type { CompletionResponse } from '../../../src/server/openai.ts';
import { MODEL, type TestApp, testApp } from '../helpers.ts';

let t: TestApp;
before(async () => {
  t = await testApp({ limits: { wsMaxConcurrent: 3 } });
});
after(() => t.close());

async function connect(): Promise<{ ws: WsClient; inbox: Inbox }> {
  const ws = (await t.app.injectWS('/v1/stream')) as WsClient;
  return { ws, inbox: new Inbox(ws) };
}

const create = (ws: WsClient, id: string, fields: Record<string, unknown>) =>
  ws.send(JSON.stringify({ type: 'completion.create', id, model: MODEL, ...fields }));

test('two completions multiplexed on one socket each match their HTTP result; a third is cancelled', async () => {
  const { ws, inbox } = await connect();
  try {
    const a = { prompt: 'Call me Ishmael.', max_tokens: 8, temperature: 0, ignore_eos: true };
    const b = { prompt: 'The sea', max_tokens: 6, temperature: 0, ignore_eos: true };
    create(ws, 'long', { prompt: 'x', max_tokens: 1500, temperature: 0, ignore_eos: true });
    create(ws, 'a', a);
    create(ws, 'b', b);
    await inbox.waitFor((m) => m.id === 'long' && m.type === 'completion.delta', 'a delta of "long"');
    ws.send(JSON.stringify({ type: 'completion.cancel', id: 'long' }));
    for (const [id, body] of [
      ['a', a],
      ['b', b],
    ] as const) {
      const done = await inbox.waitFor((m) => m.id === id && m.type === 'completion.done', `done of ${id}`);
      const text = inbox
        .of(id)
        .filter((m) => m.type === 'completion.delta')
        .map((m) => m.text)
        .join('');
      const http = (
        await t.app.inject({ method: 'POST', url: '/v1/completions', payload: body })
      ).json() as CompletionResponse;
      assert.equal(text, http.choices[0]!.text);
      assert.equal(done.finish_reason, 'length');
      assert.deepEqual(done.usage, http.usage);
    }
    const cancelled = await inbox.waitFor(
      (m) => m.id === 'long' && m.type === 'completion.done',
      'done of long',
    );
    assert.equal(cancelled.finish_reason, 'cancelled');
    const u = cancelled.usage as { completion_tokens: number };
    assert.ok(u.completion_tokens >= 1 && u.completion_tokens < 1500);
    // Every delta names its request; nothing arrives for "long" after its done.
    const longMsgs = inbox.of('long');
    assert.equal(longMsgs.at(-1)!.type, 'completion.done');
    assert.ok(inbox.messages.every((m) => m.id === 'a' || m.id === 'b' || m.id === 'long'));
  } finally {
    ws.terminate();
  }
});

test('bad messages get an error naming the request; the socket stays usable', async () => {
  const { ws, inbox } = await connect();
  try {
    ws.send('not json');
    await inbox.waitFor((m) => m.type === 'error' && /not valid JSON/.test(String(m.message)), 'JSON error');
    ws.send(JSON.stringify({ type: 'completion.create', prompt: 'a' }));
    await inbox.waitFor((m) => m.type === 'error' && /needs an "id"/.test(String(m.message)), 'id error');
    ws.send(JSON.stringify({ type: 'nope', id: 'x1' }));
    const unknown = await inbox.waitFor((m) => m.id === 'x1', 'unknown type error');
    assert.match(String(unknown.message), /unknown message type "nope"/);
    create(ws, 'v1', { prompt: 'a', max_tokens: 'ten' });
    const invalid = await inbox.waitFor((m) => m.id === 'v1', 'validation error');
    assert.deepEqual(
      { type: invalid.type, code: invalid.code, param: invalid.param, status: invalid.status },
      { type: 'error', code: 'TF_ERR_BAD_ARGS', param: 'max_tokens', status: 400 },
    );
    assert.match(String(invalid.message), /max_tokens must be integer/);
    create(ws, 'v2', { prompt: 'a', temperature: 9 });
    const range = await inbox.waitFor((m) => m.id === 'v2', 'range error');
    assert.match(String(range.message), /temperature/);
    assert.equal(range.param, 'temperature');
    ws.send(JSON.stringify({ type: 'completion.cancel', id: 'ghost' }));
    assert.equal((await inbox.waitFor((m) => m.id === 'ghost', 'cancel error')).code, 'TF_ERR_NOT_FOUND');
    create(ws, 'ok', { prompt: 'a', max_tokens: 2, ignore_eos: true });
    const done = await inbox.waitFor((m) => m.id === 'ok' && m.type === 'completion.done', 'done');
    assert.equal((done.usage as { completion_tokens: number }).completion_tokens, 2);
  } finally {
    ws.terminate();
  }
});

test('ids and types nested 10 000 deep or a megabyte long are refused briefly; the server stays up', async () => {
  // Found by test/server/fuzz.test.ts: quoting such an id in the error overflowed
  // JSON.stringify's stack inside the 'message' listener, which ended the server process.
  const { ws, inbox } = await connect();
  try {
    const deep = `${'['.repeat(10_000)}1${']'.repeat(10_000)}`;
    ws.send(`{"type":"completion.cancel","id":${deep}}`);
    const cancel = await inbox.waitFor((m) => m.type === 'error', 'the cancel error');
    assert.deepEqual([cancel.code, cancel.message], ['TF_ERR_NOT_FOUND', 'no request an array is in flight']);
    ws.send(`{"type":${deep},"id":"d1"}`);
    const type = await inbox.waitFor((m) => m.id === 'd1', 'the type error');
    assert.match(String(type.message), /^unknown message type an array;/);
    ws.send(JSON.stringify({ type: 'x'.repeat(1 << 19), id: 'd2' }));
    const long = await inbox.waitFor((m) => m.id === 'd2', 'the long type error');
    assert.ok(String(long.message).length < 300, `a ${String(long.message).length}-character message`);
    create(ws, 'ok', { prompt: 'a', max_tokens: 2, ignore_eos: true });
    await inbox.waitFor((m) => m.id === 'ok' && m.type === 'completion.done', 'a completion afterwards');
  } finally {
    ws.terminate();
  }
});

test('a socket may have only so many requests in flight; ids must be unique among them', async () => {
  const { ws, inbox } = await connect();
  try {
    const long = { prompt: 'a', max_tokens: 1500, temperature: 0, ignore_eos: true };
    for (const id of ['r1', 'r2', 'r3']) create(ws, id, long);
    await inbox.waitFor((m) => m.id === 'r3' && m.type === 'completion.delta', 'r3 running');
    create(ws, 'r1', long);
    assert.match(
      String((await inbox.waitFor((m) => m.id === 'r1' && m.type === 'error', 'duplicate')).message),
      /already in flight/,
    );
    create(ws, 'r4', long);
    const refused = await inbox.waitFor((m) => m.id === 'r4', 'limit error');
    assert.deepEqual([refused.code, refused.status], ['TF_ERR_TOO_MANY_REQUESTS', 429]);
  } finally {
    ws.terminate();
  }
  // Closing the socket cancels its requests and frees their sequences.
  const end = Date.now() + 10_000;
  while (t.engine.stats.running > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  assert.equal(t.engine.stats.running, 0);
});

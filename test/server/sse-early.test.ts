import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { assertErrorShape, MODEL, type TestApp, testApp } from './helpers.ts';

/**
 * SSE as proxies see it: the headers go out once the request is queued (before any token), a
 * `: keep-alive` comment comes while it waits, and a stream that fails after its headers is
 * counted in metrics with its real status, not the 200 it started with.
 */

let t: TestApp;
let url: string;
before(async () => {
  // One KV slot: a second request waits in the queue while the first decodes.
  t = await testApp({ maxSequences: 1, maxQueue: 2, limits: { sseKeepAliveMs: 50 } });
  url = await t.app.listen({ host: '127.0.0.1', port: 0 });
});
after(() => t.close());

const long = { model: MODEL, prompt: 'a', max_tokens: 2000, temperature: 0, ignore_eos: true, stream: true };
const post = (body: object) =>
  fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });

/** Reads `res` until `done(text)`; returns the text read (the stream stays open). */
async function readUntil(reader: ReadableStreamDefaultReader<string>, done: (text: string) => boolean) {
  let text = '';
  while (!done(text)) {
    const r = await reader.read();
    if (r.done) break;
    text += r.value;
  }
  return text;
}

test('a queued stream gets its headers and keep-alive comments before any token; a failure after the headers counts its real status', async () => {
  const hog = await post(long);
  assert.equal(hog.status, 200);
  const hogReader = hog.body!.pipeThrough(new TextDecoderStream()).getReader();
  await readUntil(hogReader, (s) => s.includes('data: {'));

  const queued = await post(long);
  // Headers while it still waits for the only slot.
  assert.equal(queued.status, 200);
  assert.match(queued.headers.get('content-type')!, /^text\/event-stream/);
  assert.equal(queued.headers.get('x-model-version'), t.version);
  // (The engine's stats lag its queue by one scheduler step.)
  for (const end = Date.now() + 10_000; t.engine.stats.waiting !== 1 && Date.now() < end; )
    await new Promise((r) => setTimeout(r, 5));
  assert.equal(t.engine.stats.waiting, 1, 'the second request is still queued');
  const reader = queued.body!.pipeThrough(new TextDecoderStream()).getReader();
  const waiting = await readUntil(reader, (s) => s.includes(': keep-alive\n\n'));
  assert.match(waiting, /^(: keep-alive\n\n)+$/, 'only comments before the first token');

  // The server shuts down: both streams end with an error event after their 200 headers.
  await t.app.tokenformer.drain(0);
  for (const r of [reader, hogReader]) {
    const rest = await readUntil(r, () => false);
    const last = rest.trim().split('\n').at(-1)!;
    assert.ok(last.startsWith('data: {'), rest.slice(-200));
    assertErrorShape(JSON.parse(last.slice(6)), 'TF_ERR_SHUTTING_DOWN');
  }
  const metrics = await (await fetch(`${url}/metrics`)).text();
  const count = (status: number) =>
    Number(
      metrics
        .split('\n')
        .find((l) =>
          l.startsWith(
            `tokenformer_requests_total{route="/v1/completions",status="${status}",model_name="${MODEL}"} `,
          ),
        )
        ?.split(' ')[1] ?? 0,
    );
  assert.equal(count(503), 2);
  assert.equal(count(200), 0);
});

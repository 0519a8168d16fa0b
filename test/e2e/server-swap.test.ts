import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { ServerProcess, until } from '../../scripts/harness/server.ts';
import { sseJson } from '../../scripts/harness/sse.ts';
import { openWs } from '../../scripts/harness/ws.ts';
import { swapModelsRoot } from '../engine/served-model.ts';
import { tempDir } from '../helpers.ts';

const TOKEN = 'test-admin-token';
let server: ServerProcess;
const cleanups: (() => void)[] = [];

before(async () => {
  const dir = tempDir({ after: (fn) => cleanups.push(fn) });
  const root = await swapModelsRoot(dir);
  process.env.TOKENFORMER_ADMIN_TOKEN = TOKEN;
  server = await ServerProcess.start(
    ['--models-dir', root, '--model', 'a', '--device', 'cpu', '--threads', '1'],
    { cwd: dir },
  );
  delete process.env.TOKENFORMER_ADMIN_TOKEN;
});
after(async () => {
  await server?.stop();
  for (const c of cleanups) c();
});

const admin = (path: string, body?: unknown, token = TOKEN) =>
  fetch(`${server.url}${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });

const request = { prompt: 'Call me Ishmael.', max_tokens: 2000, temperature: 0, ignore_eos: true };

function sseText(raw: string): string {
  return sseJson<{ choices: { text?: string }[] }>(raw)
    .map((c) => c.choices[0]?.text ?? '')
    .join('');
}

/** Text per choice index from an SSE body. */
function choiceTexts(raw: string): string[] {
  const out: string[] = [];
  for (const chunk of sseJson<{ choices: { index: number; text?: string }[] }>(raw)) {
    for (const c of chunk.choices) {
      out[c.index] = (out[c.index] ?? '') + (c.text ?? '');
    }
  }
  return out;
}

test('admin routes need the bearer token (401) and validate the body', async () => {
  assert.equal((await admin('/admin/models', undefined, 'wrong')).status, 401);
  const noAuth = await fetch(`${server.url}/admin/swap`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: '{"model":"b"}',
  });
  assert.equal(noAuth.status, 401);
  assert.match(JSON.stringify(await noAuth.json()), /"code":"TF_ERR_UNAUTHORIZED"/);
  assert.equal((await admin('/admin/swap', { model: 'b', policy: 'sideways' })).status, 400);
  assert.equal((await admin('/admin/swap', { model: '../served' })).status, 400);
  const list = (await (await admin('/admin/models')).json()) as {
    active: { name: string };
    models: { name: string }[];
  };
  assert.equal(list.active.name, 'a');
  assert.deepEqual(list.models.map((m) => m.name).sort(), ['a', 'b', 'bad', 'c']);
});

test('a failed swap answers 422 with the reason and the old model keeps serving', async () => {
  const r = await admin('/admin/swap', { model: 'bad', policy: 'drain' });
  assert.equal(r.status, 422);
  const body = (await r.json()) as { error: { message: string } };
  assert.match(body.error.message, /swap to bad failed, the current model keeps serving/);
  assert.doesNotMatch(body.error.message, /\/tmp\//, 'no file paths in responses');
  const ok = await fetch(`${server.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...request, max_tokens: 2 }),
  });
  assert.equal(ok.status, 200);
  assert.ok((await server.metric('tokenformer_model_swaps_total{result="failure"}')) >= 1);
});

test('swap with migrate while an SSE stream is open: the stream continues on the new model, unbroken', async (t) => {
  // Swap to b and back with drain first: b is exported into the cache once, so the migrating
  // swap below is quick (a worker start and a warm-up) next to the stream: 16 choices of 2000
  // greedy tokens, decoded together, last several times as long as the swap.
  for (const model of ['b', 'a'])
    assert.equal((await admin('/admin/swap', { model, policy: 'drain' })).status, 200);
  const reference = (await (
    await fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(request),
    })
  ).json()) as { choices: { text: string }[] };
  const res = await fetch(`${server.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...request, n: 16, stream: true }),
  });
  assert.equal(res.status, 200);
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let raw = '';
  while (sseText(raw).length < 8) raw += (await reader.read()).value ?? '';
  // An idle WebSocket hears about the swap too.
  const { ws, inbox } = await openWs(`${server.url.replace('http', 'ws')}/v1/stream`);
  const swap = await admin('/admin/swap', { model: 'b', policy: 'migrate' });
  assert.equal(swap.status, 200, await swap.clone().text());
  const result = (await swap.json()) as {
    migrated: number;
    durationMs: number;
    kvMoved: boolean;
    from: { name: string; version: string };
    to: { name: string; version: string };
  };
  t.diagnostic(`swap took ${result.durationMs.toFixed(0)} ms; ${result.migrated} streams migrated`);
  assert.equal(result.to.name, 'b');
  assert.ok(result.migrated >= 1, 'the swap finished while the stream was still open');
  // b is a zero/keep growth of a, untrained: the streams' KV caches moved as they were.
  assert.equal(result.kvMoved, true);
  const notice = await inbox.waitFor((m) => m.type === 'model.swapped', 'a model.swapped notice');
  assert.deepEqual(notice, {
    type: 'model.swapped',
    from: result.from,
    to: result.to,
    policy: 'migrate',
    migrated: result.migrated,
  });
  ws.close();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    raw += value;
  }
  assert.match(raw, /data: \[DONE\]\n\n$/);
  const texts = choiceTexts(raw);
  assert.equal(texts.length, 16);
  for (const text of texts) assert.equal(text, reference.choices[0]!.text);
  // Each chunk carries the served name, and in system_fingerprint the version that produced it:
  // a's until the swap, b's after.
  const chunks = sseJson<{ model: string; system_fingerprint: string }>(raw);
  assert.ok(chunks.every((c) => c.model === 'a'));
  const firstB = chunks.findIndex((c) => c.system_fingerprint === result.to.version);
  assert.ok(firstB > 0, 'chunks from a came first');
  assert.ok(chunks.slice(0, firstB).every((c) => c.system_fingerprint === result.from.version));
  assert.ok(chunks.slice(firstB).every((c) => c.system_fingerprint === result.to.version));
  // /v1/models keeps the served name and says which version serves now.
  const models = (await (await fetch(`${server.url}/v1/models`)).json()) as {
    data: { id: string; version: string; root: string }[];
  };
  assert.equal(models.data[0]!.id, 'a');
  assert.equal(models.data[0]!.version, result.to.version);
  assert.equal(models.data[0]!.root, 'b');
  assert.equal(await server.metric('tokenformer_model_swaps_total{result="success"}'), 3);
  // The choices decoding at the swap moved their KV caches; those still queued (8 slots for 16
  // choices) had none yet and queued again on b.
  const moved = await server.metric('tokenformer_streams_migrated_total{kv="moved"}');
  assert.ok(moved >= 1);
  assert.equal(
    moved + (await server.metric('tokenformer_streams_migrated_total{kv="recomputed"}')),
    result.migrated,
  );
  assert.equal(await server.metric('tokenformer_open_streams'), 0);
  await until(
    async () => ((await server.metric('tokenformer_models_loaded')) === 1 ? true : undefined),
    'the old model released',
  );
  assert.match(
    await server.metricsText(),
    new RegExp(
      `tokenformer_model_info\\{model="a",version="${result.to.version}",model_name="a",source="b",state="serving"\\} 1`,
    ),
  );
});

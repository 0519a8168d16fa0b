import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import OpenAI from 'openai';
import { ServerProcess, until } from '../../scripts/harness/server.ts';
import { readSse, sseData } from '../../scripts/harness/sse.ts';
import { openWs } from '../../scripts/harness/ws.ts';
import { servedModel } from '../engine/served-model.ts';
import { CHROMIUM_FLAGS, chromiumEvaluate, chromiumPath } from '../server/processes.ts';
import { promtoolCheck, REQUIRED_METRICS } from '../server/promtool.ts';

/**
 * The server as users run it: `scripts/serve.ts` in its own process on a loopback port, spoken to
 * by real clients (the openai npm client, fetch, ws, promtool, headless Chromium).
 */

let dir: string;
let checkpoint: string;
let server: ServerProcess;
const servers: ServerProcess[] = [];
const MODEL = 'export'; // the served model is named after its directory

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tf-e2e-server-'));
  ({ checkpoint } = await servedModel(dir));
  // `--model NAME` is looked up under --models-dir.
  server = await ServerProcess.start([
    '--models-dir',
    dir,
    '--model',
    'export',
    '--device',
    'cpu',
    '--threads',
    '1',
  ]);
  servers.push(server);
});

after(async () => {
  for (const s of servers) await s.stop(10_000);
  rmSync(dir, { recursive: true, force: true });
});

const post = (url: string, body: Record<string, unknown>, signal?: AbortSignal) =>
  fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    ...(signal ? { signal } : {}),
  });

test('the openai client: streaming and non-streaming completions give the same text', async () => {
  const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'x', maxRetries: 0, timeout: 60_000 });
  const models = await client.models.list();
  // The served name, then the loaded version (which a request may pin).
  assert.equal(models.data[0]!.id, MODEL);
  assert.match(models.data[1]!.id, /^[0-9a-f]{12}-step\d+$/);
  assert.equal(models.data.length, 2);
  const params = { model: MODEL, prompt: 'Call me Ishmael. Some years ago', max_tokens: 16, temperature: 0 };
  const plain = await client.completions.create(params);
  assert.equal(plain.object, 'text_completion');
  assert.equal(plain.model, MODEL);
  assert.ok(plain.choices[0]!.text.length > 0);
  assert.ok(plain.usage!.completion_tokens >= 1);
  const stream = await client.completions.create({
    ...params,
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let finish: string | null = null;
  let usage: OpenAI.CompletionUsage | undefined | null;
  for await (const chunk of stream) {
    for (const c of chunk.choices) {
      text += c.text;
      finish = c.finish_reason ?? finish;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(text, plain.choices[0]!.text);
  assert.equal(finish, plain.choices[0]!.finish_reason);
  assert.deepEqual(usage, plain.usage);
  // Errors come back as the client's typed errors, from the OpenAI error shape.
  await assert.rejects(
    client.completions.create({ ...params, temperature: 7 }),
    (err: InstanceType<typeof OpenAI.APIError>) => err.status === 400 && /temperature/.test(err.message),
  );
});

test('raw SSE: OpenAI chunks, ending with data: [DONE]', async () => {
  const res = await post(server.url, { prompt: 'The sea', max_tokens: 5, stream: true });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type')!, /^text\/event-stream/);
  const body = await readSse(res);
  assert.ok(body.endsWith('data: [DONE]\n\n'), body.slice(-200));
  const data = sseData(body);
  assert.equal(data.filter((d) => d === '[DONE]').length, 1);
  for (const d of data.slice(0, -1))
    assert.equal((JSON.parse(d) as { object: string }).object, 'text_completion');
});

test('a client that disconnects mid-stream frees its sequence', async () => {
  const ac = new AbortController();
  const res = await post(
    server.url,
    { prompt: 'a', max_tokens: 2000, temperature: 0, ignore_eos: true, stream: true },
    ac.signal,
  );
  await readSse(res, (text) => sseData(text).length >= 3);
  assert.equal(await server.metric('tokenformer_requests_running'), 1);
  ac.abort();
  await until(
    async () => ((await server.metric('tokenformer_requests_running')) === 0 ? true : undefined),
    'tokenformer_requests_running to return to 0',
  );
  await until(
    async () =>
      (await server.metric('tokenformer_requests_total{route="/v1/completions",status="499"}')) >= 1
        ? true
        : undefined,
    'the disconnect to be counted as 499',
  );
  // The same for a plain (non-streaming) request abandoned while it generates.
  const plain = new AbortController();
  const pending = post(
    server.url,
    { prompt: 'a', max_tokens: 2000, temperature: 0, ignore_eos: true },
    plain.signal,
  );
  await until(
    async () => ((await server.metric('tokenformer_requests_running')) === 1 ? true : undefined),
    'the plain request to run',
  );
  plain.abort();
  await assert.rejects(pending, { name: 'AbortError' });
  await until(
    async () => ((await server.metric('tokenformer_requests_running')) === 0 ? true : undefined),
    'the abandoned plain request to be freed',
  );
});

test('WebSocket: two requests multiplexed on one socket, a third cancelled', async () => {
  const { ws, inbox } = await openWs(`${server.url}/v1/stream`);
  try {
    const a = { prompt: 'Call me Ishmael.', max_tokens: 10, temperature: 0, ignore_eos: true };
    const b = { prompt: 'It is a way I have', max_tokens: 7, temperature: 0, ignore_eos: true };
    for (const [id, body] of [
      ['long', { prompt: 'x', max_tokens: 2000, temperature: 0, ignore_eos: true }],
      ['a', a],
      ['b', b],
    ] as const)
      ws.send(JSON.stringify({ type: 'completion.create', id, model: MODEL, ...body }));
    await inbox.waitFor((m) => m.id === 'long' && m.type === 'completion.delta', 'a delta of long');
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
      const http = (await (await post(server.url, body)).json()) as { choices: { text: string }[] };
      assert.equal(text, http.choices[0]!.text);
      assert.equal(done.finish_reason, 'length');
    }
    const cancelled = await inbox.waitFor((m) => m.id === 'long' && m.type === 'completion.done', 'cancel');
    assert.equal(cancelled.finish_reason, 'cancelled');
  } finally {
    ws.close();
  }
  await until(
    async () => ((await server.metric('tokenformer_requests_running')) === 0 ? true : undefined),
    'the cancelled sequence to be freed',
  );
});

test('promtool check metrics passes on the scraped /metrics, which has every required name', async () => {
  const text = await server.metricsText();
  for (const name of REQUIRED_METRICS) assert.match(text, new RegExp(`^# TYPE ${name} `, 'm'), name);
  assert.match(
    text,
    new RegExp(
      `^tokenformer_model_info\\{model="${MODEL}",version="[0-9a-f]{12}-step\\d+",model_name="${MODEL}",source="${MODEL}",state="serving"\\} 1$`,
      'm',
    ),
  );
  const check = promtoolCheck(text);
  assert.ok(check.ok, check.output);
});

test('the playground loads in headless Chromium and streams a completion', async () => {
  const shot = join(dir, 'playground.png');
  const r = spawnSync(
    chromiumPath(),
    [
      ...CHROMIUM_FLAGS,
      `--user-data-dir=${join(dir, 'chromium-1')}`,
      `--screenshot=${shot}`,
      `${server.url}/`,
    ],
    { encoding: 'utf8', timeout: 90_000 },
  );
  assert.equal(r.status, 0, r.stderr.slice(-2000));
  assert.ok(statSync(shot).size > 1000);
  assert.deepEqual([...readFileSync(shot).subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47]); // PNG
  // Functional: ?autorun=1 streams a completion into the page through fetch + ReadableStream.
  const state = (await chromiumEvaluate(
    join(dir, 'chromium-2'),
    `${server.url}/?prompt=${encodeURIComponent('Call me Ishmael.')}&max_tokens=12&temperature=0&autorun=1`,
    `({ state: document.body.dataset.state, status: document.getElementById('status').textContent,
        completion: document.getElementById('completion')?.textContent ?? '' })`,
    (v) => ['done', 'error'].includes((v as { state?: string } | undefined)?.state ?? ''),
  )) as { state: string; status: string; completion: string };
  assert.equal(state.state, 'done', state.status);
  assert.match(state.status, /^done: 12 tokens in [\d.]+ s, finish_reason length$/);
  assert.ok(state.completion.length > 0);
});

test('a full queue answers 429 with Retry-After (--max-sequences 1 --max-queue 1)', async () => {
  // A checkpoint directory: exported on first use into .cache/ under the server's working directory
  // (a temp dir here, which also shows the server runs from outside the project root).
  const small = await ServerProcess.start(
    ['--model', checkpoint, '--device', 'cpu', '--threads', '1', '--max-sequences', '1', '--max-queue', '1'],
    { cwd: dir },
  );
  servers.push(small);
  const long = { prompt: 'a', max_tokens: 2000, temperature: 0, ignore_eos: true, stream: true };
  const running = new AbortController();
  const waiting = new AbortController();
  try {
    const first = await post(small.url, long, running.signal);
    assert.equal(first.status, 200);
    // Queued; the abort below ends it with an AbortError (or ends its body, if headers came first).
    const second = post(small.url, long, waiting.signal).catch((err: unknown) => {
      if ((err as Error).name !== 'AbortError') throw err;
    });
    await until(
      async () => ((await small.metric('tokenformer_requests_waiting')) === 1 ? true : undefined),
      'one request waiting',
    );
    const third = await post(small.url, { prompt: 'b', max_tokens: 2 });
    assert.equal(third.status, 429);
    assert.equal(third.headers.get('retry-after'), '1');
    const body = (await third.json()) as { error: { code: string; type: string; message: string } };
    assert.equal(body.error.code, 'TF_ERR_QUEUE_FULL');
    assert.equal(body.error.type, 'rate_limit_error');
    running.abort();
    waiting.abort();
    await second;
    assert.match(small.output, /exporting .*checkpoint/);
    await until(
      async () =>
        (await small.metric('tokenformer_requests_running')) === 0 &&
        (await small.metric('tokenformer_requests_waiting')) === 0
          ? true
          : undefined,
      'the engine to be idle',
    );
  } finally {
    running.abort();
    waiting.abort();
    assert.equal(await small.stop(), 0);
  }
});

test('SIGTERM while a stream is open: the stream completes, then the process exits 0', async () => {
  const res = await post(server.url, {
    prompt: 'a',
    max_tokens: 200,
    temperature: 0,
    ignore_eos: true,
    stream: true,
  });
  assert.equal(res.status, 200);
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let body = (await reader.read()).value ?? '';
  server.proc.kill('SIGTERM');
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    body += value;
  }
  assert.ok(body.endsWith('data: [DONE]\n\n'), body.slice(-300));
  const chunks = sseData(body)
    .slice(0, -1)
    .map((d) => JSON.parse(d) as { choices: { finish_reason: string | null }[] });
  assert.equal(chunks.at(-1)!.choices[0]!.finish_reason, 'length');
  let timer: NodeJS.Timeout | undefined;
  const code = await Promise.race([
    server.exited,
    new Promise<'hung'>((r) => {
      timer = setTimeout(() => r('hung'), 30_000);
    }),
  ]);
  clearTimeout(timer);
  assert.equal(code, 0, server.output.slice(-2000));
  assert.match(server.output, /shutting down: draining/);
  assert.match(server.output, /drained; exiting/);
});

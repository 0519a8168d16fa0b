import assert from 'node:assert/strict';
import { cpSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import OpenAI from 'openai';
import { ROOT, ServerProcess, until } from '../../scripts/harness/server.ts';
import { WebSocket, type WsClient, type WsOptions } from '../../scripts/harness/ws.ts';
import { buildApp } from '../../src/server/app.ts';
import { MIN_API_KEY_LENGTH, parseApiKeys, parseCorsOrigins } from '../../src/server/auth.ts';
import { withoutPaths } from '../../src/server/errors.ts';
import { TokenBucket } from '../../src/server/token-bucket.ts';
import { swapModelsRoot } from '../engine/served-model.ts';
import { tempDir } from '../helpers.ts';
import { assertErrorShape } from './helpers.ts';
import { chromiumEvaluate } from './processes.ts';

/**
 * The security rules of the server (README "Security"), on real server processes: "locked"
 * has API keys (file and environment), an admin token and one CORS origin; "bare" has none of
 * them. Clients are fetch, the openai client and ws.
 */

const FILE_KEY = 'file-key-0123456789abcdef';
const ENV_KEY = 'env-key-0123456789abcdef';
const ADMIN = 'admin-token-for-the-test';
const ALLOWED = 'https://allowed.example';

let dir: string;
let root: string;
let locked: ServerProcess;
let bare: ServerProcess;
const cleanups: (() => void)[] = [];

before(async () => {
  dir = tempDir({ after: (fn) => cleanups.push(fn) });
  root = await swapModelsRoot(dir);
  // A checkpoint whose weights are cut short, and a link out of the models root.
  cpSync(join(root, 'a'), join(root, 'corrupt'), { recursive: true });
  truncateSync(join(root, 'corrupt', 'model.safetensors'), 1000);
  symlinkSync(join(dir, 'served'), join(root, 'escape'));
  const keyFile = join(dir, 'api-keys');
  writeFileSync(keyFile, `# rotated monthly\n${FILE_KEY}\n\n`);
  const args = ['--models-dir', root, '--model', 'a', '--threads', '1'];
  process.env.TOKENFORMER_API_KEY = ENV_KEY;
  process.env.TOKENFORMER_ADMIN_TOKEN = ADMIN;
  try {
    locked = await ServerProcess.start(
      [...args, '--device', 'cpu', '--api-key-file', keyFile, '--cors-origin', ALLOWED],
      { cwd: dir },
    );
  } finally {
    delete process.env.TOKENFORMER_API_KEY;
    delete process.env.TOKENFORMER_ADMIN_TOKEN;
  }
  // `auto` on a machine without CUDA: /ready then names the fallback reason (checked for paths).
  bare = await ServerProcess.start([...args, '--device', 'auto'], { cwd: dir });
});
after(async () => {
  await Promise.all([locked?.stop(), bare?.stop()]);
  for (const c of cleanups) c();
});

const auth = (key: string) => ({ authorization: `Bearer ${key}` });
const json = { 'content-type': 'application/json' };

/** No stack frame, no file path of the server (repository, models root, temp dir) in a body. */
function assertNoLeak(body: string, what: string): void {
  for (const secret of [ROOT, root, dir, '/tmp/'])
    assert.ok(!body.includes(secret), `${what} leaks the path ${secret}: ${body}`);
  assert.doesNotMatch(body, / {4}at |\.ts:\d+|node_modules/, `${what} leaks a stack: ${body}`);
}

// ---------------------------------------------------------------------------------------------
// WebSockets with the options the tests need (headers, subprotocols, origin).

/** Opens a WebSocket; resolves with it, or with the HTTP status that refused the upgrade. */
function openWs(
  base: string,
  protocols: string[] = [],
  options: WsOptions = {},
): Promise<{ ws: WsClient } | { status: number }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${base.replace(/^http/, 'ws')}/v1/stream`, protocols, options);
    const timer = setTimeout(() => reject(new Error('the WebSocket did not open in 10 s')), 10_000);
    ws.on('open', () => {
      clearTimeout(timer);
      resolve({ ws });
    });
    ws.on('unexpected-response', (_req, res) => {
      clearTimeout(timer);
      ws.terminate();
      resolve({ status: res.statusCode });
    });
    ws.on('error', () => {}); // the refusal above is the answer
  });
}

/** Sends one completion and waits for its `completion.done`. */
async function completeOverWs(ws: WsClient): Promise<Record<string, unknown>> {
  const got: Record<string, unknown>[] = [];
  ws.on('message', (d) => got.push(JSON.parse(d.toString('utf8')) as Record<string, unknown>));
  ws.send(JSON.stringify({ type: 'completion.create', id: 'r1', prompt: 'Call me', max_tokens: 3 }));
  return until(
    () => got.find((m) => m.type === 'completion.done' || m.type === 'error'),
    'completion.done on the WebSocket',
  );
}

// ---------------------------------------------------------------------------------------------

test('API keys: /health, /ready, /metrics and the playground page stay open; every other route answers 401 without a key', async () => {
  for (const path of ['/health', '/ready', '/metrics', '/'])
    assert.equal((await fetch(`${locked.url}${path}`)).status, 200, path);
  const routes: [string, string, unknown?][] = [
    ['GET', '/v1/models'],
    ['POST', '/v1/completions', { prompt: 'Hi', max_tokens: 1 }],
    ['POST', '/tokenize', { prompt: 'Hi' }],
    ['POST', '/detokenize', { tokens: [1] }],
    ['GET', '/no/such/route'],
  ];
  for (const [method, path, body] of routes) {
    for (const headers of [{}, auth('wrong-key-0123456789abcdef'), { authorization: `Basic ${FILE_KEY}` }]) {
      const r = await fetch(`${locked.url}${path}`, {
        method,
        headers: { ...json, ...headers },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      assert.equal(r.status, 401, `${method} ${path} with ${JSON.stringify(headers)}`);
      assert.equal(r.headers.get('www-authenticate'), 'Bearer realm="tokenformer"');
      assertErrorShape(await r.json(), 'TF_ERR_UNAUTHORIZED');
    }
  }
  // Either key works (the file's and the environment's), and the scheme is case-insensitive.
  for (const headers of [auth(FILE_KEY), auth(ENV_KEY), { authorization: `bearer ${FILE_KEY}` }])
    assert.equal((await fetch(`${locked.url}/v1/models`, { headers })).status, 200);
  const tok = await fetch(`${locked.url}/tokenize`, {
    method: 'POST',
    headers: { ...json, ...auth(ENV_KEY) },
    body: JSON.stringify({ prompt: 'Call me' }),
  });
  assert.equal(tok.status, 200);
  // Refusals are counted like any answer.
  assert.ok((await locked.metric('tokenformer_requests_total{route="/v1/models",status="401"}')) >= 3);
});

test('the openai client with an API key completes; with a wrong one it gets an AuthenticationError', async () => {
  const client = (apiKey: string) =>
    new OpenAI({ baseURL: `${locked.url}/v1`, apiKey, maxRetries: 0, timeout: 60_000 });
  const done = await client(FILE_KEY).completions.create({ model: 'a', prompt: 'Call me', max_tokens: 3 });
  assert.equal(done.usage?.completion_tokens, 3);
  await assert.rejects(
    client('wrong-key-0123456789abcdef').completions.create({ model: 'a', prompt: 'Hi', max_tokens: 1 }),
    (err: unknown) => err instanceof OpenAI.AuthenticationError && err.status === 401,
  );
});

test('WebSocket: a key in the Authorization header or as the subprotocol bearer.KEY; none or a wrong one is 401', async () => {
  assert.deepEqual(await openWs(locked.url), { status: 401 });
  assert.deepEqual(await openWs(locked.url, ['tokenformer', 'bearer.wrong-key-0123456789abcdef']), {
    status: 401,
  });
  const byHeader = await openWs(locked.url, [], { headers: auth(ENV_KEY) });
  assert.ok('ws' in byHeader);
  assert.equal((await completeOverWs(byHeader.ws)).type, 'completion.done');
  byHeader.ws.close();
  // What a browser does: new WebSocket(url, ['tokenformer', 'bearer.' + key]); the key offered
  // first, so a server that took the first offer would echo it.
  const byProtocol = await openWs(locked.url, [`bearer.${FILE_KEY}`, 'tokenformer']);
  assert.ok('ws' in byProtocol);
  assert.equal(byProtocol.ws.protocol, 'tokenformer', 'the server selects tokenformer, never echoes the key');
  assert.equal((await completeOverWs(byProtocol.ws)).type, 'completion.done');
  byProtocol.ws.close();
});

test('admin routes take the admin token, not an API key: 401 with a key, 200 with the token; 403 without a configured token', async () => {
  const withKey = await fetch(`${locked.url}/admin/models`, { headers: auth(FILE_KEY) });
  assert.equal(withKey.status, 401);
  assertErrorShape(await withKey.json(), 'TF_ERR_UNAUTHORIZED');
  assert.equal((await fetch(`${locked.url}/admin/models`, { headers: auth(ADMIN) })).status, 200);
  const off = await fetch(`${bare.url}/admin/models`, { headers: auth(ADMIN) });
  assert.equal(off.status, 403);
  assertErrorShape(await off.json(), 'TF_ERR_FORBIDDEN');
});

test('CORS is off unless configured: no Access-Control headers, preflights unanswered', async () => {
  const preflight = (base: string, origin: string) =>
    fetch(`${base}/v1/completions`, {
      method: 'OPTIONS',
      headers: {
        origin,
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'authorization, content-type',
      },
    });
  const none = await preflight(bare.url, ALLOWED);
  assert.equal(none.headers.get('access-control-allow-origin'), null);
  assert.equal(none.headers.get('access-control-allow-methods'), null);
  assert.equal(none.status, 404);
  const plain = await fetch(`${bare.url}/v1/models`, { headers: { origin: ALLOWED } });
  assert.equal(plain.status, 200);
  assert.equal(plain.headers.get('access-control-allow-origin'), null);

  // Configured: the listed origin is allowed (preflight without a key, then the keyed request)…
  const ok = await preflight(locked.url, ALLOWED);
  assert.equal(ok.status, 204);
  assert.equal(ok.headers.get('access-control-allow-origin'), ALLOWED);
  assert.match(ok.headers.get('access-control-allow-headers') ?? '', /authorization/);
  const get = await fetch(`${locked.url}/v1/models`, { headers: { origin: ALLOWED, ...auth(FILE_KEY) } });
  assert.equal(get.headers.get('access-control-allow-origin'), ALLOWED);
  assert.match(get.headers.get('access-control-expose-headers') ?? '', /x-request-id/);
  // … another is not.
  const evil = await preflight(locked.url, 'https://evil.example');
  assert.equal(evil.headers.get('access-control-allow-origin'), null);
  const evilGet = await fetch(`${locked.url}/v1/models`, {
    headers: { origin: 'https://evil.example', ...auth(FILE_KEY) },
  });
  assert.equal(evilGet.headers.get('access-control-allow-origin'), null);
});

test('WebSockets from another site are refused (403); same-origin and configured origins are not', async () => {
  assert.deepEqual(await openWs(bare.url, [], { origin: 'https://evil.example' }), { status: 403 });
  const same = await openWs(bare.url, [], { origin: bare.url });
  assert.ok('ws' in same);
  same.ws.close();
  const noOrigin = await openWs(bare.url); // not a browser
  assert.ok('ws' in noOrigin);
  noOrigin.ws.close();
  assert.deepEqual(
    await openWs(locked.url, [], { origin: 'https://evil.example', headers: auth(FILE_KEY) }),
    {
      status: 403,
    },
  );
  const allowed = await openWs(locked.url, [], { origin: ALLOWED, headers: auth(FILE_KEY) });
  assert.ok('ws' in allowed);
  allowed.ws.close();
});

test('oversized headers get 431 in the error shape and the server keeps serving', async () => {
  const r = await fetch(`${bare.url}/v1/models`, { headers: { 'x-padding': 'x'.repeat(20_000) } });
  assert.equal(r.status, 431);
  assertErrorShape(await r.json(), 'TF_ERR_HEADERS_TOO_LARGE');
  assert.equal(
    (await fetch(`${bare.url}/v1/models`, { headers: { 'x-padding': 'x'.repeat(8_000) } })).status,
    200,
  );
  assert.equal((await fetch(`${bare.url}/health`)).status, 200);
});

test('a WebSocket sending faster than its message rate gets one error, then close 1008', async () => {
  const opened = await openWs(bare.url);
  assert.ok('ws' in opened);
  const { ws } = opened;
  const got: Record<string, unknown>[] = [];
  let closed: number | undefined;
  ws.on('message', (d) => got.push(JSON.parse(d.toString('utf8')) as Record<string, unknown>));
  ws.on('close', (code) => {
    closed = code;
  });
  // Far more than one second's burst (100), sent at once.
  for (let i = 0; i < 1000; i++) ws.send('{"type":"ping"}');
  await until(() => closed, 'the server to close the socket');
  assert.equal(closed, 1008);
  const errors = got.filter((m) => m.type === 'error');
  assert.equal(errors.length, 1);
  assert.equal(errors[0]!.code, 'TF_ERR_RATE_LIMITED');
  const pongs = got.filter((m) => m.type === 'pong').length;
  assert.ok(pongs >= 100 && pongs < 1000, `${pongs} pongs`);
  // Other sockets are unaffected.
  const other = await openWs(bare.url);
  assert.ok('ws' in other);
  assert.equal((await completeOverWs(other.ws)).type, 'completion.done');
  other.ws.close();
});

/**
 * POSTs a body over the server's limit the way a well-behaved client can read the answer: the
 * headers first (the server refuses from Content-Length alone), the body only if no answer came.
 * A fetch would race its body upload against the early 413 and the closed socket (EPIPE).
 */
function oversizedPost(
  base: string,
  path: string,
  bytes: number,
  headers: Record<string, string>,
): Promise<{ status: number; body: string }> {
  const url = new URL(path, base);
  return new Promise((resolve, reject) => {
    const r = request(
      {
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        method: 'POST',
        headers: { ...headers, 'content-type': 'application/json', 'content-length': String(bytes) },
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (c: string) => {
          body += c;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    r.on('error', (err) => (r.writableEnded ? undefined : reject(err)));
    r.flushHeaders();
    const late = setTimeout(() => r.end(Buffer.alloc(bytes, 0x20)), 5_000);
    r.on('response', () => clearTimeout(late));
  });
}

test('no stack traces or file paths in any error answer', async () => {
  const bodies: [string, number, string][] = [];
  /** `echo`: what the client sent and may see again (the model name it asked for). */
  const call = async (what: string, path: string, init: RequestInit = {}, echo?: string) => {
    const r = await fetch(`${locked.url}${path}`, init);
    const text = await r.text();
    bodies.push([
      what,
      r.status,
      echo ? text.replaceAll(JSON.stringify(JSON.stringify(echo)).slice(1, -1), '"…"') : text,
    ]);
    return r.status;
  };
  const post = (body: string, headers: Record<string, string> = auth(FILE_KEY)) => ({
    method: 'POST',
    headers: { ...json, ...headers },
    body,
  });
  assert.equal(await call('bad JSON', '/v1/completions', post('{"prompt": ')), 400);
  assert.equal(await call('wrong type', '/v1/completions', post('{"prompt": 5, "max_tokens": "x"}')), 400);
  assert.equal(await call('unknown model', '/v1/completions', post('{"model": "zzz", "prompt": "x"}')), 404);
  assert.equal(await call('unknown token', '/detokenize', post('{"tokens": [99999999]}')), 400);
  assert.equal(await call('not found', '/v1/nothing', { headers: auth(FILE_KEY) }), 404);
  const large = await oversizedPost(locked.url, '/tokenize', 2 << 20, auth(FILE_KEY));
  bodies.push(['too large', large.status, large.body]);
  assert.equal(large.status, 413);
  assert.equal(
    await call('media type', '/tokenize', {
      ...post('x'),
      headers: { ...auth(FILE_KEY), 'content-type': 'application/xml' },
    }),
    415,
  );
  const swap = (what: string, model: string) =>
    call(what, '/admin/swap', post(JSON.stringify({ model, policy: 'drain' }), auth(ADMIN)), model);
  assert.equal(await swap('swap to a missing model', 'missing'), 404);
  assert.equal(await swap('swap with ..', '../served/checkpoint'), 400);
  assert.equal(await swap('swap to an absolute path', join(dir, 'served', 'checkpoint')), 400);
  assert.equal(await swap('swap through a symlink', 'escape/checkpoint'), 400);
  assert.equal(await swap('swap to a config without a model', 'bad'), 422);
  assert.equal(await swap('swap to truncated weights', 'corrupt'), 422);
  const ready = await fetch(`${bare.url}/ready`);
  bodies.push(['ready (device auto)', ready.status, await ready.text()]);
  for (const [what, status, body] of bodies) {
    assertNoLeak(body, what);
    if (status >= 400) assert.match(body, /^\{"error":\{"message":/, what);
  }
  // The swap failures still say why, by the name the client gave.
  const body = (what: string) => bodies.find(([w]) => w === what)![2];
  assert.match(body('swap to truncated weights'), /swap to corrupt failed.*model\.safetensors/);
  assert.match(body('swap with ..'), /model "…" is not inside the models root/);
  assert.match(body('swap through a symlink'), /model "…" resolves outside the models root/);
  // The old model kept serving through all of it.
  assert.equal((await fetch(`${locked.url}/ready`)).status, 200);
});

test('a client that sends its headers too slowly (slowloris) gets 408 and is disconnected', async () => {
  // A real listening server with short limits; the engine never loads (/health needs none).
  const app = buildApp({
    registry: new Promise(() => {}),
    servedNames: ['m'],
    limits: { headersTimeoutMs: 300, receiveTimeoutMs: 600 },
  });
  const address = await app.listen({ host: '127.0.0.1', port: 0 });
  try {
    const { port } = new URL(address);
    const socket = connect(Number(port), '127.0.0.1');
    let answer = '';
    socket.setEncoding('utf8').on('data', (s: string) => {
      answer += s;
    });
    const closed = new Promise<void>((r) => socket.on('close', () => r()));
    socket.write('GET /health HTTP/1.1\r\nHost: x\r\n'); // and never the blank line
    await until(() => (socket.closed ? true : undefined), 'the server to close the slow connection', 10_000);
    await closed;
    assert.match(answer, /^HTTP\/1\.1 408 /);
    assertErrorShape(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)), 'TF_ERR_REQUEST_TIMEOUT');
    assert.equal((await fetch(`${address}/health`)).status, 200);
  } finally {
    await app.close();
  }
});

test('key and origin parsing: one per line or comma-separated, comments skipped, bad ones named', () => {
  const long = (c: string) => c.repeat(MIN_API_KEY_LENGTH);
  assert.deepEqual(parseApiKeys(`# keys\n${long('a')}\n\n ${long('b')} , ${long('c')}\r\n`, 'f'), [
    long('a'),
    long('b'),
    long('c'),
  ]);
  assert.deepEqual(parseApiKeys('', 'env'), []);
  assert.throws(() => parseApiKeys('short', 'keys.txt'), /keys\.txt, line 1: an API key must be at least 16/);
  assert.throws(
    () => parseApiKeys(`${long('a')}\n${long('é')}`, 'keys.txt'),
    /line 2: an API key may hold only/,
  );
  assert.deepEqual(parseCorsOrigins('https://a.example, http://localhost:3000,*', 'x'), [
    'https://a.example',
    'http://localhost:3000',
    '*',
  ]);
  assert.throws(
    () => parseCorsOrigins('https://a.example/', '--cors-origin'),
    /--cors-origin: "https:\/\/a\.example\/" is not an origin/,
  );
  assert.throws(() => parseCorsOrigins('a.example', 'x'), /not an origin/);
  assert.throws(
    () => buildApp({ registry: new Promise(() => {}), servedNames: ['m'], apiKeys: [] }),
    /apiKeys is empty/,
  );
});

test('token bucket: a second of burst, then the configured rate', () => {
  let now = 0;
  const bucket = new TokenBucket(10, () => now);
  for (let i = 0; i < 10; i++) assert.equal(bucket.take(), true);
  assert.equal(bucket.take(), false);
  now += 100; // 1 token back
  assert.equal(bucket.take(), true);
  assert.equal(bucket.take(), false);
  now += 60_000; // never more than the burst
  let n = 0;
  while (bucket.take()) n++;
  assert.equal(n, 10);
});

test('withoutPaths keeps the last component of each path and leaves prose alone', () => {
  assert.equal(
    withoutPaths("ENOENT: no such file or directory, open '/srv/models/a/config.json'"),
    "ENOENT: no such file or directory, open 'config.json'",
  );
  assert.equal(withoutPaths('bad (models/bad/config.json): x'), 'bad (config.json): x');
  assert.equal(withoutPaths('use drain/migrate'), 'use drain/migrate');
  // What the client sent (quoted) stays whole; the server's paths do not.
  assert.equal(
    withoutPaths('model "../x/y" is not inside /srv/models/root', '../x/y'),
    'model "../x/y" is not inside root',
  );
});

test('the playground works with API keys on: the page loads without one, asks for a key on 401 and sends it', async () => {
  // The expression plays the user: when the page asks for a key, it types one and presses Generate.
  const state = (await chromiumEvaluate(
    join(dir, 'chromium-keys'),
    `${locked.url}/?prompt=${encodeURIComponent('Call me Ishmael.')}&max_tokens=6&temperature=0&autorun=1`,
    `(() => {
      const b = document.body.dataset;
      if (b.state === 'needs-key' && !window.__asked) {
        window.__asked = document.getElementById('status').textContent;
        document.getElementById('api_key').value = ${JSON.stringify(FILE_KEY)};
        document.getElementById('run').click();
      }
      return { state: b.state, asked: window.__asked ?? null, status: document.getElementById('status').textContent,
        version: document.getElementById('version').textContent };
    })()`,
    (v) => ['done', 'error'].includes((v as { state?: string } | undefined)?.state ?? ''),
  )) as { state: string; asked: string | null; status: string; version: string };
  assert.match(state.asked ?? '', /API key is required/);
  assert.equal(state.state, 'done', state.status);
  assert.match(state.status, /^done: 6 tokens/);
  assert.match(state.version, /^[0-9a-f]{12}-step\d+$/);
});

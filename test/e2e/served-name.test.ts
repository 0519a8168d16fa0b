import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import OpenAI from 'openai';
import { ServerProcess, until } from '../../scripts/harness/server.ts';
import { resolveExport } from '../../src/engine/model-dir.ts';
import { swapModelsRoot } from '../engine/served-model.ts';
import { tempDir } from '../helpers.ts';
import { chromiumEvaluate } from '../server/processes.ts';
import { promtoolCheck } from '../server/promtool.ts';

/**
 * A client pinned to the served name (`--served-model-name tf,tf-alias`), as every OpenAI client
 * is, streams before, during and after a migrate swap and a drain swap: every request succeeds,
 * every chunk names `tf`, and system_fingerprint says which weights produced it. Then /metrics
 * has TTFT samples for `tf` from every version and promtool accepts it.
 */

const TOKEN = 'served-name-admin-token';
const NAME = 'tf';
let server: ServerProcess;
let client: OpenAI;
const cleanups: (() => void)[] = [];

before(async () => {
  const dir = tempDir({ after: (fn) => cleanups.push(fn) });
  const root = await swapModelsRoot(dir);
  // Exported ahead into the server's cache (its cwd's .cache), so each swap is a worker start and
  // a warm-up, short next to the streams it must overlap.
  for (const m of ['b', 'c']) await resolveExport(join(root, m), join(dir, '.cache'));
  process.env.TOKENFORMER_ADMIN_TOKEN = TOKEN;
  server = await ServerProcess.start(
    // Drains never time out here: a loaded machine must not move the drained streams on.
    [
      ...['--models-dir', root, '--model', 'a', '--served-model-name', `${NAME},tf-alias`],
      ...['--device', 'cpu', '--drain-timeout-ms', '600000'],
    ],
    { cwd: dir },
  );
  delete process.env.TOKENFORMER_ADMIN_TOKEN;
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'x', maxRetries: 0, timeout: 300_000 });
});
after(async () => {
  await server?.stop();
  for (const c of cleanups) c();
});

interface SwapResult {
  to: { name: string; version: string };
  from: { name: string; version: string };
  migrated: number;
  draining: number;
  kvMoved: boolean;
}

function swap(model: string, policy: 'migrate' | 'drain'): Promise<SwapResult> {
  return fetch(`${server.url}/admin/swap`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model, policy }),
  }).then(async (r) => {
    assert.equal(r.status, 200, await r.clone().text());
    return (await r.json()) as SwapResult;
  });
}

interface Streamed {
  text: string;
  finish: string | null;
  tokens: number;
  /** system_fingerprint of each chunk, in order. */
  versions: string[];
}

/** One streamed completion through the openai client, naming `model`; resolves when it ends. */
async function stream(model: string, maxTokens: number, onFirst?: () => void): Promise<Streamed> {
  const params = {
    model,
    prompt: 'Call me Ishmael.',
    max_tokens: maxTokens,
    temperature: 0,
    ignore_eos: true,
    stream: true,
    stream_options: { include_usage: true },
  } as OpenAI.CompletionCreateParamsStreaming;
  const out: Streamed = { text: '', finish: null, tokens: 0, versions: [] };
  for await (const chunk of await client.completions.create(params)) {
    assert.equal(chunk.model, model);
    if (chunk.system_fingerprint) out.versions.push(chunk.system_fingerprint);
    for (const c of chunk.choices) {
      out.text += c.text;
      out.finish = c.finish_reason ?? out.finish;
    }
    if (chunk.usage) out.tokens = chunk.usage.completion_tokens;
    if (out.versions.length === 1) onFirst?.();
  }
  return out;
}

/** `count` long streams; resolves once each has its first chunk, with their ends. */
async function openStreams(count: number, maxTokens: number): Promise<Promise<Streamed>[]> {
  const started: Promise<void>[] = [];
  const ends = Array.from({ length: count }, () => {
    let first!: () => void;
    started.push(new Promise<void>((r) => (first = r)));
    return stream(NAME, maxTokens, first);
  });
  await Promise.race([Promise.all(started), Promise.all(ends)]);
  return ends;
}

const LONG = 2000;

test('a client pinned to the served name streams before, during and after a migrate swap and a drain swap', async () => {
  const models = await client.models.list();
  assert.deepEqual(
    models.data.slice(0, 2).map((m) => m.id),
    [NAME, 'tf-alias'],
  );
  const before = await stream(NAME, 8);
  assert.equal(before.finish, 'length');
  const vA = before.versions[0]!;

  // Migrate a → b (b: a zero/keep growth of a) while long streams run; new ones start meanwhile.
  const running = await openStreams(6, LONG);
  const migrating = swap('b', 'migrate');
  const during = stream(NAME, 16);
  const toB = await migrating;
  assert.ok(toB.migrated >= 1, `${toB.migrated} streams migrated`);
  assert.equal(toB.kvMoved, true);
  const vB = toB.to.version;
  for (const s of [...(await Promise.all(running)), await during]) {
    assert.ok(s.finish === 'length', `finish ${s.finish}`);
    assert.ok(s.versions.every((v) => v === vA || v === vB));
  }
  const long = await Promise.all(running);
  for (const s of long) {
    assert.equal(s.tokens, LONG);
    assert.equal(s.versions[0], vA);
  }
  // Those still open at the switch went on on b, in the same stream.
  assert.ok(long.filter((s) => s.versions.at(-1) === vB).length >= 1, 'a stream continued on b');
  const afterMigrate = await stream('tf-alias', 8);
  assert.deepEqual([...new Set(afterMigrate.versions)], [vB]);
  const listed = (await (await fetch(`${server.url}/v1/models`)).json()) as {
    data: { id: string; version: string; root: string; lineage: { parent: { name: string } | null } }[];
  };
  assert.equal(listed.data[0]!.id, NAME);
  assert.equal(listed.data[0]!.version, vB);
  assert.equal(listed.data[0]!.lineage.parent?.name, 'a');

  // Drain b → c: the open streams finish on b; new requests (by the served name) go to c, while
  // b's version stays reachable by its id until it is released.
  const draining = await openStreams(6, LONG);
  const toC = await swap('c', 'drain');
  assert.ok(toC.draining >= 1, `${toC.draining} streams draining`);
  const vC = toC.to.version;
  const onC = await stream(NAME, 8);
  assert.deepEqual([...new Set(onC.versions)], [vC]);
  const pinned = await stream(vB, 8);
  assert.deepEqual([...new Set(pinned.versions)], [vB]);
  for (const s of await Promise.all(draining)) {
    assert.equal(s.finish, 'length');
    assert.equal(s.tokens, LONG);
    assert.deepEqual([...new Set(s.versions)], [vB], 'a drained stream stays on its model');
  }
  await until(
    async () => ((await server.metric('tokenformer_models_loaded')) === 1 ? true : undefined),
    'b released',
  );
  await assert.rejects(stream(vB, 4), (err: Error & { status?: number }) => err.status === 404);
  const plain = await fetch(`${server.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: NAME, prompt: 'a', max_tokens: 2 }),
  });
  assert.equal(plain.headers.get('x-model-version'), vC);

  // Metrics: one served name, TTFT samples from every version that answered; promtool accepts it.
  const text = await server.metricsText();
  for (const v of [vA, vB, vC]) {
    const ttft = await server.metric(
      `tokenformer_time_to_first_token_seconds_count{model_name="${NAME}",version="${v}"}`,
    );
    assert.ok(ttft >= 1, `TTFT samples for ${v}: ${ttft}`);
  }
  assert.ok(
    (await server.metric(
      `tokenformer_request_success_total{model_name="${NAME}",finished_reason="length"}`,
    )) >= 16,
  );
  assert.doesNotMatch(text, /model_name="(a|b|c)"/, 'metrics name the served name, not the directories');
  const check = promtoolCheck(text);
  assert.ok(check.ok, check.output);
});

test('the playground follows a swap live: the version it shows changes without a reload', async () => {
  const dir = tempDir({ after: (fn) => cleanups.push(fn) });
  const serving = async () =>
    ((await (await fetch(`${server.url}/v1/models`)).json()) as { data: { version: string }[] }).data[0]!
      .version;
  const before = await serving();
  let swapped: Promise<SwapResult> | undefined;
  const shown = (await chromiumEvaluate(
    join(dir, 'chromium'),
    `${server.url}/`,
    `document.getElementById('version').textContent`,
    (v) => {
      // Once the page shows the serving version, swap under it; then wait for the new one.
      if (v === before) swapped ??= swap('a', 'migrate');
      return swapped !== undefined && typeof v === 'string' && v !== '' && v !== before;
    },
  )) as string;
  const result = await swapped!;
  assert.equal(shown, result.to.version);
});

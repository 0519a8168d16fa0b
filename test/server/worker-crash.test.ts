import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { parseMetrics } from '../../scripts/harness/metrics.ts';
import { until } from '../../scripts/harness/server.ts';
import { readSse, sseJson } from '../../scripts/harness/sse.ts';
import { ModelRegistry } from '../../src/engine/registry.ts';
import { buildApp } from '../../src/server/app.ts';
import { swapModelsRoot } from '../engine/served-model.ts';
import { tempDir } from '../helpers.ts';

/**
 * The supervisor through the HTTP server: a model worker killed while an SSE stream is open is
 * restarted and the stream ends normally with every token; repeated crashes make /ready 503.
 */

const cleanups: (() => void | Promise<void>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

test('a worker crash mid-stream: the SSE stream completes; once the supervisor gives up, /ready and /health answer 503', async () => {
  const dir = tempDir({ after: (fn) => cleanups.push(fn) });
  const root = await swapModelsRoot(dir);
  const registry = await ModelRegistry.open('a', {
    modelsRoot: root,
    cacheDir: join(dir, 'cache'),
    engine: { device: 'cpu', threads: 1, maxSequences: 4, maxQueue: 4, prefillChunk: 64 },
    maxRestarts: 1,
  });
  cleanups.push(() => registry.close());
  const app = buildApp({ registry, servedNames: ['a'], logger: false });
  cleanups.push(() => app.close());
  const url = await app.listen({ host: '127.0.0.1', port: 0 });

  const body = { prompt: 'Call me Ishmael.', max_tokens: 300, temperature: 0, ignore_eos: true };
  const post = (extra: object) =>
    fetch(`${url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ...body, ...extra }),
    });
  const reference = ((await (await post({})).json()) as { choices: { text: string }[] }).choices[0]!.text;

  const res = await post({ stream: true });
  const first = registry.model.engine;
  let killed = false;
  const raw = await readSse(res, (text) => {
    if (!killed && text.split('data: {').length > 20) {
      killed = true;
      void first.kill();
    }
    return false;
  });
  assert.ok(killed);
  assert.match(raw, /data: \[DONE\]\n\n$/);
  const text = sseJson<{ choices: { text: string }[] }>(raw)
    .map((c) => c.choices[0]?.text ?? '')
    .join('');
  assert.equal(text, reference);
  assert.notEqual(registry.model.engine, first);
  const metric = async (name: string) =>
    parseMetrics(await (await fetch(`${url}/metrics`)).text()).get(name) ?? Number.NaN;
  assert.equal(await metric('tokenformer_worker_crashes_total'), 1);
  assert.equal(await metric('tokenformer_streams_migrated_total{kv="recomputed"}'), 1);
  assert.equal((await fetch(`${url}/ready`)).status, 200);

  await registry.model.engine.kill(); // a second crash within a minute: over maxRestarts (1)
  await until(async () => ((await fetch(`${url}/ready`)).status === 503 ? true : undefined), '/ready 503');
  // The liveness probe (deploy/kubernetes: /health) now restarts the pod.
  const health = await fetch(`${url}/health`);
  assert.equal(health.status, 503);
  assert.match(JSON.stringify(await health.json()), /crashed repeatedly and is not restarted/);
  assert.equal(await metric('tokenformer_worker_crashes_total'), 2);
});

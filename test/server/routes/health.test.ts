import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ModelRegistry } from '../../../src/engine/registry.ts';
import { buildApp } from '../../../src/server/app.ts';
import { assertErrorShape, MODEL, testApp } from '../helpers.ts';

test('while the model loads: /health 200, /ready and model routes 503; a failed load: /health 503', async () => {
  let fail!: (err: Error) => void;
  const registry = new Promise<ModelRegistry>((_, reject) => {
    fail = reject;
  });
  const app = buildApp({ registry, servedNames: [MODEL] });
  try {
    const health = await app.inject({ url: '/health' });
    assert.equal(health.statusCode, 200);
    assert.deepEqual(health.json(), { status: 'ok', state: 'loading' });
    const ready = await app.inject({ url: '/ready' });
    assert.equal(ready.statusCode, 503);
    assert.match(assertErrorShape(ready.json(), 'TF_ERR_NOT_READY').message, /still loading/);
    const c = await app.inject({ method: 'POST', url: '/v1/completions', payload: { prompt: 'a' } });
    assert.equal(c.statusCode, 503);
    assertErrorShape(c.json(), 'TF_ERR_NOT_READY');
    const tok = await app.inject({ method: 'POST', url: '/tokenize', payload: { prompt: 'a' } });
    assert.equal(tok.statusCode, 503);
    fail(new Error('boom at /secret/path.ts:12'));
    await app.tokenformer.loaded;
    const failed = await app.inject({ url: '/ready' });
    assert.equal(failed.statusCode, 503);
    assert.equal(assertErrorShape(failed.json(), 'TF_ERR_NOT_READY').message, 'the model failed to load');
    // Never able to serve without a restart: the liveness probe should restart it.
    const dead = await app.inject({ url: '/health' });
    assert.equal(dead.statusCode, 503);
    assertErrorShape(dead.json(), 'TF_ERR_NOT_READY');
  } finally {
    await app.close();
  }
});

test('ready once loaded; while draining /ready and new completions are 503, /health and /tokenize still work', async () => {
  const t = await testApp();
  try {
    const ready = await t.app.inject({ url: '/ready' });
    assert.equal(ready.statusCode, 200);
    assert.deepEqual(ready.json(), { status: 'ready', model: MODEL, version: t.version, device: 'cpu' });
    assert.equal(await t.app.tokenformer.drain(1000), true);
    const draining = await t.app.inject({ url: '/ready' });
    assert.equal(draining.statusCode, 503);
    assertErrorShape(draining.json(), 'TF_ERR_SHUTTING_DOWN');
    const c = await t.app.inject({ method: 'POST', url: '/v1/completions', payload: { prompt: 'a' } });
    assert.equal(c.statusCode, 503);
    assertErrorShape(c.json(), 'TF_ERR_SHUTTING_DOWN');
    assert.equal((await t.app.inject({ url: '/health' })).statusCode, 200);
    const tok = await t.app.inject({ method: 'POST', url: '/tokenize', payload: { prompt: 'a' } });
    assert.equal(tok.statusCode, 200);
  } finally {
    await t.close();
  }
});

test("an undecodable URL gets the OpenAI error shape and a request id, not fastify's own body", async () => {
  const t = await testApp();
  try {
    for (const url of ['/%FF', '/%', '/v1/%zz']) {
      const r = await t.app.inject({ url });
      assert.equal(r.statusCode, 400, url);
      assert.ok(r.headers['x-request-id'], url);
      assertErrorShape(r.json(), 'TF_ERR_BAD_ARGS');
    }
  } finally {
    await t.close();
  }
});

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { MODEL, type TestApp, testApp } from '../helpers.ts';

let t: TestApp;
before(async () => {
  t = await testApp();
});
after(() => t.close());

test('GET /v1/models lists the served name, then the loaded version, with context, size, version and lineage', async () => {
  const r = await t.app.inject({ url: '/v1/models' });
  assert.equal(r.statusCode, 200);
  const body = r.json() as { object: string; data: Record<string, unknown>[] };
  assert.equal(body.object, 'list');
  assert.deepEqual(
    body.data.map((m) => m.id),
    [MODEL, t.version],
  );
  const [m, v] = body.data as [Record<string, unknown>, Record<string, unknown>];
  assert.equal(m.object, 'model');
  assert.equal(m.owned_by, 'tokenformer');
  assert.equal(m.version, t.version);
  assert.equal(m.parent, null);
  assert.equal(m.max_model_len, t.engine.manifest.model.max_seq_len);
  assert.equal(m.parameters, t.engine.manifest.parameters);
  assert.ok(typeof m.parameters === 'number' && m.parameters > 0);
  assert.deepEqual(Object.keys(m.lineage as object).sort(), ['growth', 'parent', 'source']);
  assert.ok(Number.isInteger(m.created));
  assert.equal(v.parent, MODEL);
  assert.equal(v.state, 'serving');
});

test('a request may name the served name, nothing, or a loaded version (pinned); responses say which version answered', async () => {
  for (const model of [MODEL, undefined, t.version]) {
    const r = await t.app.inject({
      method: 'POST',
      url: '/v1/completions',
      payload: { ...(model ? { model } : {}), prompt: 'Call me', max_tokens: 2 },
    });
    assert.equal(r.statusCode, 200, String(model));
    const body = r.json() as { model: string; system_fingerprint: string };
    assert.equal(body.model, model ?? MODEL);
    assert.equal(body.system_fingerprint, t.version);
    assert.equal(r.headers['x-model-version'], t.version);
  }
  const tok = await t.app.inject({
    method: 'POST',
    url: '/tokenize',
    payload: { model: t.version, prompt: 'a' },
  });
  assert.equal(tok.statusCode, 200);
});

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { MODEL, type TestApp, testApp, VERSION } from '../helpers.ts';

let t: TestApp;
before(async () => {
  t = await testApp();
});
after(() => t.close());

test('GET /v1/models lists the served model in the OpenAI shape', async () => {
  const r = await t.app.inject({ url: '/v1/models' });
  assert.equal(r.statusCode, 200);
  const body = r.json() as { object: string; data: Record<string, unknown>[] };
  assert.equal(body.object, 'list');
  assert.equal(body.data.length, 1);
  const m = body.data[0]!;
  assert.equal(m.id, MODEL);
  assert.equal(m.object, 'model');
  assert.equal(m.owned_by, 'tokenformer');
  assert.equal(m.version, VERSION);
  assert.equal(m.max_model_len, t.engine.manifest.model.max_seq_len);
  assert.ok(Number.isInteger(m.created));
});

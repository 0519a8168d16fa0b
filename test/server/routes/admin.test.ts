import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { buildApp } from '../../../src/server/app.ts';
import { assertErrorShape, type TestApp, testApp } from '../helpers.ts';

let t: TestApp;
before(async () => {
  t = await testApp();
});
after(async () => {
  await t.close();
});

test('admin routes answer 403 when no admin token is configured', async () => {
  for (const [method, url] of [
    ['POST', '/admin/swap'],
    ['GET', '/admin/models'],
  ] as const) {
    const r = await t.app.inject({ method, url, payload: method === 'POST' ? { model: 'x' } : undefined });
    assert.equal(r.statusCode, 403);
    assertErrorShape(r.json(), 'TF_ERR_FORBIDDEN');
  }
});

test('with a token: 401 without or with a wrong bearer token; a swap to a missing model is 404', async () => {
  const app = buildApp({ registry: t.registry, servedNames: ['m'], adminToken: 'right' });
  await app.ready();
  try {
    const none = await app.inject({ method: 'GET', url: '/admin/models' });
    assert.equal(none.statusCode, 401);
    assertErrorShape(none.json(), 'TF_ERR_UNAUTHORIZED');
    const wrong = await app.inject({
      method: 'GET',
      url: '/admin/models',
      headers: { authorization: 'Bearer wrong' },
    });
    assert.equal(wrong.statusCode, 401);
    const ok = await app.inject({
      method: 'POST',
      url: '/admin/swap',
      headers: { authorization: 'Bearer right' },
      payload: { model: 'x', policy: 'drain' },
    });
    assert.equal(ok.statusCode, 404);
    assertErrorShape(ok.json(), 'TF_ERR_NOT_FOUND');
  } finally {
    await app.close();
  }
});

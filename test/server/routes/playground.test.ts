import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { MODEL, type TestApp, testApp } from '../helpers.ts';

let t: TestApp;
before(async () => {
  t = await testApp();
});
after(() => t.close());

test('GET / serves the self-contained playground page', async () => {
  const r = await t.app.inject({ url: '/' });
  assert.equal(r.statusCode, 200);
  assert.match(r.headers['content-type'] as string, /^text\/html/);
  assert.match(r.headers['content-security-policy'] as string, /default-src 'none'/);
  const html = r.body;
  assert.match(html, /^<!doctype html>/i);
  assert.ok(html.includes(`data-model="${MODEL}"`));
  for (const id of [
    'prompt',
    'max_tokens',
    'temperature',
    'top_p',
    'run',
    'stop',
    'output',
    'api_key',
    'version',
  ])
    assert.ok(html.includes(`id="${id}"`), id);
  // Nothing external: no src/href attributes, no absolute URLs.
  assert.doesNotMatch(html, /\s(src|href)=/i);
  assert.doesNotMatch(html, /https?:\/\//);
  assert.ok(html.includes("fetch('/v1/completions'"));
  // The chat tab beside the completion one.
  for (const id of ['tab-completion', 'tab-chat', 'chat-panel', 'system', 'chat-input', 'send', 'chat-log'])
    assert.ok(html.includes(`id="${id}"`), id);
  assert.ok(html.includes("fetch('/v1/chat/completions'"));
});

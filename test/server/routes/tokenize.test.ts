import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { assertErrorShape, MODEL, type TestApp, testApp } from '../helpers.ts';

let t: TestApp;
before(async () => {
  t = await testApp();
});
after(() => t.close());

test('tokenize then detokenize gives the text back', async () => {
  for (const prompt of ['Call me Ishmael.', '  spaces\tand\nnewlines ', 'naïve café — “quotes” 🐋', '']) {
    const tok = await t.app.inject({ method: 'POST', url: '/tokenize', payload: { model: MODEL, prompt } });
    assert.equal(tok.statusCode, 200);
    const { tokens, count, max_model_len } = tok.json() as {
      tokens: number[];
      count: number;
      max_model_len: number;
    };
    assert.deepEqual(tokens, t.engine.tokenizer.encode(prompt));
    assert.equal(count, tokens.length);
    assert.equal(max_model_len, t.engine.manifest.model.max_seq_len);
    const detok = await t.app.inject({ method: 'POST', url: '/detokenize', payload: { tokens } });
    assert.equal(detok.statusCode, 200);
    assert.deepEqual(detok.json(), { prompt });
  }
});

test('bad tokenize/detokenize input is 400 in the OpenAI error shape; an unknown model is 404', async () => {
  const noPrompt = await t.app.inject({ method: 'POST', url: '/tokenize', payload: {} });
  assert.equal(noPrompt.statusCode, 400);
  assert.match(assertErrorShape(noPrompt.json(), 'TF_ERR_BAD_ARGS').message, /prompt/);
  const badId = await t.app.inject({ method: 'POST', url: '/detokenize', payload: { tokens: [1, 100000] } });
  assert.equal(badId.statusCode, 400);
  assert.match(
    assertErrorShape(badId.json(), 'TF_ERR_BAD_ARGS').message,
    /token id 100000 is not in the vocabulary/,
  );
  const notInts = await t.app.inject({ method: 'POST', url: '/detokenize', payload: { tokens: ['a'] } });
  assert.equal(notInts.statusCode, 400);
  assertErrorShape(notInts.json(), 'TF_ERR_BAD_ARGS');
  const model = await t.app.inject({
    method: 'POST',
    url: '/tokenize',
    payload: { model: 'other', prompt: 'a' },
  });
  assert.equal(model.statusCode, 404);
  assertErrorShape(model.json(), 'TF_ERR_MODEL_NOT_FOUND');
  // A megabyte model name is not quoted back whole (found by test/server/fuzz.test.ts).
  const long = await t.app.inject({
    method: 'POST',
    url: '/tokenize',
    payload: { model: 'm'.repeat(1_000_000), prompt: 'a' },
  });
  assert.equal(long.statusCode, 404);
  assert.ok(assertErrorShape(long.json(), 'TF_ERR_MODEL_NOT_FOUND').message.length < 300);
});

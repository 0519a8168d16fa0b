import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Inbox, type WsClient } from '../../scripts/harness/ws.ts';
import { validateSamplingParams } from '../../src/engine/sampling/params.ts';
import type { CompletionResponse } from '../../src/server/openai.ts';
import { chatLogprobs } from '../../src/server/sampling-fields.ts';
import { assertErrorShape, MODEL, type TestApp, testApp } from './helpers.ts';

/**
 * The fields OpenAI and vLLM clients send (logit_bias, min_tokens, stop_token_ids, long stop
 * lists, the unsupported ones), end to end on a real model: POST /v1/completions and the
 * WebSocket's completion.create, which share src/server/sampling-fields.ts.
 */

let t: TestApp;
before(async () => {
  t = await testApp();
});
after(() => t.close());

const PROMPT = 'Call me Ishmael.';
const greedy = { model: MODEL, prompt: PROMPT, temperature: 0 };

async function complete(payload: Record<string, unknown>) {
  const r = await t.app.inject({ method: 'POST', url: '/v1/completions', payload });
  assert.equal(r.statusCode, 200, `${JSON.stringify(payload).slice(0, 200)}: ${r.body}`);
  const body = r.json() as CompletionResponse;
  return { text: body.choices[0]!.text, finish: body.choices[0]!.finish_reason, usage: body.usage };
}

async function refused(payload: Record<string, unknown>, message: RegExp): Promise<void> {
  const r = await t.app.inject({ method: 'POST', url: '/v1/completions', payload });
  assert.equal(r.statusCode, 400, JSON.stringify(payload).slice(0, 200));
  assert.match(assertErrorShape(r.json(), 'TF_ERR_BAD_ARGS').message, message);
}

/** The token ids greedy decoding generates from PROMPT, straight from the engine. */
async function greedyIds(n: number): Promise<number[]> {
  const ids: number[] = [];
  const params = validateSamplingParams({ temperature: 0, max_tokens: n, ignore_eos: true });
  for await (const e of t.engine.generate(t.engine.tokenizer.encode(PROMPT), params))
    if (e.type === 'delta') ids.push(...e.tokens.map((x) => x.token));
  return ids;
}

const decode = (ids: number[]) => t.engine.tokenizer.decode(ids);

test('logit_bias: +100 forces a token, -100 bans the one greedy decoding would pick', async () => {
  const base = await greedyIds(6);
  const x = t.engine.tokenizer.encode(' sea')[0]!;
  assert.ok(!base.includes(x), 'the forced token is one greedy decoding does not pick');
  const forced = await complete({ ...greedy, max_tokens: 5, ignore_eos: true, logit_bias: { [x]: 100 } });
  assert.equal(forced.text, decode([x, x, x, x, x]));
  const plain = await complete({ ...greedy, max_tokens: 6, ignore_eos: true });
  assert.equal(plain.text, decode(base));
  const banned = await complete({
    ...greedy,
    max_tokens: 1,
    ignore_eos: true,
    logit_bias: { [base[0]!]: -100 },
  });
  assert.notEqual(banned.text, decode([base[0]!]));
  // A small bias moves the logprobs by exactly the bias's share of the softmax.
  const lp = await t.app.inject({
    method: 'POST',
    url: '/v1/completions',
    payload: { ...greedy, max_tokens: 1, ignore_eos: true, logprobs: 20 },
  });
  const top = (lp.json() as CompletionResponse).choices[0]!.logprobs!.top_logprobs[0]!;
  assert.ok(Object.keys(top).length >= 15, 'logprobs 20 gives up to 20 alternatives');
});

test('min_tokens holds back the end-of-text token until that many tokens are out', async () => {
  const eos = t.engine.eosTokenId!;
  const toEos = { ...greedy, max_tokens: 12, logit_bias: { [eos]: 100 } };
  const now = await complete(toEos);
  assert.deepEqual([now.finish, now.usage.completion_tokens, now.text], ['stop', 1, '']);
  const later = await complete({ ...toEos, min_tokens: 5 });
  assert.equal(later.finish, 'stop');
  assert.equal(later.usage.completion_tokens, 6); // 5 held back, then end-of-text
  assert.ok(later.text.length > 0);
  // min_tokens = max_tokens: the request runs to its length.
  const full = await complete({ ...toEos, max_tokens: 4, min_tokens: 4 });
  assert.deepEqual([full.finish, full.usage.completion_tokens], ['length', 4]);
});

test('stop_token_ids end the text with finish_reason stop; the stop token is not text', async () => {
  const base = await greedyIds(8);
  const x = base[3]!;
  const r = await complete({ ...greedy, max_tokens: 8, ignore_eos: true, stop_token_ids: [x] });
  const at = base.indexOf(x);
  assert.deepEqual([r.finish, r.usage.completion_tokens], ['stop', at + 1]);
  assert.equal(r.text, decode(base.slice(0, at)));
  // Forced at every step but held back by min_tokens: three other tokens, then the stop token.
  const held = await complete({
    ...greedy,
    max_tokens: 8,
    ignore_eos: true,
    logit_bias: { [x]: 100 },
    stop_token_ids: [x],
    min_tokens: 3,
  });
  assert.deepEqual([held.finish, held.usage.completion_tokens], ['stop', 4]);
  assert.ok(!held.text.endsWith(decode([x])) || decode([x]) === '');
});

test('stop strings do not end the text before min_tokens; up to 64 stop strings', async () => {
  const base = await greedyIds(10);
  const full = await complete({ ...greedy, max_tokens: 10, ignore_eos: true });
  assert.equal(full.text, decode(base));
  const stop = decode([base[5]!]).slice(0, 1);
  const early = await complete({ ...greedy, max_tokens: 10, ignore_eos: true, stop });
  assert.equal(early.finish, 'stop');
  assert.ok(early.text.length < decode(base.slice(0, 5)).length);
  // Tokens 1–5 may hold the stop string; the 6th, which starts with it, is the first that counts.
  const held = await complete({ ...greedy, max_tokens: 10, ignore_eos: true, stop, min_tokens: 6 });
  assert.deepEqual([held.finish, held.text], ['stop', decode(base.slice(0, 5))]);
  assert.equal(held.usage.completion_tokens, 6);
  const many = Array.from({ length: 63 }, (_, i) => `\u0001never${i}`);
  const r = await complete({ ...greedy, max_tokens: 10, ignore_eos: true, stop: [...many, stop] });
  assert.deepEqual([r.finish, r.text], ['stop', '']);
  await refused({ ...greedy, stop: [...many, stop, 'x'] }, /^stop must hold at most 64 strings, got 65$/);
});

test('known but unsupported fields answer 400 naming the field; their no-op forms are accepted', async () => {
  await refused(
    { ...greedy, response_format: { type: 'json_object' } },
    /response_format of type "json_object" is not supported/,
  );
  await refused(
    { ...greedy, response_format: { type: 'json_schema', json_schema: { name: 'x' } } },
    /response_format of type "json_schema" is not supported; only \{"type": "text"\}/,
  );
  await refused(
    { ...greedy, tools: [{ type: 'function', function: { name: 'f' } }] },
    /^tools are not supported/,
  );
  await refused({ ...greedy, tool_choice: 'required' }, /^tool_choice "required" is not supported/);
  await refused({ ...greedy, functions: [{ name: 'f' }] }, /^functions are not supported/);
  await refused({ ...greedy, suffix: 'end' }, /^suffix is not supported/);
  const base = await complete({ ...greedy, max_tokens: 3 });
  const noops = await complete({
    ...greedy,
    max_tokens: 3,
    response_format: { type: 'text' },
    tools: [],
    tool_choice: 'none',
    functions: null,
    suffix: '',
    logit_bias: {},
    stop_token_ids: [],
    min_tokens: 0,
    some_future_field: { nested: true }, // unknown fields are ignored
  });
  assert.equal(noops.text, base.text);
});

test('bad values are 400 naming the field: vocabulary, ranges, types', async () => {
  const v = t.engine.tokenizer.vocabSize;
  await refused(
    { ...greedy, logit_bias: { [v]: 1 } },
    new RegExp(`^logit_bias token id ${v} is not in the vocabulary \\(ids 0 to ${v - 1}\\)$`),
  );
  await refused(
    { ...greedy, logit_bias: { '5': 100.5 } },
    /^logit_bias\[5\] must be between -100 and 100, got 100.5$/,
  );
  await refused({ ...greedy, logit_bias: { five: 1 } }, /^logit_bias keys must be token ids/);
  await refused({ ...greedy, logit_bias: { '5': 'up' } }, /body\/logit_bias\/5 must be number/);
  await refused(
    { ...greedy, stop_token_ids: [1, v + 3] },
    new RegExp(`^stop_token_ids entry ${v + 3} is not in the vocabulary`),
  );
  await refused({ ...greedy, stop_token_ids: [-1] }, /body\/stop_token_ids\/0 must be >= 0/);
  await refused(
    { ...greedy, max_tokens: 4, min_tokens: 5 },
    /^min_tokens \(5\) must not exceed max_tokens \(4\)$/,
  );
  await refused({ ...greedy, min_tokens: -1 }, /body\/min_tokens must be >= 0/);
  await refused({ ...greedy, logprobs: 21 }, /logprobs must be between 0 and 20/);
});

test('over the WebSocket, completion.create takes the same fields and refuses the same way', async () => {
  const ws = (await t.app.injectWS('/v1/stream')) as WsClient;
  const inbox = new Inbox(ws);
  try {
    const eos = t.engine.eosTokenId!;
    const fields = { ...greedy, max_tokens: 12, logit_bias: { [eos]: 100 }, min_tokens: 5 };
    ws.send(JSON.stringify({ type: 'completion.create', id: 'a', ...fields }));
    const done = await inbox.waitFor((m) => m.id === 'a' && m.type === 'completion.done', 'done of a');
    const http = await complete(fields);
    assert.equal(done.finish_reason, 'stop');
    assert.deepEqual(done.usage, http.usage);
    const text = inbox
      .of('a')
      .filter((m) => m.type === 'completion.delta')
      .map((m) => m.text)
      .join('');
    assert.equal(text, http.text);
    ws.send(JSON.stringify({ type: 'completion.create', id: 'b', ...greedy, tools: [{ type: 'function' }] }));
    const err = await inbox.waitFor((m) => m.id === 'b' && m.type === 'error', 'error of b');
    assert.equal(err.status, 400);
    assert.match(String(err.message), /^tools are not supported/);
    ws.send(JSON.stringify({ type: 'completion.create', id: 'c', ...greedy, logit_bias: { '1': 'x' } }));
    const typed = await inbox.waitFor((m) => m.id === 'c' && m.type === 'error', 'error of c');
    assert.match(String(typed.message), /message\/logit_bias\/1 must be number/);
  } finally {
    ws.terminate();
  }
});

test('chatLogprobs: logprobs true with top_logprobs 0–20 is the number of alternatives', () => {
  assert.equal(chatLogprobs({}), undefined);
  assert.equal(chatLogprobs({ logprobs: false }), undefined);
  assert.equal(chatLogprobs({ logprobs: true }), 0);
  assert.equal(chatLogprobs({ logprobs: true, top_logprobs: 20 }), 20);
  assert.equal(chatLogprobs({ logprobs: null, top_logprobs: null }), undefined);
  assert.throws(
    () => chatLogprobs({ logprobs: true, top_logprobs: 21 }),
    /^ApiError: top_logprobs must be an integer between 0 and 20, got 21$/,
  );
  assert.throws(() => chatLogprobs({ top_logprobs: 3 }), /top_logprobs needs logprobs: true/);
});

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { sseData } from '../../../scripts/harness/sse.ts';
import type { CompletionChunk, CompletionResponse } from '../../../src/server/openai.ts';
import { assertErrorShape, MODEL, type TestApp, testApp } from '../helpers.ts';

let t: TestApp;
before(async () => {
  t = await testApp();
});
after(() => t.close());

const complete = (payload: Record<string, unknown>) =>
  t.app.inject({ method: 'POST', url: '/v1/completions', payload });

const greedy = { model: MODEL, temperature: 0, ignore_eos: true };

test('a completion has the OpenAI shape, with the model version as system_fingerprint', async () => {
  const r = await complete({ ...greedy, prompt: 'Call me Ishmael.', max_tokens: 6 });
  assert.equal(r.statusCode, 200);
  assert.match(r.headers['x-request-id'] as string, /^[0-9a-f-]{36}$/);
  const body = r.json() as CompletionResponse;
  assert.match(body.id, /^cmpl-[0-9a-f]{32}$/);
  assert.equal(body.object, 'text_completion');
  assert.equal(body.model, MODEL);
  assert.equal(body.system_fingerprint, t.version);
  assert.ok(Number.isInteger(body.created));
  assert.equal(body.choices.length, 1);
  const [c] = body.choices;
  assert.deepEqual(Object.keys(c!).sort(), ['finish_reason', 'index', 'logprobs', 'text']);
  assert.equal(c!.index, 0);
  assert.equal(c!.finish_reason, 'length');
  assert.equal(c!.logprobs, null);
  const prompt = t.engine.tokenizer.encode('Call me Ishmael.');
  assert.deepEqual(body.usage, {
    prompt_tokens: prompt.length,
    completion_tokens: 6,
    total_tokens: prompt.length + 6,
  });
});

test('streaming gives the same text as a plain request, in OpenAI chunks, ending with [DONE]', async () => {
  const plain = (
    await complete({ ...greedy, prompt: 'The sea', max_tokens: 10 })
  ).json() as CompletionResponse;
  const r = await complete({
    ...greedy,
    prompt: 'The sea',
    max_tokens: 10,
    stream: true,
    stream_options: { include_usage: true },
  });
  assert.equal(r.statusCode, 200);
  assert.match(r.headers['content-type'] as string, /^text\/event-stream/);
  const events = sseData(r.body);
  assert.equal(events.at(-1), '[DONE]');
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e) as CompletionChunk);
  for (const c of chunks) {
    assert.equal(c.object, 'text_completion');
    assert.equal(c.id, chunks[0]!.id);
    assert.equal(c.system_fingerprint, t.version);
  }
  const last = chunks.at(-1)!;
  assert.deepEqual(last.choices, []);
  assert.deepEqual(last.usage, plain.usage);
  const body = chunks.slice(0, -1);
  for (const c of body) assert.equal(c.usage, null); // include_usage: null until the last chunk
  assert.equal(body.map((c) => c.choices[0]!.text).join(''), plain.choices[0]!.text);
  assert.equal(body.at(-1)!.choices[0]!.finish_reason, 'length');
  assert.ok(body.slice(0, -1).every((c) => c.choices[0]!.finish_reason === null));
});

test('without include_usage, chunks carry no usage field', async () => {
  const r = await complete({ ...greedy, prompt: 'a', max_tokens: 2, stream: true });
  const chunks = sseData(r.body)
    .slice(0, -1)
    .map((e) => JSON.parse(e) as CompletionChunk);
  assert.ok(chunks.length >= 1);
  for (const c of chunks) assert.ok(!('usage' in c));
});

test('several prompts × n give choices indexed prompt·n + i; echo prepends each prompt', async () => {
  const prompts = ['It is a way I have', 'Whenever I find myself'];
  const r = await complete({ ...greedy, prompt: prompts, n: 2, max_tokens: 4, echo: true });
  assert.equal(r.statusCode, 200);
  const body = r.json() as CompletionResponse;
  assert.deepEqual(
    body.choices.map((c) => c.index),
    [0, 1, 2, 3],
  );
  for (const c of body.choices) {
    const prompt = prompts[Math.floor(c.index / 2)]!;
    assert.ok(c.text.startsWith(prompt), `${JSON.stringify(c.text)} starts with its prompt`);
    // Greedy: every choice of a prompt is that prompt's solo completion.
    const solo = (await complete({ ...greedy, prompt, max_tokens: 4 })).json() as CompletionResponse;
    assert.equal(c.text, prompt + solo.choices[0]!.text);
  }
  const promptTokens = prompts.reduce((n, p) => n + t.engine.tokenizer.encode(p).length, 0);
  assert.equal(body.usage.prompt_tokens, promptTokens);
  assert.equal(body.usage.completion_tokens, 16);
});

test('token-id prompts (one or several) are accepted and echo decodes them', async () => {
  const ids = t.engine.tokenizer.encode('Call me');
  const one = (await complete({ ...greedy, prompt: ids, max_tokens: 3 })).json() as CompletionResponse;
  const text = (await complete({ ...greedy, prompt: 'Call me', max_tokens: 3 })).json() as CompletionResponse;
  assert.equal(one.choices[0]!.text, text.choices[0]!.text);
  const two = await complete({ ...greedy, prompt: [ids, ids], max_tokens: 3, echo: true });
  assert.equal(two.statusCode, 200);
  const b = two.json() as CompletionResponse;
  assert.equal(b.choices.length, 2);
  assert.equal(b.choices[1]!.text, `Call me${text.choices[0]!.text}`);
});

test('logprobs come in the OpenAI completions shape, in plain and streamed responses', async () => {
  const r = await complete({ ...greedy, prompt: 'Call me Ishmael.', max_tokens: 5, logprobs: 2 });
  const lp = (r.json() as CompletionResponse).choices[0]!.logprobs!;
  assert.equal(lp.tokens.length, 5);
  assert.equal(lp.token_logprobs.length, 5);
  assert.equal(lp.top_logprobs.length, 5);
  assert.equal(lp.text_offset.length, 5);
  assert.equal(lp.text_offset[0], 0);
  for (let i = 0; i < 5; i++) {
    const top = lp.top_logprobs[i]!;
    const lpi = lp.token_logprobs[i]!;
    assert.ok(lpi <= 0);
    // The chosen token is listed among at most logprobs + 1 alternatives; greedy picks the best.
    assert.equal(top[lp.tokens[i]!], lpi);
    assert.ok(Object.keys(top).length <= 3);
    assert.ok(Object.values(top).every((v) => v <= lpi + 1e-9));
    if (i > 0) assert.ok(lp.text_offset[i]! >= lp.text_offset[i - 1]!);
  }
  const s = await complete({
    ...greedy,
    prompt: 'Call me Ishmael.',
    max_tokens: 5,
    logprobs: 2,
    stream: true,
  });
  const streamed = sseData(s.body)
    .slice(0, -1)
    .flatMap((e) => (JSON.parse(e) as CompletionChunk).choices)
    .flatMap((c) => c.logprobs?.tokens ?? []);
  assert.deepEqual(streamed, lp.tokens);
});

test('stop strings end the text before the match with finish_reason stop', async () => {
  const full = (
    await complete({ ...greedy, prompt: 'The sea', max_tokens: 12 })
  ).json() as CompletionResponse;
  const text = full.choices[0]!.text;
  const stop = text.slice(4, 6);
  const r = (
    await complete({ ...greedy, prompt: 'The sea', max_tokens: 12, stop })
  ).json() as CompletionResponse;
  assert.equal(r.choices[0]!.finish_reason, 'stop');
  assert.equal(r.choices[0]!.text, text.slice(0, text.indexOf(stop)));
});

test('bad requests are refused with 400 and the OpenAI error shape, naming the problem', async () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ max_tokens: 3 }, /prompt/],
    [{ prompt: 5 }, /body\/prompt must be a string, an array of strings, an array of token ids/],
    [{ prompt: ['a', [1, 2]] }, /body\/prompt must be/],
    [{ prompt: 'a', max_tokens: '3' }, /max_tokens must be integer/],
    [{ prompt: 'a', max_tokens: -1 }, /max_tokens must be >= 0/],
    [{ prompt: 'a', max_tokens: 0 }, /max_tokens 0 generates nothing; it is only allowed with echo/],
    [{ prompt: 'a', temperature: 5 }, /temperature must be between 0 and 2, got 5/],
    [{ prompt: 'a', top_p: -0.5 }, /top_p must be between 0 and 1, got -0.5/],
    [
      { prompt: 'a', stop: Array.from({ length: 65 }, (_, i) => `${i}`) },
      /stop must hold at most 64 strings/,
    ],
    [{ prompt: 'a', logprobs: 50 }, /logprobs must be between 0 and 20/],
    [{ prompt: 'a', n: 0 }, /n must be >= 1/],
    [{ prompt: 'a', n: 17 }, /17 choices; the limit is 16/],
    [{ prompt: [1, 2, 99999] }, /prompt token id 99999 is not in the vocabulary/],
    [{ prompt: 'a', suffix: 'b' }, /suffix is not supported/],
    [{ prompt: 'a', stream_options: { include_usage: 'yes' } }, /include_usage must be boolean/],
  ];
  for (const [payload, message] of cases) {
    const r = await complete(payload);
    assert.equal(r.statusCode, 400, JSON.stringify(payload));
    const e = assertErrorShape(r.json(), 'TF_ERR_BAD_ARGS');
    assert.equal(e.type, 'invalid_request_error');
    assert.match(e.message, message);
  }
});

test('more choices than the engine can ever hold (slots + queue) is 400 naming the limits, not 429', async () => {
  // testApp: --max-sequences 4, --max-queue 8, so 12 choices fit an idle server and 13 never do.
  const never = await complete({ ...greedy, prompt: 'a', n: 13, max_tokens: 1 });
  assert.equal(never.statusCode, 400);
  assert.equal(never.headers['retry-after'], undefined);
  assert.match(
    assertErrorShape(never.json(), 'TF_ERR_BAD_ARGS').message,
    /13 sequences at once; this server decodes 4 \(--max-sequences\) and queues 8 more \(--max-queue\)/,
  );
  const twoPrompts = await complete({ ...greedy, prompt: ['a', 'b'], n: 7, max_tokens: 1 });
  assert.equal(twoPrompts.statusCode, 400);
  const fits = await complete({ ...greedy, prompt: 'a', n: 12, max_tokens: 1 });
  assert.equal(fits.statusCode, 200);
  assert.equal((fits.json() as CompletionResponse).choices.length, 12);
});

test('a temperature under the greedy epsilon, top_p 0 and min_p 1 answer greedily', async () => {
  const req = { model: MODEL, ignore_eos: true, prompt: 'Call me Ishmael.', max_tokens: 8 };
  const text = async (over: Record<string, unknown>) => {
    const r = await complete({ ...req, ...over });
    assert.equal(r.statusCode, 200, `${JSON.stringify(over)}: ${r.body}`);
    const c = (r.json() as CompletionResponse).choices[0]!;
    assert.equal(c.finish_reason, 'length');
    return c.text;
  };
  const expected = await text({ temperature: 0 });
  assert.ok(expected.length > 0);
  // 1e-310 is a subnormal double: 1/T is Infinity, which made the row NaN and the text empty.
  assert.equal(await text({ temperature: 1e-310 }), expected);
  assert.equal(await text({ temperature: 1.5, top_p: 0, seed: 3 }), expected);
  assert.equal(await text({ temperature: 1.5, min_p: 1, seed: 4 }), expected);
});

test('n = 12 puts one abort listener per request on the job: no MaxListenersExceededWarning', async () => {
  const warnings: Error[] = [];
  const onWarning = (w: Error) => warnings.push(w);
  process.on('warning', onWarning);
  try {
    for (const stream of [false, true]) {
      const r = await complete({ ...greedy, prompt: 'a', n: 12, max_tokens: 2, stream });
      assert.equal(r.statusCode, 200);
    }
    await new Promise((r) => setTimeout(r, 50)); // warnings are emitted on a later tick
  } finally {
    process.off('warning', onWarning);
  }
  assert.deepEqual(
    warnings.map((w) => `${w.name}: ${w.message}`),
    [],
  );
});

test("an unknown model is 404 (param model); a prompt longer than the context is 400 context_length_exceeded in OpenAI's words, not truncated", async () => {
  const r = await complete({ model: 'gpt-4', prompt: 'a' });
  assert.equal(r.statusCode, 404);
  const unknown = assertErrorShape(r.json(), 'TF_ERR_MODEL_NOT_FOUND') as { message: string; param?: string };
  assert.match(unknown.message, /"gpt-4" does not exist; this server serves "test-model"/);
  assert.equal(unknown.param, 'model');
  const context = t.engine.manifest.model.max_seq_len;
  const long = await complete({ prompt: Array.from({ length: context }, () => 5), max_tokens: 1 });
  assert.equal(long.statusCode, 400);
  const e = assertErrorShape(long.json(), 'context_length_exceeded') as {
    message: string;
    type: string;
    param?: string;
  };
  assert.match(
    e.message,
    new RegExp(
      `^This model's maximum context length is ${context} tokens\\. However, your prompt has ${context} tokens`,
    ),
  );
  assert.equal(e.type, 'invalid_request_error');
  assert.equal(e.param, 'prompt');
  const streamed = await complete({ prompt: Array.from({ length: context + 5 }, () => 5), stream: true });
  assert.equal(streamed.statusCode, 400);
  assertErrorShape(streamed.json(), 'context_length_exceeded');
  // Text that cannot fit is refused from its length alone, before tokenizing it.
  const huge = await complete({ prompt: 'Call me Ishmael. '.repeat(50_000), max_tokens: 1 });
  assert.equal(huge.statusCode, 400);
  assert.match(
    assertErrorShape(huge.json(), 'context_length_exceeded').message,
    /maximum context length is \d+ tokens\. However, a prompt \(850000 bytes\) has at least \d+ tokens/,
  );
});

test('field errors name the field as param (schema, sampling and request checks)', async () => {
  const cases: [Record<string, unknown>, string][] = [
    [{ prompt: 'a', temperature: 'hot' }, 'temperature'],
    [{ temperature: 0.5 }, 'prompt'],
    [{ prompt: 'a', temperature: 3 }, 'temperature'],
    [{ prompt: 'a', top_p: 2 }, 'top_p'],
    [{ prompt: 'a', n: 2, best_of: 3 }, 'best_of'],
    [{ prompt: [999999] }, 'prompt'],
  ];
  for (const [payload, param] of cases) {
    const r = await complete(payload);
    assert.equal(r.statusCode, 400, JSON.stringify(payload));
    assert.equal(
      (assertErrorShape(r.json(), 'TF_ERR_BAD_ARGS') as { param?: string }).param,
      param,
      JSON.stringify(payload),
    );
  }
});

test('an unknown model named by a megabyte string is 404 with a short message', async () => {
  // Found by test/server/fuzz.test.ts: the whole name was quoted back (a 1 MB error body).
  const r = await complete({ model: 'm'.repeat(1_000_000), prompt: 'a' });
  assert.equal(r.statusCode, 404);
  const e = assertErrorShape(r.json(), 'TF_ERR_MODEL_NOT_FOUND');
  assert.match(e.message, /^the model "m{80}…" does not exist/);
  assert.ok(e.message.length < 300);
});

test('a body over the limit is 413; bad JSON is 400; unknown routes are 404, all in the error shape', async () => {
  const big = await complete({ prompt: 'x'.repeat(1.1 * 2 ** 20) });
  assert.equal(big.statusCode, 413);
  assert.match(assertErrorShape(big.json(), 'TF_ERR_BODY_TOO_LARGE').message, /limit of 1048576 bytes/);
  const badJson = await t.app.inject({
    method: 'POST',
    url: '/v1/completions',
    headers: { 'content-type': 'application/json' },
    payload: '{"prompt": ',
  });
  assert.equal(badJson.statusCode, 400);
  assertErrorShape(badJson.json(), 'TF_ERR_BAD_ARGS');
  const missing = await t.app.inject({ method: 'GET', url: '/v1/chat/nothing' });
  assert.equal(missing.statusCode, 404);
  assertErrorShape(missing.json(), 'TF_ERR_NOT_FOUND');
});

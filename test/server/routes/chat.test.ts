import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { sseData } from '../../../scripts/harness/sse.ts';
import type { ChatChunk, ChatCompletion } from '../../../src/server/chat-openai.ts';
import { ChatTemplate } from '../../../src/server/chat-template.ts';
import type { CompletionResponse } from '../../../src/server/openai.ts';
import { assertErrorShape, MODEL, type TestApp, testApp } from '../helpers.ts';

let t: TestApp;
before(async () => {
  t = await testApp();
});
after(() => t.close());

const chat = (payload: Record<string, unknown>) =>
  t.app.inject({ method: 'POST', url: '/v1/chat/completions', payload });
const complete = (payload: Record<string, unknown>) =>
  t.app.inject({ method: 'POST', url: '/v1/completions', payload });

const MESSAGES = [
  { role: 'system', content: 'Answer briefly.' },
  { role: 'user', content: 'Call me Ishmael.' },
];
const greedy = { model: MODEL, temperature: 0, ignore_eos: true };

test('a chat completion is the completion of the rendered template, in the chat.completion shape', async () => {
  const r = await chat({ ...greedy, messages: MESSAGES, max_tokens: 6 });
  assert.equal(r.statusCode, 200, r.body);
  const body = r.json() as ChatCompletion;
  assert.match(body.id, /^chatcmpl-[0-9a-f]{32}$/);
  assert.equal(body.object, 'chat.completion');
  assert.equal(body.model, MODEL);
  assert.equal(body.system_fingerprint, t.version);
  const [c] = body.choices;
  assert.deepEqual(Object.keys(c!).sort(), ['finish_reason', 'index', 'logprobs', 'message']);
  assert.equal(c!.message.role, 'assistant');
  assert.equal(c!.logprobs, null);
  assert.equal(c!.finish_reason, 'length');

  // The served model has no chat template: the plain default renders the messages.
  const prompt = ChatTemplate.plain().render(MESSAGES);
  const plain = (await complete({ ...greedy, prompt, max_tokens: 6 })).json() as CompletionResponse;
  assert.equal(c!.message.content, plain.choices[0]!.text);
  assert.deepEqual(body.usage, plain.usage);
  assert.equal(body.usage.prompt_tokens, t.engine.tokenizer.encode(prompt).length);
});

test('streaming: delta.role first, then delta.content, finish_reason, usage, [DONE] — the same text', async () => {
  const plain = (await chat({ ...greedy, messages: MESSAGES, max_tokens: 8, n: 2 })).json() as ChatCompletion;
  const r = await chat({
    ...greedy,
    messages: MESSAGES,
    max_tokens: 8,
    n: 2,
    stream: true,
    stream_options: { include_usage: true },
  });
  assert.equal(r.statusCode, 200);
  assert.match(r.headers['content-type'] as string, /^text\/event-stream/);
  const events = sseData(r.body);
  assert.equal(events.at(-1), '[DONE]');
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e) as ChatChunk);
  for (const c of chunks) {
    assert.equal(c.object, 'chat.completion.chunk');
    assert.equal(c.id, chunks[0]!.id);
    assert.equal(c.usage === null || c === chunks.at(-1), true);
  }
  for (const index of [0, 1]) {
    const mine = chunks.flatMap((c) => c.choices.filter((x) => x.index === index));
    assert.deepEqual(mine[0]!.delta, { role: 'assistant', content: '' });
    assert.ok(mine.slice(1).every((x) => x.delta.role === undefined));
    assert.equal(mine.at(-1)!.finish_reason, 'length');
    assert.deepEqual(mine.at(-1)!.delta, {});
    const text = mine.map((x) => x.delta.content ?? '').join('');
    assert.equal(text, plain.choices[index]!.message.content);
  }
  const last = chunks.at(-1)!;
  assert.deepEqual(last.choices, []);
  assert.deepEqual(last.usage, plain.usage);
});

test('logprobs in the chat shape: token, logprob, bytes and top_logprobs per generated token', async () => {
  const r = await chat({
    ...greedy,
    messages: MESSAGES,
    max_completion_tokens: 5,
    logprobs: true,
    top_logprobs: 3,
  });
  assert.equal(r.statusCode, 200, r.body);
  const c = (r.json() as ChatCompletion).choices[0]!;
  const content = c.logprobs!.content;
  assert.equal(content.length, 5); // max_completion_tokens bounds the reply
  for (const e of content) {
    assert.equal(typeof e.token, 'string');
    assert.ok(e.logprob <= 0);
    assert.ok(Array.isArray(e.bytes) && e.bytes.every((b) => Number.isInteger(b) && b >= 0 && b < 256));
    assert.equal(e.top_logprobs.length, 3);
    // Greedy: the chosen token is the likeliest.
    assert.ok(Math.abs(e.top_logprobs[0]!.logprob - e.logprob) < 1e-9);
    for (let i = 1; i < 3; i++) assert.ok(e.top_logprobs[i]!.logprob <= e.top_logprobs[i - 1]!.logprob);
  }
  // The bytes of all tokens are the reply's UTF-8 bytes.
  assert.deepEqual(Buffer.from(content.flatMap((e) => e.bytes)).toString('utf8'), c.message.content);
  const none = (
    await chat({ ...greedy, messages: MESSAGES, max_tokens: 2, logprobs: true })
  ).json() as ChatCompletion;
  assert.ok(none.choices[0]!.logprobs!.content.every((e) => e.top_logprobs.length === 0));
});

test('stop, seed and penalties behave as on /v1/completions', async () => {
  const base = (await chat({ ...greedy, messages: MESSAGES, max_tokens: 12 })).json() as ChatCompletion;
  const text = base.choices[0]!.message.content;
  const stop = text.slice(3, 5);
  const stopped = (
    await chat({ ...greedy, messages: MESSAGES, max_tokens: 12, stop })
  ).json() as ChatCompletion;
  assert.equal(stopped.choices[0]!.finish_reason, 'stop');
  assert.equal(stopped.choices[0]!.message.content, text.slice(0, text.indexOf(stop)));
  const seeded = { messages: MESSAGES, max_tokens: 8, temperature: 1, seed: 42, frequency_penalty: 0.5 };
  const a = (await chat(seeded)).json() as ChatCompletion;
  const b = (await chat(seeded)).json() as ChatCompletion;
  assert.equal(a.choices[0]!.message.content, b.choices[0]!.message.content);
});

test('text content parts are joined; bad chat requests are 400 in the OpenAI error shape', async () => {
  const parts = await chat({
    ...greedy,
    messages: [
      {
        role: 'user',
        content: [
          { type: 'text', text: 'Call me ' },
          { type: 'text', text: 'Ishmael.' },
        ],
      },
    ],
    max_tokens: 3,
  });
  const whole = await chat({
    ...greedy,
    messages: [{ role: 'user', content: 'Call me Ishmael.' }],
    max_tokens: 3,
  });
  assert.equal(
    (parts.json() as ChatCompletion).choices[0]!.message.content,
    (whole.json() as ChatCompletion).choices[0]!.message.content,
  );
  const cases: [Record<string, unknown>, RegExp][] = [
    [{}, /messages/],
    [{ messages: [] }, /messages must NOT have fewer than 1 items/],
    [{ messages: [{ content: 'x' }] }, /role/],
    [
      { messages: [{ role: 'user', content: [{ type: 'image_url' }] }] },
      /content parts of type "image_url" are not supported/,
    ],
    [{ messages: MESSAGES, top_logprobs: 2 }, /top_logprobs needs logprobs: true/],
    [
      { messages: MESSAGES, logprobs: true, top_logprobs: 50 },
      /top_logprobs must be an integer between 0 and 20/,
    ],
    [{ messages: MESSAGES, temperature: 5 }, /temperature must be between 0 and 2/],
    [{ messages: MESSAGES, max_completion_tokens: 0 }, /max_completion_tokens must be >= 1/],
    // The fields shared with /v1/completions are checked by the same code.
    [{ messages: MESSAGES, tools: [{ type: 'function' }] }, /tools are not supported/],
    [
      { messages: MESSAGES, response_format: { type: 'json_object' } },
      /response_format of type "json_object"/,
    ],
    [{ messages: MESSAGES, logit_bias: { 99999: 5 } }, /logit_bias token id 99999 is not in the vocabulary/],
  ];
  for (const [payload, message] of cases) {
    const r = await chat(payload);
    assert.equal(r.statusCode, 400, JSON.stringify(payload));
    assert.match(assertErrorShape(r.json(), 'TF_ERR_BAD_ARGS').message, message);
  }
  const unknown = await chat({ model: 'gpt-4', messages: MESSAGES });
  assert.equal(unknown.statusCode, 404);
});

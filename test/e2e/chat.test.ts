import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import OpenAI from 'openai';
import { ServerProcess } from '../../scripts/harness/server.ts';
import { readSse, sseData } from '../../scripts/harness/sse.ts';
import { openWs } from '../../scripts/harness/ws.ts';
import { ChatTemplate, type TokenizerConfig } from '../../src/server/chat-template.ts';
import { servedModel } from '../engine/served-model.ts';
import { CHROMIUM_FLAGS, chromiumEvaluate, chromiumPath } from '../server/processes.ts';

/**
 * Chat completions against a real server process: a checkpoint with a tokenizer_config.json (the
 * Zephyr template) served as is — exported on first use with the config — through the official
 * openai client (streaming and not, with logprobs), raw SSE and the WebSocket.
 */

const ZEPHYR = join(import.meta.dirname, '../server/fixtures/zephyr-tokenizer_config.json');
const MESSAGES = [
  {
    role: 'system' as const,
    content: 'You are a friendly chatbot who always responds in the style of a pirate',
  },
  { role: 'user' as const, content: 'How many helicopters can a human eat in one sitting?' },
];

let dir: string;
let server: ServerProcess;
let model: string;
const servers: ServerProcess[] = [];
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tf-e2e-chat-'));
  const { checkpoint } = await servedModel(dir);
  copyFileSync(ZEPHYR, join(checkpoint, 'tokenizer_config.json'));
  server = await ServerProcess.start(['--model', checkpoint, '--device', 'cpu', '--threads', '1']);
  servers.push(server);
  model = ((await (await fetch(`${server.url}/v1/models`)).json()) as { data: { id: string }[] }).data[0]!.id;
});
after(async () => {
  for (const s of servers) await s.stop(10_000);
  rmSync(dir, { recursive: true, force: true });
});

async function promptTokens(url: string, prompt: string): Promise<number> {
  const r = await fetch(`${url}/tokenize`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt }),
  });
  return ((await r.json()) as { count: number }).count;
}

test('the openai client: chat.completions.create, streaming and not, with logprobs, through the model template', async () => {
  const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'x', maxRetries: 0, timeout: 60_000 });
  const params = {
    model,
    messages: MESSAGES,
    max_tokens: 12,
    temperature: 0,
    logprobs: true,
    top_logprobs: 2,
  };
  const plain = await client.chat.completions.create(params);
  assert.equal(plain.object, 'chat.completion');
  const choice = plain.choices[0]!;
  assert.equal(choice.message.role, 'assistant');
  assert.ok(choice.message.content!.length > 0);
  const lp = choice.logprobs!.content!;
  assert.equal(lp.length, plain.usage!.completion_tokens);
  for (const e of lp) assert.equal(e.top_logprobs.length, 2);
  // The prompt is the model's own template (from its tokenizer_config.json), not the default.
  const config = JSON.parse(readFileSync(ZEPHYR, 'utf8')) as TokenizerConfig;
  const rendered = ChatTemplate.fromTokenizerConfig(config, 'zephyr')!.render(MESSAGES);
  assert.ok(rendered.endsWith('</s>\n<|assistant|>\n'));
  assert.equal(plain.usage!.prompt_tokens, await promptTokens(server.url, rendered));

  const stream = await client.chat.completions.create({
    ...params,
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let role: string | undefined;
  let finish: string | null = null;
  const streamed: OpenAI.ChatCompletionTokenLogprob[] = [];
  let usage: OpenAI.CompletionUsage | undefined | null;
  for await (const chunk of stream) {
    for (const c of chunk.choices) {
      role ??= c.delta.role;
      text += c.delta.content ?? '';
      finish = c.finish_reason ?? finish;
      streamed.push(...(c.logprobs?.content ?? []));
    }
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(role, 'assistant');
  assert.equal(text, choice.message.content);
  assert.equal(finish, choice.finish_reason);
  assert.deepEqual(usage, plain.usage);
  assert.deepEqual(
    streamed.map((e) => [e.token, e.logprob]),
    lp.map((e) => [e.token, e.logprob]),
  );
  await assert.rejects(
    client.chat.completions.create({ model, messages: [] }),
    (err: InstanceType<typeof OpenAI.APIError>) => err.status === 400,
  );
});

test('raw SSE: chat.completion.chunk events ending with data: [DONE]', async () => {
  const res = await fetch(`${server.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ messages: MESSAGES, max_tokens: 4, stream: true }),
  });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type')!, /^text\/event-stream/);
  const body = await readSse(res);
  assert.ok(body.endsWith('data: [DONE]\n\n'), body.slice(-200));
  const data = sseData(body);
  const chunks = data.slice(0, -1).map((d) => JSON.parse(d) as OpenAI.ChatCompletionChunk);
  assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk'));
  assert.equal(chunks[0]!.choices[0]!.delta.role, 'assistant');
  assert.ok(chunks.at(-1)!.choices[0]!.finish_reason);
});

test('WebSocket: chat.create answered by chat.delta and chat.done, the same text as HTTP; chat.cancel', async () => {
  const http = (await (
    await fetch(`${server.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ messages: MESSAGES, max_tokens: 10, temperature: 0, logprobs: true }),
    })
  ).json()) as OpenAI.ChatCompletion;
  const { ws, inbox } = await openWs(`${server.url}/v1/stream`);
  try {
    ws.send(
      JSON.stringify({
        type: 'chat.create',
        id: 'c1',
        messages: MESSAGES,
        max_tokens: 10,
        temperature: 0,
        logprobs: true,
      }),
    );
    const done = await inbox.waitFor((m) => m.type === 'chat.done' && m.id === 'c1', 'chat.done');
    const deltas = inbox.of('c1').filter((m) => m.type === 'chat.delta');
    assert.ok(deltas.length > 0);
    assert.equal(deltas.map((d) => d.content as string).join(''), http.choices[0]!.message.content);
    const tokens = deltas.flatMap((d) => (d.logprobs as { content: { token: string }[] }).content);
    assert.deepEqual(
      tokens.map((e) => e.token),
      http.choices[0]!.logprobs!.content!.map((e) => e.token),
    );
    assert.deepEqual(done.usage, http.usage);
    assert.equal(done.finish_reason, http.choices[0]!.finish_reason);

    ws.send(
      JSON.stringify({
        type: 'chat.create',
        id: 'c2',
        messages: MESSAGES,
        max_tokens: 400,
        ignore_eos: true,
      }),
    );
    await inbox.waitFor((m) => m.type === 'chat.delta' && m.id === 'c2', 'a chat.delta for c2');
    ws.send(JSON.stringify({ type: 'chat.cancel', id: 'c2' }));
    const cancelled = await inbox.waitFor((m) => m.type === 'chat.done' && m.id === 'c2', 'chat.done for c2');
    assert.equal(cancelled.finish_reason, 'cancelled');
    ws.send(JSON.stringify({ type: 'chat.create', id: 'c3', messages: [] }));
    const err = await inbox.waitFor((m) => m.type === 'error' && m.id === 'c3', 'an error for c3');
    assert.equal(err.code, 'TF_ERR_BAD_ARGS');
  } finally {
    ws.close();
  }
});

test('--chat-template FILE overrides the model template', async () => {
  const file = join(dir, 'template.jinja');
  writeFileSync(
    file,
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{{ eos_token }}{% endfor %}<assistant>",
  );
  const other = await ServerProcess.start([
    '--model',
    join(dir, 'checkpoint'),
    '--device',
    'cpu',
    '--threads',
    '1',
    '--chat-template',
    file,
  ]);
  servers.push(other);
  const r = (await (
    await fetch(`${other.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ messages: MESSAGES, max_tokens: 1 }),
    })
  ).json()) as OpenAI.ChatCompletion;
  // The bare template takes eos_token from the model's tokenizer_config.json.
  const rendered = MESSAGES.map((m) => `<${m.role}>${m.content}</s>`).join('') + '<assistant>';
  assert.equal(r.usage!.prompt_tokens, await promptTokens(other.url, rendered));
  await other.stop(10_000);
});

test('the playground chat tab streams a reply in headless Chromium', async () => {
  chromiumPath(); // a clear failure when Chromium is missing
  assert.ok(CHROMIUM_FLAGS.length > 0);
  const url =
    `${server.url}/?tab=chat&message=${encodeURIComponent('Hello there')}` +
    `&system=${encodeURIComponent('Be brief.')}&max_tokens=6&temperature=0&autorun=1`;
  const state = (await chromiumEvaluate(
    join(dir, 'chromium-chat'),
    url,
    `({ state: document.body.dataset.state, tab: document.body.dataset.tab,
        status: document.getElementById('status').textContent,
        chatHidden: document.getElementById('chat-panel').hidden,
        roles: [...document.querySelectorAll('#chat-log .msg')].map((m) => m.className),
        reply: document.getElementById('reply')?.textContent ?? '' })`,
    (v) => ['done', 'error'].includes((v as { state?: string } | undefined)?.state ?? ''),
  )) as { state: string; tab: string; status: string; chatHidden: boolean; roles: string[]; reply: string };
  assert.equal(state.state, 'done', state.status);
  assert.equal(state.tab, 'chat');
  assert.equal(state.chatHidden, false);
  assert.deepEqual(state.roles, ['msg user', 'msg assistant']);
  assert.match(state.status, /^done: \d+ tokens in [\d.]+ s, finish_reason (length|stop)$/);
  // The same reply as the API gives for the same conversation.
  const api = (await (
    await fetch(`${server.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        messages: [
          { role: 'system', content: 'Be brief.' },
          { role: 'user', content: 'Hello there' },
        ],
        max_tokens: 6,
        temperature: 0,
        top_p: 0.95,
      }),
    })
  ).json()) as OpenAI.ChatCompletion;
  assert.equal(state.reply, api.choices[0]!.message.content);
});

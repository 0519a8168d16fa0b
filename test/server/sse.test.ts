import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type CompletionMeta, completionChunk, usage } from '../../src/server/openai.ts';
import { SSE_DONE, SSE_HEADERS, sseJson, sseText } from '../../src/server/sse.ts';

const meta: CompletionMeta = { id: 'cmpl-1', created: 1700000000, model: 'm', system_fingerprint: 'v1' };

test('a JSON payload is one data line and a blank line, whatever its text holds', () => {
  const chunk = completionChunk(meta, [
    { index: 0, text: 'a\nb\r\n"c"\u2028', logprobs: null, finish_reason: null },
  ]);
  const event = sseJson(chunk);
  assert.ok(event.startsWith('data: {'));
  assert.ok(event.endsWith('}\n\n'));
  assert.equal(event.split('\n').length, 3); // one data line, then the blank line
  assert.deepEqual(JSON.parse(event.slice(6)), chunk);
});

test('multi-line text becomes one data line per line; an event name is a single line', () => {
  assert.equal(sseText('a\nb\r\nc'), 'data: a\ndata: b\ndata: c\n\n');
  assert.equal(sseText('x', 'error\nbad'), 'event: error bad\ndata: x\n\n');
  assert.equal(SSE_DONE, 'data: [DONE]\n\n');
  assert.equal(SSE_HEADERS['content-type'], 'text/event-stream; charset=utf-8');
});

test('completion chunks: usage absent, null, or the totals with no choices', () => {
  const choice = { index: 1, text: 'hi', logprobs: null, finish_reason: null };
  assert.deepEqual(completionChunk(meta, [choice]), {
    id: 'cmpl-1',
    object: 'text_completion',
    created: 1700000000,
    model: 'm',
    system_fingerprint: 'v1',
    choices: [choice],
  });
  assert.equal(completionChunk(meta, [choice], null).usage, null);
  const last = completionChunk(meta, [], usage(3, 4));
  assert.deepEqual(last.choices, []);
  assert.deepEqual(last.usage, { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 });
});

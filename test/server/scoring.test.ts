import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { sseData } from '../../scripts/harness/sse.ts';
import { validateSamplingParams } from '../../src/engine/sampling/params.ts';
import { SafeTensorsFile } from '../../src/formats/safetensors.ts';
import type { CompletionResponse } from '../../src/server/openai.ts';
import { FIXTURES } from '../helpers.ts';
import { assertErrorShape, type TestApp, testApp } from './helpers.ts';

/**
 * Prompt scoring (`echo` + `logprobs`, `max_tokens` 0), as evaluation harnesses use it. The
 * served model has the official-tiny weights (test/engine/served-model.ts), so prompt logprobs
 * of the fixture's token ids are checked against its golden float64 logits.
 */

let t: TestApp;
before(async () => {
  t = await testApp();
});
after(() => t.close());

const complete = (payload: Record<string, unknown>) =>
  t.app.inject({ method: 'POST', url: '/v1/completions', payload });

function golden(): { ids: number[][]; logits: Float32Array } {
  const f = SafeTensorsFile.open(join(FIXTURES, 'official-tiny', 'golden.safetensors'));
  try {
    const flat = Array.from(f.readI64('input_ids'), Number);
    return { ids: [flat.slice(0, 24), flat.slice(24)], logits: f.readF32('logits') };
  } finally {
    f.close();
  }
}

/** log-softmax of one row of golden logits, in float64. */
function logSoftmax(row: Float32Array): number[] {
  const max = Math.max(...row);
  const logZ = max + Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0));
  return Array.from(row, (x) => x - logZ);
}

test('prompt logprobs of the official-tiny weights match the golden logits (log-softmax) within 1e-4', async () => {
  const g = golden();
  const V = 512;
  const r = await complete({ prompt: g.ids, echo: true, logprobs: 5, max_tokens: 0 });
  assert.equal(r.statusCode, 200, r.body);
  const body = r.json() as CompletionResponse;
  assert.equal(body.choices.length, 2);
  assert.deepEqual(body.usage, { prompt_tokens: 48, completion_tokens: 0, total_tokens: 48 });
  let worst = 0;
  for (const [b, ids] of g.ids.entries()) {
    const c = body.choices[b]!;
    assert.equal(c.finish_reason, 'length');
    assert.equal(c.text, t.engine.tokenizer.decode(ids));
    const lp = c.logprobs!;
    assert.equal(lp.tokens.length, 24);
    assert.equal(lp.token_logprobs[0], null, 'the first token has no logprob');
    assert.equal(lp.top_logprobs[0], null);
    for (let i = 1; i < 24; i++) {
      const expected = logSoftmax(g.logits.subarray((b * 24 + i - 1) * V, (b * 24 + i) * V));
      worst = Math.max(worst, Math.abs(lp.token_logprobs[i]! - expected[ids[i]!]!));
      // The alternatives: the five best golden logprobs (and the chosen token's).
      const best = [...expected].sort((x, y) => y - x).slice(0, 5);
      const shown = Object.values(lp.top_logprobs[i]!);
      for (const v of best)
        assert.ok(
          shown.some((s) => Math.abs(s - v) <= 1e-4),
          `position ${i}: ${v} missing`,
        );
    }
  }
  assert.ok(worst <= 1e-4, `max |logprob − golden| = ${worst}`);
});

test('echo + logprobs with generation: prompt logprobs, then the generated ones, agreeing with a rescoring', async () => {
  const r = await complete({
    prompt: 'Call me Ishmael.',
    echo: true,
    logprobs: 2,
    max_tokens: 6,
    temperature: 0,
    ignore_eos: true,
  });
  assert.equal(r.statusCode, 200, r.body);
  const c = (r.json() as CompletionResponse).choices[0]!;
  const prompt = t.engine.tokenizer.encode('Call me Ishmael.');
  const lp = c.logprobs!;
  assert.equal(lp.tokens.length, prompt.length + 6);
  assert.equal(lp.token_logprobs[0], null);
  assert.ok(lp.token_logprobs.slice(1).every((x) => typeof x === 'number' && x <= 0));
  assert.ok(c.text.startsWith('Call me Ishmael.'));
  // Offsets run through the echoed prompt and on into the completion.
  assert.equal(lp.text_offset[0], 0);
  assert.equal(lp.text_offset[prompt.length], 'Call me Ishmael.'.length);

  // Scoring the prompt plus what was generated (one full-sequence pass) gives the logprobs the
  // KV-cache decoder reported while generating.
  const params = validateSamplingParams({ temperature: 0, max_tokens: 6, ignore_eos: true, logprobs: 0 });
  const generated: { token: number; logprob: number }[] = [];
  for await (const e of t.engine.generate(prompt, params))
    if (e.type === 'delta') generated.push(...e.tokens);
  assert.equal(generated.length, 6);
  const rescored = await complete({
    prompt: [...prompt, ...generated.map((g) => g.token)],
    echo: true,
    logprobs: 0,
    max_tokens: 0,
  });
  const again = (rescored.json() as CompletionResponse).choices[0]!.logprobs!;
  for (const [i, g] of generated.entries()) {
    const a = again.token_logprobs[prompt.length + i]!;
    assert.ok(Math.abs(a - g.logprob) <= 1e-4, `token ${i}: scored ${a}, generated ${g.logprob}`);
    assert.ok(Math.abs(lp.token_logprobs[prompt.length + i]! - g.logprob) <= 1e-6);
  }
});

test('streaming echo + logprobs sends the prompt logprobs in the first chunk', async () => {
  const r = await complete({
    prompt: 'The sea',
    echo: true,
    logprobs: 1,
    max_tokens: 2,
    stream: true,
    temperature: 0,
  });
  assert.equal(r.statusCode, 200);
  const chunks = sseData(r.body);
  assert.equal(chunks.at(-1), '[DONE]');
  const first = JSON.parse(chunks[0]!) as CompletionResponse;
  assert.equal(first.choices[0]!.text, 'The sea');
  const lp = first.choices[0]!.logprobs!;
  assert.equal(lp.tokens.length, t.engine.tokenizer.encode('The sea').length);
  assert.equal(lp.token_logprobs[0], null);
});

test('max_tokens 0 needs echo; a scored prompt may fill the whole context', async () => {
  assertErrorShape((await complete({ prompt: 'x', max_tokens: 0 })).json(), 'TF_ERR_BAD_ARGS');
  const context = t.engine.manifest.model.max_seq_len;
  const full = Array.from({ length: context }, (_, i) => 10 + (i % 100));
  const r = await complete({ prompt: full, echo: true, logprobs: 0, max_tokens: 0 });
  assert.equal(r.statusCode, 200, r.body);
  assert.equal((r.json() as CompletionResponse).choices[0]!.logprobs!.tokens.length, context);
  const over = await complete({ prompt: [...full, 11], echo: true, logprobs: 0, max_tokens: 0 });
  assertErrorShape(over.json(), 'context_length_exceeded');
  // With generation the prompt must leave room for a token.
  assertErrorShape((await complete({ prompt: full, max_tokens: 1 })).json(), 'context_length_exceeded');
});

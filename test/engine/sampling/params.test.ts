import assert from 'node:assert/strict';
import test from 'node:test';
import { DEFAULT_MAX_TOKENS, validateSamplingParams } from '../../../src/engine/sampling/params.ts';
import { TokenFormerError } from '../../../src/util/errors.ts';

function rejects(raw: unknown, message: RegExp): void {
  assert.throws(
    () => validateSamplingParams(raw),
    (err: unknown) =>
      err instanceof TokenFormerError && err.code === 'TF_ERR_BAD_ARGS' && message.test(err.message),
  );
}

test('an empty request gets the OpenAI defaults, with penalties and filters off', () => {
  assert.deepEqual(validateSamplingParams({}), {
    temperature: 1,
    top_k: 0,
    top_p: 1,
    min_p: 0,
    repetition_penalty: 1,
    presence_penalty: 0,
    frequency_penalty: 0,
    max_tokens: DEFAULT_MAX_TOKENS,
    stop: [],
    ignore_eos: false,
  });
});

test('valid values pass through; stop is normalised to a list, top_k -1 to 0, null means absent', () => {
  const p = validateSamplingParams({
    model: 'ignored',
    prompt: 'ignored',
    temperature: 0,
    top_k: -1,
    top_p: 0.9,
    min_p: 0.05,
    repetition_penalty: 1.2,
    presence_penalty: -2,
    frequency_penalty: 2,
    seed: -7,
    logprobs: 20,
    max_tokens: 128,
    stop: '\n\n',
    ignore_eos: true,
  });
  assert.equal(p.temperature, 0);
  assert.equal(p.top_k, 0);
  assert.deepEqual(p.stop, ['\n\n']);
  assert.equal(p.seed, -7);
  assert.equal(p.logprobs, 20);
  assert.equal(p.ignore_eos, true);
  assert.equal('model' in p, false);

  const q = validateSamplingParams({ temperature: null, seed: null, logprobs: null, stop: null });
  assert.equal(q.temperature, 1);
  assert.equal('seed' in q, false);
  assert.equal('logprobs' in q, false);
  assert.deepEqual(q.stop, []);
  assert.equal(validateSamplingParams({ logprobs: 0 }).logprobs, 0);
});

test('top_p 0 and min_p 1 are accepted, as OpenAI and vLLM accept them', () => {
  assert.equal(validateSamplingParams({ top_p: 0 }).top_p, 0);
  assert.equal(validateSamplingParams({ min_p: 1 }).min_p, 1);
  assert.equal(validateSamplingParams({ temperature: 1e-310 }).temperature, 1e-310);
});

test('each bad field is named with its range and the value received', () => {
  rejects(null, /sampling parameters must be an object/);
  rejects([1], /sampling parameters must be an object/);
  rejects({ temperature: 3 }, /^temperature must be between 0 and 2, got 3$/);
  rejects({ temperature: -0.1 }, /^temperature must be between 0 and 2, got -0.1$/);
  rejects({ temperature: 'hot' }, /^temperature must be a number, got string "hot"$/);
  rejects({ temperature: Number.NaN }, /temperature must be between 0 and 2, got NaN/);
  rejects({ top_k: 1.5 }, /^top_k must be an integer, got 1.5$/);
  rejects({ top_k: -2 }, /^top_k must be ≥ 0 \(0 or -1 = off\), got -2$/);
  rejects({ top_p: -0.01 }, /^top_p must be between 0 and 1, got -0.01$/);
  rejects({ top_p: 1.01 }, /^top_p must be between 0 and 1, got 1.01$/);
  rejects({ min_p: 1.5 }, /^min_p must be between 0 and 1, got 1.5$/);
  rejects({ min_p: -0.1 }, /^min_p must be between 0 and 1, got -0.1$/);
  rejects({ repetition_penalty: 0 }, /^repetition_penalty must be a finite number > 0 \(1 = off\), got 0$/);
  rejects({ repetition_penalty: Number.POSITIVE_INFINITY }, /repetition_penalty .* got Infinity/);
  rejects({ presence_penalty: 2.5 }, /^presence_penalty must be between -2 and 2, got 2.5$/);
  rejects({ frequency_penalty: -3 }, /^frequency_penalty must be between -2 and 2, got -3$/);
  rejects({ seed: 1.5 }, /^seed must be an integer, got 1.5$/);
  rejects({ seed: '42' }, /^seed must be an integer, got "42"$/);
  rejects({ seed: 2 ** 60 }, /^seed must be an integer/);
  rejects({ logprobs: 21 }, /^logprobs must be between 0 and 20, got 21$/);
  rejects({ logprobs: -1 }, /^logprobs must be between 0 and 20, got -1$/);
  rejects({ logprobs: true }, /^logprobs must be an integer, got true$/);
  rejects({ max_tokens: 0 }, /^max_tokens must be ≥ 1, got 0$/);
  rejects({ max_tokens: 2.5 }, /^max_tokens must be an integer, got 2.5$/);
  rejects({ stop: ['a', 'b', 'c', 'd', 'e'] }, /^stop must hold at most 4 strings, got 5$/);
  rejects({ stop: ['a', 1] }, /^stop must hold only strings, got number 1$/);
  rejects({ stop: '' }, /^stop strings must not be empty$/);
  rejects({ stop: 7 }, /^stop must be a string or an array of strings, got number$/);
  rejects({ ignore_eos: 'yes' }, /^ignore_eos must be a boolean, got "yes"$/);
});

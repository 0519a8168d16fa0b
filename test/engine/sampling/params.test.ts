import assert from 'node:assert/strict';
import test from 'node:test';
import {
  DEFAULT_MAX_TOKENS,
  remainingParams,
  validateSamplingParams,
} from '../../../src/engine/sampling/params.ts';
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
    logit_bias: [],
    min_tokens: 0,
    stop_token_ids: [],
  });
});

test('logit_bias becomes sorted [id, bias] pairs; min_tokens and stop_token_ids pass through', () => {
  const p = validateSamplingParams({
    logit_bias: { '50': -100, '7': 100, '12': 0.5 },
    min_tokens: 4,
    max_tokens: 4,
    stop_token_ids: [9, 3, 9],
    stop: Array.from({ length: 64 }, (_, i) => `s${i}`),
  });
  assert.deepEqual(p.logit_bias, [
    [7, 100],
    [12, 0.5],
    [50, -100],
  ]);
  assert.equal(p.min_tokens, 4);
  assert.deepEqual(p.stop_token_ids, [9, 3]);
  assert.equal(p.stop.length, 64);
  const q = validateSamplingParams({ logit_bias: null, min_tokens: null, stop_token_ids: null });
  assert.deepEqual([q.logit_bias, q.min_tokens, q.stop_token_ids], [[], 0, []]);
});

test('remainingParams: a moved stream keeps what is left of max_tokens and min_tokens', () => {
  const p = validateSamplingParams({ max_tokens: 10, min_tokens: 4 });
  assert.equal(remainingParams(p, 0), p);
  const r = remainingParams(p, 6);
  assert.deepEqual([r.max_tokens, r.min_tokens], [4, 0]);
  assert.deepEqual([remainingParams(p, 3).max_tokens, remainingParams(p, 3).min_tokens], [7, 1]);
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
  rejects(
    { stop: Array.from({ length: 65 }, (_, i) => `s${i}`) },
    /^stop must hold at most 64 strings, got 65$/,
  );
  rejects({ logit_bias: { '5': 101 } }, /^logit_bias\[5\] must be between -100 and 100, got 101$/);
  rejects({ logit_bias: { '5': -100.5 } }, /^logit_bias\[5\] must be between -100 and 100, got -100.5$/);
  rejects({ logit_bias: { abc: 1 } }, /^logit_bias keys must be token ids \(integers ≥ 0\), got "abc"$/);
  rejects({ logit_bias: { '-1': 1 } }, /^logit_bias keys must be token ids/);
  rejects({ logit_bias: { '1.5': 1 } }, /^logit_bias keys must be token ids/);
  rejects({ logit_bias: { '3': '1' } }, /^logit_bias\[3\] must be a number, got "1"$/);
  rejects({ logit_bias: [1, 2] }, /^logit_bias must be an object mapping token ids to biases, got an array$/);
  rejects({ min_tokens: -1 }, /^min_tokens must be ≥ 0, got -1$/);
  rejects({ min_tokens: 17 }, /^min_tokens \(17\) must not exceed max_tokens \(16\)$/);
  rejects({ stop_token_ids: [1, -2] }, /^stop_token_ids must hold token ids \(integers ≥ 0\), got -2$/);
  rejects(
    { stop_token_ids: Array.from({ length: 65 }, (_, i) => i) },
    /^stop_token_ids must hold at most 64 ids, got 65$/,
  );
  rejects({ stop_token_ids: 3 }, /^stop_token_ids must be an array of token ids, got number$/);
  rejects({ stop: ['a', 1] }, /^stop must hold only strings, got number 1$/);
  rejects({ stop: '' }, /^stop strings must not be empty$/);
  rejects({ stop: 7 }, /^stop must be a string or an array of strings, got number$/);
  rejects({ ignore_eos: 'yes' }, /^ignore_eos must be a boolean, got "yes"$/);
});

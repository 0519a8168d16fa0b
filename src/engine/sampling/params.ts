import { TokenFormerError } from '../../util/errors.ts';

/**
 * Per-request sampling parameters, validated once at the boundary (the server route) and then
 * trusted by the sampler, the stop matcher and the scheduler. Names and ranges follow the OpenAI
 * completions API; the extras (top_k, min_p, repetition_penalty, ignore_eos) follow vLLM.
 */
export interface SamplingParams {
  /**
   * Softmax temperature in [0, 2]; below GREEDY_TEMPERATURE it is greedy (argmax, ties to the
   * lowest id), since 1/T overflows to Infinity for the smallest doubles.
   */
  temperature: number;
  /** Keep only the k most likely tokens; 0 = off (vLLM's -1 is accepted and read as 0). */
  top_k: number;
  /** Nucleus: keep the smallest set of most likely tokens whose mass is ≥ top_p; in [0, 1], 1 = off, 0 = greedy. */
  top_p: number;
  /** Drop tokens whose probability is below min_p · p_max; in [0, 1], 0 = off, 1 = greedy. */
  min_p: number;
  /** HF/vLLM: divide positive, multiply negative logits of tokens seen in prompt + output; 1 = off. */
  repetition_penalty: number;
  /** OpenAI: subtract from the logit of every token generated at least once; in [-2, 2]. */
  presence_penalty: number;
  /** OpenAI: subtract count · frequency_penalty for generated tokens; in [-2, 2]. */
  frequency_penalty: number;
  /** Makes the draws reproducible; absent = a random seed per request. */
  seed?: number;
  /** Return this many top alternatives per token (0..20) besides the chosen token's logprob. */
  logprobs?: number;
  /** Upper bound on generated tokens; the context length may end a request earlier. */
  max_tokens: number;
  /** Up to 64 non-empty stop strings, matched on generated text and not included in the output. */
  stop: string[];
  /** Keep generating past the end-of-sequence token (benchmarks). */
  ignore_eos: boolean;
  /** OpenAI: [token id, bias in [-100, 100]] pairs, added to those tokens' logits; ids ascending. */
  logit_bias: [number, number][];
  /**
   * vLLM: until this many tokens were generated, the end-of-text token and stop_token_ids cannot
   * be sampled and stop strings do not end the text; ≤ max_tokens.
   */
  min_tokens: number;
  /** vLLM: token ids (besides end-of-text) that end the sequence with `stop`; their text is not output. */
  stop_token_ids: number[];
}

export const MAX_LOGPROBS = 20;
/** Temperatures below this sample greedily (vLLM's _SAMPLING_EPS). */
export const GREEDY_TEMPERATURE = 1e-5;
export const MAX_STOP_STRINGS = 64;
export const MAX_STOP_TOKEN_IDS = 64;
/** OpenAI's range for a logit_bias value: -100 bans a token, 100 all but forces it. */
export const MAX_LOGIT_BIAS = 100;
/** OpenAI's default for /v1/completions. */
export const DEFAULT_MAX_TOKENS = 16;

/** Every error names its field as `param` (OpenAI's error field). */
const bad = (msg: string, param?: string): never => {
  throw new TokenFormerError('TF_ERR_BAD_ARGS', msg, param === undefined ? undefined : { param });
};
const show = (v: unknown): string => (typeof v === 'string' ? JSON.stringify(v) : String(v));

function num(raw: Record<string, unknown>, key: string, dflt: number): number {
  const v = raw[key];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'number') return bad(`${key} must be a number, got ${typeof v} ${show(v)}`, key);
  return v;
}

function int(raw: Record<string, unknown>, key: string): number | undefined {
  const v = raw[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v))
    return bad(`${key} must be an integer, got ${show(v)}`, key);
  return v;
}

function between(key: string, v: number, lo: number, hi: number, param = key): number {
  // Written so that NaN fails too.
  if (!(v >= lo && v <= hi)) bad(`${key} must be between ${lo} and ${hi}, got ${v}`, param);
  return v;
}

function stops(v: unknown): string[] {
  if (v === undefined || v === null) return [];
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list))
    return bad(`stop must be a string or an array of strings, got ${typeof v}`, 'stop');
  if (list.length > MAX_STOP_STRINGS)
    bad(`stop must hold at most ${MAX_STOP_STRINGS} strings, got ${list.length}`, 'stop');
  for (const s of list) {
    if (typeof s !== 'string') bad(`stop must hold only strings, got ${typeof s} ${show(s)}`, 'stop');
    if (s === '') bad('stop strings must not be empty', 'stop');
  }
  return [...(list as string[])];
}

function logitBias(v: unknown): [number, number][] {
  if (v === undefined || v === null) return [];
  if (typeof v !== 'object' || Array.isArray(v))
    return bad(
      `logit_bias must be an object mapping token ids to biases, got ${Array.isArray(v) ? 'an array' : typeof v}`,
      'logit_bias',
    );
  const out: [number, number][] = [];
  for (const [key, bias] of Object.entries(v)) {
    const id = /^\d{1,15}$/.test(key) ? Number(key) : Number.NaN;
    if (!Number.isSafeInteger(id))
      bad(
        `logit_bias keys must be token ids (integers ≥ 0), got ${JSON.stringify(key.slice(0, 40))}`,
        'logit_bias',
      );
    if (typeof bias !== 'number') bad(`logit_bias[${id}] must be a number, got ${show(bias)}`, 'logit_bias');
    between(`logit_bias[${id}]`, bias as number, -MAX_LOGIT_BIAS, MAX_LOGIT_BIAS, 'logit_bias');
    out.push([id, bias as number]);
  }
  return out.sort((a, b) => a[0] - b[0]);
}

function stopTokenIds(v: unknown): number[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v))
    return bad(`stop_token_ids must be an array of token ids, got ${typeof v}`, 'stop_token_ids');
  if (v.length > MAX_STOP_TOKEN_IDS)
    bad(`stop_token_ids must hold at most ${MAX_STOP_TOKEN_IDS} ids, got ${v.length}`, 'stop_token_ids');
  for (const id of v)
    if (!(typeof id === 'number' && Number.isSafeInteger(id) && id >= 0))
      bad(`stop_token_ids must hold token ids (integers ≥ 0), got ${show(id)}`, 'stop_token_ids');
  return [...new Set(v as number[])];
}

/**
 * A stream's parameters for the rest of its generation once `generated` tokens are out (a stream
 * that moves to another model goes on with its prompt plus those tokens).
 */
export function remainingParams(params: SamplingParams, generated: number): SamplingParams {
  if (generated === 0) return params;
  return {
    ...params,
    max_tokens: params.max_tokens - generated,
    min_tokens: Math.max(0, params.min_tokens - generated),
  };
}

/**
 * Checks the sampling fields of a request body and fills defaults. Other keys (model, prompt, …)
 * are ignored, and null counts as absent since OpenAI clients send explicit nulls. Every error
 * is TF_ERR_BAD_ARGS and names the field, the allowed range and the value received.
 */
export function validateSamplingParams(raw: unknown): SamplingParams {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    return bad('sampling parameters must be an object');
  }
  const r = raw as Record<string, unknown>;

  const temperature = between('temperature', num(r, 'temperature', 1), 0, 2);
  const top_p = between('top_p', num(r, 'top_p', 1), 0, 1);
  const min_p = between('min_p', num(r, 'min_p', 0), 0, 1);
  const repetition_penalty = num(r, 'repetition_penalty', 1);
  if (!(repetition_penalty > 0 && Number.isFinite(repetition_penalty))) {
    bad(
      `repetition_penalty must be a finite number > 0 (1 = off), got ${repetition_penalty}`,
      'repetition_penalty',
    );
  }
  const presence_penalty = between('presence_penalty', num(r, 'presence_penalty', 0), -2, 2);
  const frequency_penalty = between('frequency_penalty', num(r, 'frequency_penalty', 0), -2, 2);

  let top_k = int(r, 'top_k') ?? 0;
  if (top_k === -1) top_k = 0;
  if (top_k < 0) bad(`top_k must be ≥ 0 (0 or -1 = off), got ${top_k}`, 'top_k');

  const max_tokens = int(r, 'max_tokens') ?? DEFAULT_MAX_TOKENS;
  if (max_tokens < 1) bad(`max_tokens must be ≥ 1, got ${max_tokens}`, 'max_tokens');

  const ignore_eos = r.ignore_eos ?? false;
  if (typeof ignore_eos !== 'boolean')
    bad(`ignore_eos must be a boolean, got ${show(ignore_eos)}`, 'ignore_eos');

  const min_tokens = int(r, 'min_tokens') ?? 0;
  if (min_tokens < 0) bad(`min_tokens must be ≥ 0, got ${min_tokens}`, 'min_tokens');
  if (min_tokens > max_tokens)
    bad(`min_tokens (${min_tokens}) must not exceed max_tokens (${max_tokens})`, 'min_tokens');

  const out: SamplingParams = {
    temperature,
    top_k,
    top_p,
    min_p,
    repetition_penalty,
    presence_penalty,
    frequency_penalty,
    max_tokens,
    stop: stops(r.stop),
    ignore_eos: ignore_eos as boolean,
    logit_bias: logitBias(r.logit_bias),
    min_tokens,
    stop_token_ids: stopTokenIds(r.stop_token_ids),
  };
  const seed = int(r, 'seed');
  if (seed !== undefined) out.seed = seed;
  const logprobs = int(r, 'logprobs');
  if (logprobs !== undefined) out.logprobs = between('logprobs', logprobs, 0, MAX_LOGPROBS);
  return out;
}

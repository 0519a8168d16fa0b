import type { EngineCapacity } from '../engine/engine.ts';
import { MAX_LOGPROBS, type SamplingParams, validateSamplingParams } from '../engine/sampling/params.ts';
import type { Tokenizer } from '../tokenizer/tokenizer.ts';
import { ApiError, quoted } from './errors.ts';

/**
 * The request fields that POST /v1/completions, POST /v1/chat/completions and the WebSocket's
 * `completion.create` share: their JSON schema (types; fastify answers a mismatch with 400), one
 * parser that checks their values against the served model and refuses the fields OpenAI
 * clients send that this server knows but does not implement, and the checks of `model` and of
 * the number of choices. Unknown fields are ignored, as OpenAI clients send fields that no
 * server uses.
 */

type Maybe<T> = T | null | undefined;
const optional = (type: string) => ({ type: [type, 'null'] }) as const;

export const samplingFieldsSchema = {
  model: optional('string'),
  max_tokens: { type: ['integer', 'null'], minimum: 1 },
  temperature: optional('number'),
  top_p: optional('number'),
  top_k: optional('integer'),
  min_p: optional('number'),
  presence_penalty: optional('number'),
  frequency_penalty: optional('number'),
  repetition_penalty: optional('number'),
  stop: { anyOf: [{ type: 'string' }, { type: 'array', items: { type: 'string' } }, { type: 'null' }] },
  seed: optional('integer'),
  n: { type: ['integer', 'null'], minimum: 1 },
  stream: optional('boolean'),
  stream_options: {
    type: ['object', 'null'],
    properties: { include_usage: optional('boolean') },
  },
  user: optional('string'),
  ignore_eos: optional('boolean'),
  logit_bias: { type: ['object', 'null'], additionalProperties: { type: 'number' } },
  min_tokens: { type: ['integer', 'null'], minimum: 0 },
  stop_token_ids: { type: ['array', 'null'], items: { type: 'integer', minimum: 0 } },
  response_format: optional('object'),
  tools: optional('array'),
  tool_choice: { type: ['string', 'object', 'null'] },
  functions: optional('array'),
} as const;

/** The shared fields as the routes receive them (after the schema). */
export interface SamplingFieldsBody {
  model?: Maybe<string>;
  max_tokens?: Maybe<number>;
  temperature?: Maybe<number>;
  top_p?: Maybe<number>;
  top_k?: Maybe<number>;
  min_p?: Maybe<number>;
  presence_penalty?: Maybe<number>;
  frequency_penalty?: Maybe<number>;
  repetition_penalty?: Maybe<number>;
  stop?: Maybe<string | string[]>;
  seed?: Maybe<number>;
  n?: Maybe<number>;
  stream?: Maybe<boolean>;
  stream_options?: Maybe<{ include_usage?: Maybe<boolean> }>;
  user?: Maybe<string>;
  ignore_eos?: Maybe<boolean>;
  logit_bias?: Maybe<Record<string, number>>;
  min_tokens?: Maybe<number>;
  stop_token_ids?: Maybe<number[]>;
  response_format?: Maybe<Record<string, unknown>>;
  tools?: Maybe<unknown[]>;
  tool_choice?: Maybe<string | Record<string, unknown>>;
  functions?: Maybe<unknown[]>;
}

const bad = (message: string, param?: string): never => {
  throw new ApiError('TF_ERR_BAD_ARGS', message, param);
};

/** Refuses a token id the tokenizer does not know; `what` names where it came from, `param` its field. */
export function checkTokenId(tokenizer: Tokenizer, id: number, what: string, param?: string): void {
  if (!Number.isSafeInteger(id) || id < 0 || id >= tokenizer.vocabSize || tokenizer.idToToken(id) === null)
    bad(`${what} ${id} is not in the vocabulary (ids 0 to ${tokenizer.vocabSize - 1})`, param);
}

/**
 * Checks that `prompts × n` choices are allowed: at most `maxChoices` (ServerLimits), and no
 * more than the engine can ever hold at once. Choices are admitted all or nothing, so a request
 * beyond its slots plus its queue would be refused with 429 forever; it is a 400 instead.
 */
export function checkChoices(prompts: number, n: number, capacity: EngineCapacity, maxChoices: number): void {
  if (!(Number.isSafeInteger(n) && n >= 1)) bad(`n must be an integer ≥ 1, got ${n}`, 'n');
  const choices = prompts * n;
  if (choices > maxChoices)
    bad(`${prompts} prompt(s) × n=${n} asks for ${choices} choices; the limit is ${maxChoices}`, 'n');
  const { maxSequences, maxQueue } = capacity;
  if (choices > maxSequences + maxQueue)
    bad(
      `${prompts} prompt(s) × n=${n} asks for ${choices} sequences at once; this server decodes ${maxSequences} (--max-sequences) and queues ${maxQueue} more (--max-queue), so the request could never be admitted`,
      'n',
    );
}

/**
 * Fields this server knows and does not implement: a 400 naming the field, rather than an
 * answer that silently ignores what the client asked for. Their no-op forms pass.
 */
function refuseUnsupported(body: SamplingFieldsBody): void {
  const format = body.response_format;
  if (format != null && !(format.type === 'text' && Object.keys(format).length === 1))
    bad(
      `response_format ${format.type === undefined ? 'without a type' : `of type ${quoted(format.type)}`} is not supported; only {"type": "text"} (the default) is`,
      'response_format',
    );
  if (body.tools && body.tools.length > 0)
    bad('tools are not supported: this server does not call tools', 'tools');
  if (body.functions && body.functions.length > 0)
    bad('functions are not supported: this server does not call functions', 'functions');
  const choice = body.tool_choice;
  if (choice != null && choice !== 'none' && choice !== 'auto')
    bad(
      `tool_choice ${quoted(choice)} is not supported: this server does not call tools ("none" and "auto" are accepted)`,
      'tool_choice',
    );
}

/**
 * Checks the shared fields of a request against the served model and returns the engine's
 * sampling parameters. `logprobs` is the number of alternatives per token the route asks for
 * (the completions route's integer `logprobs`; see `chatLogprobs` for the chat form).
 */
export function parseSamplingFields(
  body: SamplingFieldsBody,
  tokenizer: Tokenizer,
  opts: { logprobs?: Maybe<number> } = {},
): SamplingParams {
  refuseUnsupported(body);
  const params = validateSamplingParams({ ...body, logprobs: opts.logprobs ?? null });
  for (const [id] of params.logit_bias) checkTokenId(tokenizer, id, 'logit_bias token id', 'logit_bias');
  for (const id of params.stop_token_ids)
    checkTokenId(tokenizer, id, 'stop_token_ids entry', 'stop_token_ids');
  return params;
}

/**
 * The chat form of logprobs (`logprobs: true`, `top_logprobs: 0..20`) as the number of
 * alternatives per token, or undefined when none are asked for.
 */
export function chatLogprobs(body: {
  logprobs?: Maybe<boolean>;
  top_logprobs?: Maybe<number>;
}): number | undefined {
  const top = body.top_logprobs;
  if (top != null) {
    if (!(Number.isSafeInteger(top) && top >= 0 && top <= MAX_LOGPROBS))
      bad(
        `top_logprobs must be an integer between 0 and ${MAX_LOGPROBS}, got ${quoted(top)}`,
        'top_logprobs',
      );
    if (body.logprobs !== true) bad('top_logprobs needs logprobs: true', 'top_logprobs');
  }
  return body.logprobs === true ? (top ?? 0) : undefined;
}

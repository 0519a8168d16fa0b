import type { SamplingParams } from '../engine/sampling/params.ts';
import type { ServingEngine } from './context.ts';
import { ApiError } from './errors.ts';
import {
  checkChoices,
  checkTokenId,
  parseSamplingFields,
  type SamplingFieldsBody,
} from './sampling-fields.ts';

/**
 * A completion request as the HTTP route and the WebSocket receive it (after the JSON schema of
 * routes/completions.ts), and its checked form. Checking happens here, once, for both adapters:
 * the model name, the prompt forms, token ids, context length and (through sampling-fields.ts,
 * which the chat route shares) the sampling parameters.
 */

type Maybe<T> = T | null | undefined;

export interface CompletionBody extends SamplingFieldsBody {
  prompt: string | string[] | number[] | number[][];
  logprobs?: Maybe<number>;
  echo?: Maybe<boolean>;
  best_of?: Maybe<number>;
  suffix?: Maybe<string>;
}

export interface PromptInput {
  ids: number[];
  /** The prompt as text (decoded when it came as token ids), for `echo`. */
  text: string;
}

export interface CompletionRequest {
  prompts: PromptInput[];
  /** Choices per prompt; choice index = prompt index · n + i. */
  n: number;
  params: SamplingParams;
  echo: boolean;
  /** Echo with logprobs: the prompt tokens' logprobs come first (one full-sequence pass). */
  scorePrompt: boolean;
  /** False for max_tokens 0: the prompt is only echoed (and scored), nothing is generated. */
  generate: boolean;
  stream: boolean;
  includeUsage: boolean;
}

export interface ParseContext {
  maxChoices: number;
}

const bad = (message: string, param?: string): never => {
  throw new ApiError('TF_ERR_BAD_ARGS', message, param);
};

/**
 * OpenAI's answer to a prompt that does not fit (its code `context_length_exceeded`, its
 * wording, so clients that look for "maximum context length" recognise it).
 */
export function contextLengthExceeded(
  context: number,
  promptTokens: string,
  which = 'your prompt',
  generate = true,
): ApiError {
  // Scoring only (max_tokens 0 with echo) may fill the whole context; generating needs one more.
  const room = generate ? ', which leaves no room for a completion (at least one token)' : '';
  return new ApiError(
    'TF_ERR_CONTEXT_LENGTH',
    `This model's maximum context length is ${context} tokens. However, ${which} has ${promptTokens} tokens${room}. Please reduce the length of the prompt; prompts are not truncated.`,
    'prompt',
  );
}

function isTokenIds(v: unknown): v is number[] {
  return Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'number');
}

function promptInputs(
  engine: ServingEngine,
  prompt: CompletionBody['prompt'],
  generate: boolean,
): PromptInput[] {
  const tok = engine.tokenizer;
  const context = engine.manifest.model.max_seq_len;
  const limit = generate ? context - 1 : context;
  const fromText = (text: string): PromptInput => {
    // Refused before tokenizing: a megabyte prompt would hold the event loop for seconds.
    const atLeast = tok.minTokens(text);
    if (atLeast > limit)
      throw contextLengthExceeded(
        context,
        `at least ${atLeast}`,
        `a prompt (${Buffer.byteLength(text)} bytes)`,
        generate,
      );
    const ids = tok.encode(text);
    if (ids.length > 0) return { ids, text };
    // OpenAI: an empty prompt generates as if from the start of a new document.
    const eos = engine.eosTokenId;
    if (eos === null)
      return bad('the prompt is empty and the model has no end-of-text token to start from', 'prompt');
    return { ids: [eos], text };
  };
  const fromIds = (ids: number[]): PromptInput => {
    for (const id of ids) checkTokenId(tok, id, 'prompt token id', 'prompt');
    return { ids, text: tok.decode(ids) };
  };
  if (typeof prompt === 'string') return [fromText(prompt)];
  if (isTokenIds(prompt)) return [fromIds(prompt)];
  if (!Array.isArray(prompt) || prompt.length === 0)
    return bad(
      'prompt must be a string, an array of strings, an array of token ids or an array of those',
      'prompt',
    );
  return (prompt as unknown[]).map((p) => {
    if (typeof p === 'string') return fromText(p);
    if (isTokenIds(p)) return fromIds(p);
    return bad('prompt arrays must hold only strings or only token-id arrays', 'prompt');
  });
}

/**
 * Checks a completion body against the model that serves it (the `model` field was resolved by
 * ServerContext.acceptGeneration); every failure is a 4xx ApiError.
 */
export function parseCompletionRequest(
  body: CompletionBody,
  engine: ServingEngine,
  ctx: ParseContext,
): CompletionRequest {
  if (body.suffix) bad('suffix is not supported (an empty one is accepted)', 'suffix');
  const n = body.n ?? 1;
  if (body.best_of != null && body.best_of !== n)
    bad('best_of is not supported (leave it unset or equal to n)', 'best_of');

  const echo = body.echo ?? false;
  // max_tokens 0 (OpenAI's legacy scoring form): echo the prompt, generate nothing.
  const generate = body.max_tokens !== 0;
  if (!generate && !echo)
    bad('max_tokens 0 generates nothing; it is only allowed with echo (prompt scoring)', 'max_tokens');
  const params = parseSamplingFields(generate ? body : { ...body, max_tokens: 1 }, engine.tokenizer, {
    logprobs: body.logprobs,
  });

  const prompts = promptInputs(engine, body.prompt, generate);
  checkChoices(prompts.length, n, engine.capacity, ctx.maxChoices);
  const context = engine.manifest.model.max_seq_len;
  for (const [i, p] of prompts.entries()) {
    if (p.ids.length >= context + (generate ? 0 : 1))
      throw contextLengthExceeded(
        context,
        String(p.ids.length),
        prompts.length > 1 ? `prompt ${i}` : 'your prompt',
        generate,
      );
  }
  return {
    prompts,
    n,
    params,
    echo,
    scorePrompt: echo && params.logprobs !== undefined,
    generate,
    stream: body.stream ?? false,
    includeUsage: body.stream_options?.include_usage ?? false,
  };
}

import type { FinishReason } from '../engine/protocol.ts';
import type { Tokenizer } from '../tokenizer/tokenizer.ts';
import { type ReportedToken, tokenString } from './logprobs.ts';
import type { CompletionMeta, Usage } from './openai.ts';

/**
 * The OpenAI Chat Completions wire shapes, built by pure functions shared by the JSON response,
 * the SSE stream and the WebSocket adapter (as openai.ts does for completions).
 */

export interface ChatTopLogprob {
  token: string;
  logprob: number;
  /** The token's UTF-8 bytes (a token can be part of a character). */
  bytes: number[];
}

export interface ChatTokenLogprob extends ChatTopLogprob {
  top_logprobs: ChatTopLogprob[];
}

export interface ChatLogprobs {
  content: ChatTokenLogprob[];
}

export interface ChatChoice {
  index: number;
  message: { role: 'assistant'; content: string };
  logprobs: ChatLogprobs | null;
  finish_reason: FinishReason | null;
}

export interface ChatCompletion extends CompletionMeta {
  object: 'chat.completion';
  choices: ChatChoice[];
  usage: Usage;
}

export interface ChatDelta {
  role?: 'assistant';
  content?: string;
}

export interface ChatChunkChoice {
  index: number;
  delta: ChatDelta;
  logprobs: ChatLogprobs | null;
  finish_reason: FinishReason | null;
}

export interface ChatChunk extends CompletionMeta {
  object: 'chat.completion.chunk';
  choices: ChatChunkChoice[];
  usage?: Usage | null;
}

function tokenBytes(tokenizer: Tokenizer, id: number): number[] {
  const piece = tokenizer.isByteLevel ? tokenizer.piece(id) : tokenizer.decode([id]);
  return Array.from(typeof piece === 'string' ? Buffer.from(piece, 'utf8') : piece);
}

/** Chat `logprobs.content` entries for generated tokens (their top alternatives in order). */
export function chatTokenLogprobs(tokenizer: Tokenizer, tokens: readonly ReportedToken[]): ChatLogprobs {
  const entry = (id: number, logprob: number): ChatTopLogprob => ({
    token: tokenString(tokenizer, id),
    logprob,
    bytes: tokenBytes(tokenizer, id),
  });
  return {
    content: tokens.map((t) => ({
      ...entry(t.token, t.logprob ?? 0),
      top_logprobs: (t.top ?? []).map((a) => entry(a.token, a.logprob)),
    })),
  };
}

function header<O extends string>(meta: CompletionMeta, object: O) {
  return {
    id: meta.id,
    object,
    created: meta.created,
    model: meta.model,
    system_fingerprint: meta.system_fingerprint,
  };
}

export function chatCompletion(meta: CompletionMeta, choices: ChatChoice[], usage: Usage): ChatCompletion {
  return { ...header(meta, 'chat.completion'), choices, usage };
}

/**
 * One streamed chunk. With `stream_options.include_usage` every chunk has `usage: null` and a
 * last chunk with no choices carries the totals, as OpenAI does; otherwise there is no `usage`.
 */
export function chatChunk(meta: CompletionMeta, choices: ChatChunkChoice[], usage?: Usage | null): ChatChunk {
  const c = { ...header(meta, 'chat.completion.chunk'), choices };
  return usage === undefined ? c : { ...c, usage };
}

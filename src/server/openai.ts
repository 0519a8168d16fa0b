import type { FinishReason } from '../engine/protocol.ts';
import type { ModelRef } from '../engine/text-stream.ts';

/**
 * The OpenAI Completions wire shapes, built by pure functions shared by the JSON response, the
 * SSE stream and the WebSocket adapter.
 */

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** OpenAI completions `logprobs`: parallel arrays, one entry per token. */
export interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: (number | null)[];
  top_logprobs: (Record<string, number> | null)[];
  text_offset: number[];
}

export interface CompletionChoice {
  index: number;
  text: string;
  logprobs: CompletionLogprobs | null;
  finish_reason: FinishReason | null;
}

/** What every response and chunk of one request repeats. */
export interface CompletionMeta {
  id: string;
  created: number;
  model: string;
  /** Carries the model version, so clients can tell which weights answered. */
  system_fingerprint: string;
}

export function usage(prompt: number, completion: number): Usage {
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

export interface CompletionResponse extends CompletionMeta {
  object: 'text_completion';
  choices: CompletionChoice[];
  usage: Usage;
}

/** A streamed chunk: the response shape with partial choices. */
export interface CompletionChunk extends CompletionMeta {
  object: 'text_completion';
  choices: CompletionChoice[];
  usage?: Usage | null;
}

export function completionResponse(
  meta: CompletionMeta,
  choices: CompletionChoice[],
  u: Usage,
): CompletionResponse {
  return { ...header(meta), choices, usage: u };
}

/**
 * One streamed chunk. With `stream_options.include_usage` every chunk has `usage: null` and a
 * last chunk with no choices carries the totals, as OpenAI does; otherwise there is no `usage`.
 */
export function completionChunk(
  meta: CompletionMeta,
  choices: CompletionChoice[],
  u?: Usage | null,
): CompletionChunk {
  return u === undefined ? { ...header(meta), choices } : { ...header(meta), choices, usage: u };
}

function header(meta: CompletionMeta): CompletionMeta & { object: 'text_completion' } {
  return {
    id: meta.id,
    object: 'text_completion',
    created: meta.created,
    model: meta.model,
    system_fingerprint: meta.system_fingerprint,
  };
}

/** Concatenates per-chunk logprobs into the whole-completion object. */
export function mergeLogprobs(parts: readonly CompletionLogprobs[]): CompletionLogprobs {
  const out: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  for (const p of parts) {
    out.tokens.push(...p.tokens);
    out.token_logprobs.push(...p.token_logprobs);
    out.top_logprobs.push(...p.top_logprobs);
    out.text_offset.push(...p.text_offset);
  }
  return out;
}

/** The meta of a chunk: `system_fingerprint` names the model version that produced it (`model` stays the name the request used). */
export function producedBy(meta: CompletionMeta, e: { model?: ModelRef }): CompletionMeta {
  return e.model ? { ...meta, system_fingerprint: e.model.version } : meta;
}

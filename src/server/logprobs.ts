import type { GeneratedToken } from '../engine/protocol.ts';
import { StreamingDetokenizer } from '../tokenizer/stream-decoder.ts';
import type { Tokenizer } from '../tokenizer/tokenizer.ts';
import type { CompletionLogprobs } from './openai.ts';

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * The display string of one token, as OpenAI shows it: its text, or `bytes:\xNN…` for a token
 * that is only part of a UTF-8 character (its bytes alone are not text).
 */
export function tokenString(tokenizer: Tokenizer, id: number): string {
  if (!tokenizer.isByteLevel) return tokenizer.decode([id]);
  const piece = tokenizer.piece(id);
  if (typeof piece === 'string') return piece;
  try {
    return strictUtf8.decode(piece);
  } catch {
    return `bytes:${Array.from(piece, (b) => `\\x${b.toString(16).padStart(2, '0')}`).join('')}`;
  }
}

/** A token to report: generated, or a prompt token (the first has no logprob: nothing precedes it). */
export type ReportedToken = Omit<GeneratedToken, 'logprob'> & { logprob: number | null };

/** A scored prompt as reported tokens: the first token with a null logprob, then the scored ones. */
export function promptTokens(ids: readonly number[], scored: readonly GeneratedToken[]): ReportedToken[] {
  return [{ token: ids[0]!, logprob: null }, ...scored];
}

/**
 * Builds OpenAI completions `logprobs` chunk by chunk for one choice. `text_offset` is the
 * character offset of each token in the choice's text (after the echoed prompt, if any), found
 * by detokenizing the same ids as the engine does; a token that ends inside a UTF-8 character
 * has the offset where that character will start.
 */
export class LogprobsBuilder {
  private readonly detok: StreamingDetokenizer;
  private offset: number;

  constructor(
    private readonly tokenizer: Tokenizer,
    startOffset: number,
  ) {
    this.detok = new StreamingDetokenizer(tokenizer);
    this.offset = startOffset;
  }

  add(tokens: readonly ReportedToken[]): CompletionLogprobs {
    const out: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
    for (const t of tokens) {
      out.tokens.push(tokenString(this.tokenizer, t.token));
      out.token_logprobs.push(t.logprob);
      out.text_offset.push(this.offset);
      this.offset += this.detok.push(t.token).length;
      if (t.logprob === null) {
        out.top_logprobs.push(null);
        continue;
      }
      // The chosen token is always listed, as vLLM does; then the top alternatives.
      const top = new Map<string, number>();
      const chosen = { token: t.token, logprob: t.logprob };
      for (const alt of [chosen, ...(t.top ?? [])]) {
        const key = tokenString(this.tokenizer, alt.token);
        // Two ids can display alike (e.g. two partial bytes); keep the likelier one.
        if (!(top.get(key)! >= alt.logprob)) top.set(key, alt.logprob);
      }
      // fromEntries makes own properties, so a token spelled "__proto__" is still a plain key.
      out.top_logprobs.push(Object.fromEntries(top));
    }
    return out;
  }
}

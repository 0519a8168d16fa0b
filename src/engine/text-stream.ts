import { StreamingDetokenizer } from '../tokenizer/stream-decoder.ts';
import type { Tokenizer } from '../tokenizer/tokenizer.ts';
import type { FinishReason, GeneratedToken } from './protocol.ts';
import type { SamplingParams } from './sampling/params.ts';
import { StopMatcher } from './sampling/stop.ts';

/**
 * Token updates → text events: the streamer and stopping-criteria stages of generation. Text is
 * emitted only in whole UTF-8 characters, stop strings are matched on text across token
 * boundaries (the matched string is not emitted) once min_tokens tokens are out, and the token
 * that ends a sequence (end-of-text, a stop_token_ids entry) is not text.
 * Leaving the loop early (a stop string) returns the source, which cancels the sequence.
 */

/** Which model produced a stream's tokens (a stream can move between models during a swap). */
export interface ModelRef {
  name: string;
  version: string;
}

export interface TokenUpdate {
  tokens: GeneratedToken[];
  /** The first update of a stream that was not refused: it waits in the queue now (no tokens). */
  queued?: true;
  finish?: FinishReason;
  model?: ModelRef;
}

export type GenerationEvent =
  /** `queued`: the empty first delta of a request the engine took (it waits for a slot now). */
  | { type: 'delta'; text: string; tokens: GeneratedToken[]; model?: ModelRef; queued?: true }
  | {
      type: 'done';
      finishReason: FinishReason;
      promptTokens: number;
      completionTokens: number;
      model?: ModelRef;
    };

export async function* textStream(
  source: AsyncIterable<TokenUpdate>,
  opts: { tokenizer: Tokenizer; eosTokenId: number | null; params: SamplingParams; promptTokens: number },
): AsyncGenerator<GenerationEvent> {
  const { params } = opts;
  const detok = new StreamingDetokenizer(opts.tokenizer);
  const stop = new StopMatcher(params.stop);
  const stopTokens = new Set(params.stop_token_ids);
  if (opts.eosTokenId !== null && !params.ignore_eos) stopTokens.add(opts.eosTokenId);
  let completion = 0;
  for await (const u of source) {
    const by = u.model ? { model: u.model } : {};
    if (u.queued) {
      yield { type: 'delta', text: '', tokens: [], queued: true, ...by };
      continue;
    }
    // Token by token: an update can carry several (speculative decoding); a stop string
    // completed by one of them ends the text and the count there, as without a draft, and stop
    // strings count only from the min_tokens-th token on.
    let emit = '';
    let stopped = false;
    const feed = (piece: string, tokensOut: number) => {
      const r = stop.push(piece, tokensOut >= params.min_tokens);
      emit += r.emit;
      stopped = r.stopped;
      return stopped;
    };
    const before = completion;
    let used = 0;
    for (const [i, t] of u.tokens.entries()) {
      used++;
      const last = i === u.tokens.length - 1;
      // The token that ended the sequence (end-of-text, a stop token id) is not text.
      const piece = u.finish === 'stop' && last && stopTokens.has(t.token) ? '' : detok.push(t.token);
      if (feed(piece, before + i + 1)) break;
    }
    completion += used;
    const tokens = used === u.tokens.length ? u.tokens : u.tokens.slice(0, used);
    if (!stopped && u.finish) feed(detok.flush(), completion);
    if (stopped) {
      yield { type: 'delta', text: emit, tokens, ...by };
      yield {
        type: 'done',
        finishReason: 'stop',
        promptTokens: opts.promptTokens,
        completionTokens: completion,
        ...by,
      };
      return; // the for-await's return() cancels the sequence
    }
    if (u.finish) {
      yield { type: 'delta', text: emit + stop.flush(), tokens, ...by };
      yield {
        type: 'done',
        finishReason: u.finish,
        promptTokens: opts.promptTokens,
        completionTokens: completion,
        ...by,
      };
      return;
    }
    if (emit || u.tokens.length) yield { type: 'delta', text: emit, tokens, ...by };
  }
}

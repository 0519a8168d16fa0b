import { StreamingDetokenizer } from '../tokenizer/stream-decoder.ts';
import type { Tokenizer } from '../tokenizer/tokenizer.ts';
import type { FinishReason, GeneratedToken } from './protocol.ts';
import type { SamplingParams } from './sampling/params.ts';
import { StopMatcher } from './sampling/stop.ts';

/**
 * Token updates → text events: the streamer and stopping-criteria stages of generation. Text is
 * emitted only in whole UTF-8 characters, stop strings are matched on text across token
 * boundaries (the matched string is not emitted), and the end-of-text token is not text.
 * Leaving the loop early (a stop string) returns the source, which cancels the sequence.
 */

/** Which model produced a stream's tokens (a stream can move between models during a swap). */
export interface ModelRef {
  name: string;
  version: string;
}

export interface TokenUpdate {
  tokens: GeneratedToken[];
  finish?: FinishReason;
  model?: ModelRef;
}

export type GenerationEvent =
  | { type: 'delta'; text: string; tokens: GeneratedToken[]; model?: ModelRef }
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
  const detok = new StreamingDetokenizer(opts.tokenizer);
  const stop = new StopMatcher(opts.params.stop);
  let completion = 0;
  for await (const u of source) {
    const by = u.model ? { model: u.model } : {};
    let text = '';
    for (const t of u.tokens) {
      completion++;
      const endOfText = u.finish === 'stop' && t.token === opts.eosTokenId && !opts.params.ignore_eos;
      if (!endOfText) text += detok.push(t.token);
    }
    if (u.finish) text += detok.flush();
    const r = stop.push(text);
    if (r.stopped) {
      yield { type: 'delta', text: r.emit, tokens: u.tokens, ...by };
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
      yield { type: 'delta', text: r.emit + stop.flush(), tokens: u.tokens, ...by };
      yield {
        type: 'done',
        finishReason: u.finish,
        promptTokens: opts.promptTokens,
        completionTokens: completion,
        ...by,
      };
      return;
    }
    if (r.emit || u.tokens.length) yield { type: 'delta', text: r.emit, tokens: u.tokens, ...by };
  }
}

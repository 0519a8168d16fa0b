/**
 * Turns generated token ids into text deltas as they arrive. A multi-byte UTF-8 character split
 * across tokens is held back until complete, and all deltas plus `flush()` concatenate to exactly
 * `tokenizer.decode(allIds)`.
 */
import { TextDecoder } from 'node:util';
import type { Tokenizer } from './tokenizer.ts';

export class StreamingDetokenizer {
  private readonly tokenizer: Tokenizer;
  /** Byte-level path: a streaming UTF-8 decoder holding at most one incomplete character. */
  private readonly utf8: TextDecoder | null;
  // Other tokenizers (the Rust DecodeStream scheme): re-decode a short window of ids and emit what
  // extends the window's previous text, once it no longer ends in U+FFFD. Doubt: a decoder whose
  // text for a window does not extend its text for the window's front cannot stream exactly; such
  // text is held back (Rust raises an error there).
  private window: number[] = [];
  private windowText = '';
  /** Ids at the front of `window` that only give the decoder context; their text is already out. */
  private contextIds = 0;

  constructor(tokenizer: Tokenizer) {
    this.tokenizer = tokenizer;
    this.utf8 = tokenizer.isByteLevel ? new TextDecoder('utf-8', { ignoreBOM: true }) : null;
  }

  /** Adds one id; returns the text it completes (possibly ''). */
  push(id: number): string {
    if (this.utf8 !== null) {
      const piece = this.tokenizer.piece(id);
      // An added token ends the byte run, as in `decode`: a dangling partial character becomes U+FFFD.
      return typeof piece === 'string'
        ? this.utf8.decode() + piece
        : this.utf8.decode(piece, { stream: true });
    }
    const text = this.tokenizer.decode([...this.window, id]); // throws on a bad id before any state changes
    this.window.push(id);
    if (
      text.length <= this.windowText.length ||
      text.endsWith('\uFFFD') ||
      !text.startsWith(this.windowText)
    ) {
      return '';
    }
    const delta = text.slice(this.windowText.length);
    // Keep the ids of this delta as context for the next one; drop the older ones.
    this.window = this.window.slice(this.contextIds);
    this.contextIds = this.window.length;
    this.windowText = this.tokenizer.decode(this.window);
    return delta;
  }

  /** Returns whatever is held back (U+FFFD for an incomplete trailing character) and starts afresh. */
  flush(): string {
    if (this.utf8 !== null) return this.utf8.decode();
    const text = this.tokenizer.decode(this.window);
    const delta = text.startsWith(this.windowText) ? text.slice(this.windowText.length) : '';
    this.window = [];
    this.windowText = '';
    this.contextIds = 0;
    return delta;
  }
}

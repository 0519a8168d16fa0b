/**
 * GPT-2's byte ↔ symbol table, shared by the BPE trainer and the streaming detokenizer so both use
 * one mapping. Byte-level BPE works on UTF-8 bytes, each shown as one printable code point so that
 * vocabularies and merges stay JSON strings without whitespace or control characters.
 */

/**
 * The 256 byte values in GPT-2's `bytes_to_unicode` order: printable Latin-1 bytes first (they map
 * to themselves), then the rest (mapped to U+0100 upwards). Trained vocabularies give byte
 * `BYTE_ORDER[i]` id i, so their first 256 ids match GPT-2's.
 */
export const BYTE_ORDER: readonly number[] = (() => {
  const order: number[] = [];
  const printable = (b: number) =>
    (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  for (let b = 0; b < 256; b++) if (printable(b)) order.push(b);
  for (let b = 0; b < 256; b++) if (!printable(b)) order.push(b);
  return order;
})();

const PRINTABLE_BYTES = 188;

/** BYTE_TO_SYMBOL[b] is the one-character symbol for byte b. */
export const BYTE_TO_SYMBOL: readonly string[] = (() => {
  const table = new Array<string>(256);
  BYTE_ORDER.forEach((b, i) => {
    // The 188 printable bytes stand for themselves; the other 68 take U+0100.. in byte order.
    table[b] = String.fromCharCode(i < PRINTABLE_BYTES ? b : 0x100 + i - PRINTABLE_BYTES);
  });
  return table;
})();

/** Symbol char code → byte, -1 for code points that are not byte symbols (all symbols are < 0x144). */
const SYMBOL_TO_BYTE: Int16Array = (() => {
  const table = new Int16Array(0x144).fill(-1);
  for (let b = 0; b < 256; b++) table[BYTE_TO_SYMBOL[b]!.charCodeAt(0)] = b;
  return table;
})();

/** The byte-level symbol string for UTF-8 `bytes` (one symbol per byte). */
export function bytesToSymbols(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += BYTE_TO_SYMBOL[b]!;
  return s;
}

/** The bytes behind a byte-level token string, or null if it holds a character that is no byte symbol. */
export function symbolsToBytes(token: string): Uint8Array | null {
  const out = new Uint8Array(token.length);
  for (let i = 0; i < token.length; i++) {
    const c = token.charCodeAt(i);
    const b = c < SYMBOL_TO_BYTE.length ? SYMBOL_TO_BYTE[c]! : -1;
    if (b < 0) return null;
    out[i] = b;
  }
  return out;
}

/**
 * GPT-2's pre-tokenizer pattern, exactly as @huggingface/tokenizers' ByteLevel pre-tokenizer
 * compiles it, so training splits text the way encoding later will. A fresh RegExp per call: a
 * shared global regex would carry `lastIndex` between callers.
 */
export function gpt2SplitPattern(): RegExp {
  return /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;
}

/**
 * A GPT-2 style byte-level BPE trainer. Hand-written because no JS library trains BPE:
 * @huggingface/tokenizers only loads a `tokenizer.json`. It follows the Rust `tokenizers`
 * BpeTrainer: count unique pre-tokenized words once, keep pair counts with a pair → words index,
 * update both incrementally after each merge, and take the best pair from a lazy max-heap.
 */
import { writeFileAtomic } from '../util/atomic.ts';
import { fail, invariant } from '../util/errors.ts';
import { BYTE_ORDER, BYTE_TO_SYMBOL, gpt2SplitPattern } from './byte-level.ts';

export interface AddedTokenJson {
  id: number;
  content: string;
  single_word: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

interface ByteLevelJson {
  type: 'ByteLevel';
  add_prefix_space: boolean;
  trim_offsets: boolean;
  use_regex: boolean;
}

/** The subset of the Hugging Face `tokenizer.json` format this trainer writes. */
export interface TokenizerJson {
  version: '1.0';
  truncation: null;
  padding: null;
  added_tokens: AddedTokenJson[];
  normalizer: null;
  pre_tokenizer: ByteLevelJson;
  post_processor: ByteLevelJson;
  decoder: ByteLevelJson;
  model: {
    type: 'BPE';
    dropout: null;
    unk_token: null;
    continuing_subword_prefix: null;
    end_of_word_suffix: null;
    fuse_unk: false;
    byte_fallback: false;
    vocab: Record<string, number>;
    merges: string[];
  };
}

export interface TrainBpeOptions {
  /** Total vocabulary: 256 byte symbols + merges + special tokens. An upper bound if the corpus runs out of pairs. */
  vocabSize: number;
  /** Added at the end of the vocabulary, never split when encoding. Default `['<|endoftext|>']`. */
  specialTokens?: string[];
  /** Stop merging once the best pair occurs fewer times than this. Default 2: a pair seen once is noise. */
  minFrequency?: number;
  /** Called after each new token with (tokens learned, tokens wanted). */
  onProgress?: (done: number, total: number) => void;
}

/** Ids stay below this, so a pair (a, b) packs exactly into the number a·PAIR_BASE + b. */
const PAIR_BASE = 2 ** 21;

/** Trains a byte-level BPE tokenizer on `texts` (each one a document) and returns its `tokenizer.json`. */
export function trainByteLevelBpe(texts: Iterable<string>, opts: TrainBpeOptions): TokenizerJson {
  const specials = opts.specialTokens ?? ['<|endoftext|>'];
  const minFrequency = opts.minFrequency ?? 2;
  checkOptions(opts.vocabSize, specials, minFrequency);
  const wanted = opts.vocabSize - BYTE_ORDER.length - specials.length;

  const corpus = WordTable.fromCounts(countWords(texts, specials));
  const tokens = BYTE_ORDER.map((b) => BYTE_TO_SYMBOL[b]!);
  const idOf = new Map(tokens.map((t, id) => [t, id]));
  const merges: string[] = [];

  const pairs = corpus.countPairs();
  const heap = new PairHeap();
  for (const [key, p] of pairs) heap.push(p.count, key);

  while (tokens.length - BYTE_ORDER.length < wanted && heap.size > 0) {
    const count = heap.topCount();
    const key = heap.pop();
    const pair = pairs.get(key);
    if (pair === undefined) continue; // merged, or dropped to zero, since this entry was pushed
    if (pair.count !== count) {
      heap.push(pair.count, key); // stale: counts only fall without a fresh push, so retry lower
      continue;
    }
    if (count < minFrequency) break;

    const a = Math.floor(key / PAIR_BASE);
    const b = key - a * PAIR_BASE;
    const text = tokens[a]! + tokens[b]!;
    merges.push(`${tokens[a]} ${tokens[b]}`);
    // Two merge paths can spell the same token ("ab"+"c", "a"+"bc"); it keeps its first id.
    let id = idOf.get(text);
    if (id === undefined) {
      id = tokens.length;
      tokens.push(text);
      idOf.set(text, id);
      opts.onProgress?.(id + 1 - BYTE_ORDER.length, wanted);
    }
    pairs.delete(key);
    for (const key2 of corpus.merge(pair.words, a, b, id, key, pairs)) {
      const p = pairs.get(key2);
      if (p !== undefined) heap.push(p.count, key2);
    }
  }

  for (const s of specials) {
    if (idOf.has(s)) fail('TF_ERR_BAD_ARGS', `special token ${JSON.stringify(s)} is also a learned token`);
  }
  return byteLevelBpeJson(tokens, merges, specials);
}

/**
 * A byte-level BPE `tokenizer.json`: `tokens` take ids 0…n−1 in order, `merges` as given, then
 * each special token as an added token after them.
 */
export function byteLevelBpeJson(
  tokens: readonly string[],
  merges: string[],
  specials: readonly string[],
): TokenizerJson {
  const vocab: Record<string, number> = {};
  tokens.forEach((t, id) => {
    vocab[t] = id;
  });
  const addedTokens = specials.map((content, i) => {
    const id = tokens.length + i;
    vocab[content] = id;
    return {
      id,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    };
  });
  const byteLevel = (): ByteLevelJson => ({
    type: 'ByteLevel',
    add_prefix_space: false,
    trim_offsets: true,
    use_regex: true,
  });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: null,
    pre_tokenizer: byteLevel(),
    post_processor: byteLevel(),
    decoder: byteLevel(),
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      merges,
    },
  };
}

/** The text of a `tokenizer.json` as saveTokenizer writes it (a tokenizer can wait in memory). */
export function tokenizerJsonText(json: TokenizerJson): string {
  return `${JSON.stringify(json, null, 2)}\n`;
}

/** Writes a `tokenizer.json` atomically (readers never see a partial file). */
export function saveTokenizer(path: string, json: TokenizerJson): void {
  writeFileAtomic(path, tokenizerJsonText(json));
}

function checkOptions(vocabSize: number, specials: readonly string[], minFrequency: number): void {
  const min = BYTE_ORDER.length + specials.length;
  if (!Number.isSafeInteger(vocabSize) || vocabSize < min || vocabSize >= PAIR_BASE) {
    fail(
      'TF_ERR_BAD_ARGS',
      `vocabSize must be an integer in [${min}, ${PAIR_BASE}) (256 bytes + ${specials.length} special tokens), got ${vocabSize}`,
    );
  }
  if (!Number.isSafeInteger(minFrequency) || minFrequency < 1) {
    fail('TF_ERR_BAD_ARGS', `minFrequency must be a positive integer, got ${minFrequency}`);
  }
  const byteSymbols = new Set(BYTE_TO_SYMBOL);
  for (const s of specials) {
    if (typeof s !== 'string' || s.length === 0)
      fail('TF_ERR_BAD_ARGS', 'special tokens must be non-empty strings');
    if (byteSymbols.has(s))
      fail('TF_ERR_BAD_ARGS', `special token ${JSON.stringify(s)} collides with a byte symbol`);
  }
  if (new Set(specials).size !== specials.length) fail('TF_ERR_BAD_ARGS', 'special tokens must be distinct');
}

/** How often each pre-tokenized word occurs; special-token text is cut out first, as encoding does. */
function countWords(texts: Iterable<string>, specials: readonly string[]): Map<string, number> {
  const counts = new Map<string, number>();
  const pattern = gpt2SplitPattern();
  // Longest special first, so the alternation takes the longest match as the library's trie does.
  const escaped = [...specials]
    .sort((x, y) => y.length - x.length)
    .map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  const splitter = escaped.length > 0 ? new RegExp(escaped.join('|'), 'u') : null;
  const countPart = (part: string) => {
    pattern.lastIndex = 0;
    for (let m = pattern.exec(part); m !== null; m = pattern.exec(part)) {
      counts.set(m[0], (counts.get(m[0]) ?? 0) + 1);
    }
  };
  for (const text of texts) {
    if (typeof text !== 'string')
      fail('TF_ERR_BAD_ARGS', `training texts must be strings, got ${typeof text}`);
    if (splitter === null) countPart(text);
    else for (const part of text.split(splitter)) countPart(part);
  }
  return counts;
}

/** A pair's total occurrences (weighted by word frequency) and a superset of the words holding it. */
interface PairStats {
  count: number;
  words: Set<number>;
}

/** Unique words (2+ bytes) as runs of symbol ids in one flat array, merged in place. */
class WordTable {
  private constructor(
    private readonly syms: Int32Array,
    private readonly start: Int32Array,
    private readonly len: Int32Array,
    private readonly freq: Float64Array,
  ) {}

  static fromCounts(counts: Map<string, number>): WordTable {
    const idOfByte = new Int32Array(256);
    BYTE_ORDER.forEach((b, id) => {
      idOfByte[b] = id;
    });
    const encoder = new TextEncoder();
    const encoded: Uint8Array[] = [];
    const freqs: number[] = [];
    let total = 0;
    for (const [word, n] of counts) {
      const bytes = encoder.encode(word);
      if (bytes.length < 2) continue; // single bytes hold no pair
      encoded.push(bytes);
      freqs.push(n);
      total += bytes.length;
    }
    const syms = new Int32Array(total);
    const start = new Int32Array(encoded.length);
    const len = new Int32Array(encoded.length);
    let at = 0;
    encoded.forEach((bytes, w) => {
      start[w] = at;
      len[w] = bytes.length;
      for (const byte of bytes) syms[at++] = idOfByte[byte]!;
    });
    return new WordTable(syms, start, len, Float64Array.from(freqs));
  }

  countPairs(): Map<number, PairStats> {
    const pairs = new Map<number, PairStats>();
    for (let w = 0; w < this.start.length; w++) {
      const s = this.start[w]!;
      const end = s + this.len[w]!;
      for (let i = s; i + 1 < end; i++) {
        const key = this.syms[i]! * PAIR_BASE + this.syms[i + 1]!;
        let p = pairs.get(key);
        if (p === undefined) {
          p = { count: 0, words: new Set() };
          pairs.set(key, p);
        }
        p.count += this.freq[w]!;
        p.words.add(w);
      }
    }
    return pairs;
  }

  /**
   * Replaces every (a, b) in `words` by `id`, left to right, and applies the change in neighbour
   * pairs to `pairs` (the merged pair itself, `mergedKey`, is already gone). Returns the pairs
   * whose count rose, which the caller pushes onto the heap.
   */
  merge(
    words: Set<number>,
    a: number,
    b: number,
    id: number,
    mergedKey: number,
    pairs: Map<number, PairStats>,
  ): Set<number> {
    const rose = new Set<number>();
    const add = (key: number, delta: number, w: number) => {
      if (key === mergedKey) return;
      let p = pairs.get(key);
      if (delta > 0) {
        if (p === undefined) {
          p = { count: 0, words: new Set() };
          pairs.set(key, p);
        }
        p.words.add(w);
        rose.add(key);
      }
      invariant(p !== undefined, 'BPE pair count went below zero');
      p.count += delta;
      if (p.count === 0) pairs.delete(key);
    };
    const syms = this.syms;
    for (const w of words) {
      const f = this.freq[w]!;
      const s = this.start[w]!;
      const end = s + this.len[w]!;
      // `out` trails `i`: syms[s, out) is the merged prefix, so syms[out - 1] is the real left neighbour.
      let out = s;
      let i = s;
      while (i < end) {
        if (i + 1 < end && syms[i] === a && syms[i + 1] === b) {
          if (out > s) {
            const prev = syms[out - 1]!;
            add(prev * PAIR_BASE + a, -f, w);
            add(prev * PAIR_BASE + id, f, w);
          }
          if (i + 2 < end) {
            const next = syms[i + 2]!;
            add(b * PAIR_BASE + next, -f, w);
            add(id * PAIR_BASE + next, f, w);
          }
          syms[out++] = id;
          i += 2;
        } else {
          syms[out++] = syms[i++]!;
        }
      }
      this.len[w] = out - s;
    }
    return rose;
  }
}

/**
 * Max-heap of (count, pair key) entries: larger count first, ties to the smaller key (smaller
 * first id, then second), which makes training deterministic. Entries go stale as counts change;
 * the trainer checks each popped entry against the live count.
 */
class PairHeap {
  private readonly counts: number[] = [];
  private readonly keys: number[] = [];

  get size(): number {
    return this.keys.length;
  }

  topCount(): number {
    return this.counts[0]!;
  }

  push(count: number, key: number): void {
    this.counts.push(count);
    this.keys.push(key);
    this.up(this.keys.length - 1);
  }

  /** Removes the top entry and returns its key. */
  pop(): number {
    const top = this.keys[0]!;
    const lastCount = this.counts.pop()!;
    const lastKey = this.keys.pop()!;
    if (this.keys.length > 0) {
      this.counts[0] = lastCount;
      this.keys[0] = lastKey;
      this.down(0);
    }
    return top;
  }

  private before(i: number, j: number): boolean {
    const ci = this.counts[i]!;
    const cj = this.counts[j]!;
    return ci > cj || (ci === cj && this.keys[i]! < this.keys[j]!);
  }

  private swap(i: number, j: number): void {
    const c = this.counts[i]!;
    this.counts[i] = this.counts[j]!;
    this.counts[j] = c;
    const k = this.keys[i]!;
    this.keys[i] = this.keys[j]!;
    this.keys[j] = k;
  }

  private up(i: number): void {
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(i, parent)) return;
      this.swap(i, parent);
      i = parent;
    }
  }

  private down(i: number): void {
    const n = this.keys.length;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) return;
      const r = l + 1;
      const best = r < n && this.before(r, l) ? r : l;
      if (!this.before(best, i)) return;
      this.swap(i, best);
      i = best;
    }
  }
}

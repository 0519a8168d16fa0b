import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { saveTokenizer, trainByteLevelBpe } from '../../src/tokenizer/bpe-trainer.ts';
import { BYTE_ORDER, BYTE_TO_SYMBOL, gpt2SplitPattern } from '../../src/tokenizer/byte-level.ts';
import { Tokenizer } from '../../src/tokenizer/tokenizer.ts';
import { TokenFormerError } from '../../src/util/errors.ts';
import { mulberry32, tempDir } from '../helpers.ts';
import { GPT2_TOKENIZER, mobyChapters, randomText, SOTU, TRICKY } from './fixtures.ts';

/** ~330 KB of training text; chapters 100+ are held out. */
const TRAIN = mobyChapters(1, 40);
const json = trainByteLevelBpe(TRAIN, { vocabSize: 1000 });
const tok = Tokenizer.fromJSON(json, 'trained');

describe('trainByteLevelBpe', () => {
  test('produces exactly vocabSize tokens: 256 bytes, merges, then <|endoftext|>', () => {
    const ids = Object.values(json.model.vocab).sort((a, b) => a - b);
    assert.deepEqual(
      ids,
      Array.from({ length: 1000 }, (_, i) => i),
    );
    assert.equal(tok.vocabSize, 1000);
    assert.equal(tok.eosTokenId, 999);
    assert.deepEqual(json.added_tokens, [
      {
        id: 999,
        content: '<|endoftext|>',
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        special: true,
      },
    ]);
    assert.equal(json.model.merges.length, 1000 - 256 - 1);
    for (let b = 0; b < 256; b++) assert.notEqual(tok.tokenToId(BYTE_TO_SYMBOL[b]!), null, `byte ${b}`);
  });

  test('the 256 byte ids match GPT-2 (bytes_to_unicode order)', () => {
    const gpt2: Record<string, number> = JSON.parse(readFileSync(GPT2_TOKENIZER, 'utf8')).model.vocab;
    for (const [token, id] of Object.entries(gpt2)) if (id < 256) assert.equal(tok.idToToken(id), token);
  });

  test('the library encodes with it and round trips hard strings losslessly', () => {
    for (const s of TRICKY) assert.equal(tok.decode(tok.encode(s)), s, JSON.stringify(s));
    assert.deepEqual(tok.encode('<|endoftext|>'), [999]);
    const next = mulberry32(3);
    for (let i = 0; i < 300; i++) {
      const s = randomText(next, 40);
      assert.equal(tok.decode(tok.encode(s)), s, JSON.stringify(s));
    }
  });

  test('special-token text in the corpus is cut out, not learned', () => {
    const withEos = trainByteLevelBpe(
      TRAIN.map((t) => `${t}<|endoftext|>`),
      { vocabSize: 1000 },
    );
    assert.ok(!withEos.model.merges.some((m) => m.includes('<|') || m.includes('|>')));
    assert.deepEqual(withEos.model.merges, json.model.merges);
  });

  test('is deterministic', () => {
    assert.equal(JSON.stringify(trainByteLevelBpe(TRAIN, { vocabSize: 1000 })), JSON.stringify(json));
  });

  test('compresses held-out English below 0.45 tokens per byte', () => {
    let tokens = 0;
    let bytes = 0;
    for (const text of mobyChapters(100, 110)) {
      tokens += tok.encode(text).length;
      bytes += Buffer.byteLength(text);
    }
    const perByte = tokens / bytes;
    assert.ok(perByte < 0.45, `${perByte.toFixed(3)} tokens per byte`);
  });

  test('matches a naive full-recount trainer', () => {
    for (let seed = 1; seed <= 30; seed++) {
      const next = mulberry32(seed);
      // Few letters and short texts make count ties and overlapping pairs ("aaa") common.
      const texts = Array.from({ length: 60 }, () =>
        Array.from({ length: 1 + Math.floor(next() * 5) }, () =>
          Array.from({ length: 1 + Math.floor(next() * 6) }, () => 'abcd'[Math.floor(next() * 4)]).join(''),
        ).join(' '),
      );
      const opts = { vocabSize: 256 + 1 + 25, minFrequency: 1 + (seed % 2) };
      const fast = trainByteLevelBpe(texts, opts);
      const slow = naiveBpe(texts, opts.vocabSize - 1, opts.minFrequency);
      assert.deepEqual(fast.model.merges, slow.merges, `seed ${seed}`);
      assert.deepEqual(
        Object.keys(fast.model.vocab).slice(0, -1).sort(),
        [...slow.tokens].sort(),
        `seed ${seed}`,
      );
    }
  });

  test('trains on ~2 MB of text', () => {
    const files = readdirSync(SOTU)
      .filter((f) => f.endsWith('.txt'))
      .sort();
    const texts: string[] = [];
    let bytes = 0;
    for (const f of files) {
      if (bytes > 2e6) break;
      const text = readFileSync(join(SOTU, f), 'utf8');
      texts.push(text);
      bytes += text.length;
    }
    const big = trainByteLevelBpe(texts, { vocabSize: 4096 });
    assert.equal(Tokenizer.fromJSON(big).vocabSize, 4096);
  });

  test('reports progress up to the requested number of new tokens', () => {
    const seen: [number, number][] = [];
    trainByteLevelBpe(TRAIN.slice(0, 3), {
      vocabSize: 300,
      onProgress: (done, total) => seen.push([done, total]),
    });
    assert.equal(seen.length, 43);
    assert.deepEqual(seen.at(-1), [43, 43]);
  });

  test('stops early when pairs run out or fall below minFrequency', () => {
    const small = trainByteLevelBpe(['ab ab cd'], { vocabSize: 1000 });
    assert.deepEqual(small.model.merges, ['a b']); // then every pair occurs once
    assert.equal(Tokenizer.fromJSON(small).vocabSize, 256 + 1 + 1);
    const tiny = trainByteLevelBpe(['abc'], { vocabSize: 1000, minFrequency: 1 });
    assert.deepEqual(tiny.model.merges, ['a b', 'ab c']);
    assert.equal(Tokenizer.fromJSON(tiny).vocabSize, 256 + 2 + 1);
  });

  test('rejects bad options', () => {
    const fails = (opts: Parameters<typeof trainByteLevelBpe>[1], message: RegExp) =>
      assert.throws(
        () => trainByteLevelBpe(['x'], opts),
        (err: unknown) =>
          err instanceof TokenFormerError && err.code === 'TF_ERR_BAD_ARGS' && message.test(err.message),
      );
    fails({ vocabSize: 256 }, /vocabSize/);
    fails({ vocabSize: 258, specialTokens: ['<a>', '<b>', '<c>'] }, /vocabSize/);
    fails({ vocabSize: 300.5 }, /vocabSize/);
    fails({ vocabSize: 300, minFrequency: 0 }, /minFrequency/);
    fails({ vocabSize: 300, specialTokens: ['a'] }, /byte symbol/);
    fails({ vocabSize: 300, specialTokens: ['<x>', '<x>'] }, /distinct/);
    fails({ vocabSize: 300, specialTokens: [''] }, /non-empty/);
  });

  test('saveTokenizer writes a file that loads back identically', (t) => {
    const path = join(tempDir(t), 'tokenizer.json');
    saveTokenizer(path, json);
    assert.deepEqual(JSON.parse(readFileSync(path, 'utf8')), json);
    const loaded = Tokenizer.fromFile(path);
    const text = TRAIN[0]!.slice(0, 2000);
    assert.deepEqual(loaded.encode(text), tok.encode(text));
  });
});

/**
 * The textbook algorithm: recount every pair before each merge, take the most frequent (ties to
 * the smaller pair of ids), merge it everywhere. Slow, but obviously right.
 */
function naiveBpe(texts: string[], vocabSize: number, minFrequency: number) {
  const words = new Map<string, number>();
  for (const text of texts)
    for (const [w] of text.matchAll(gpt2SplitPattern())) words.set(w, (words.get(w) ?? 0) + 1);
  const idOfByte = new Map(BYTE_ORDER.map((b, id) => [b, id]));
  const list = [...words].map(([w, f]) => ({ syms: [...Buffer.from(w)].map((b) => idOfByte.get(b)!), f }));
  const tokens = BYTE_ORDER.map((b) => BYTE_TO_SYMBOL[b]!);
  const merges: string[] = [];
  while (tokens.length < vocabSize) {
    const counts = new Map<string, number>();
    for (const { syms, f } of list) {
      for (let i = 0; i + 1 < syms.length; i++) {
        const k = `${syms[i]},${syms[i + 1]}`;
        counts.set(k, (counts.get(k) ?? 0) + f);
      }
    }
    let best: [number, number, number] | null = null;
    for (const [k, c] of counts) {
      const [a, b] = k.split(',').map(Number) as [number, number];
      if (
        best === null ||
        c > best[2] ||
        (c === best[2] && (a < best[0] || (a === best[0] && b < best[1])))
      ) {
        best = [a, b, c];
      }
    }
    if (best === null || best[2] < minFrequency) break;
    const [a, b] = best;
    merges.push(`${tokens[a]} ${tokens[b]}`);
    let id = tokens.indexOf(tokens[a]! + tokens[b]!);
    if (id < 0) id = tokens.push(tokens[a]! + tokens[b]!) - 1;
    for (const w of list) {
      const out: number[] = [];
      for (let i = 0; i < w.syms.length; i++) {
        if (i + 1 < w.syms.length && w.syms[i] === a && w.syms[i + 1] === b) {
          out.push(id);
          i++;
        } else out.push(w.syms[i]!);
      }
      w.syms = out;
    }
  }
  return { merges, tokens };
}

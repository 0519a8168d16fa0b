import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { Tokenizer } from '../../src/tokenizer/tokenizer.ts';
import { TokenFormerError } from '../../src/util/errors.ts';
import { mulberry32, tempDir } from '../helpers.ts';
import { GPT2_TOKENIZER, randomText, TRICKY } from './fixtures.ts';

const gpt2 = Tokenizer.fromFile(GPT2_TOKENIZER);

function assertFails(fn: () => unknown, code: string, message: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof TokenFormerError, `expected a TokenFormerError, got ${String(err)}`);
    assert.equal(err.code, code);
    assert.match(err.message, message);
    return true;
  });
}

describe('Tokenizer on GPT-2', () => {
  test('known ids, vocabulary size and end-of-text token', () => {
    assert.deepEqual(gpt2.encode('Hello world'), [15496, 995]);
    assert.deepEqual(gpt2.encode(' Hello'), [18435]);
    assert.equal(gpt2.vocabSize, 50257);
    assert.equal(gpt2.eosTokenId, 50256);
    assert.equal(gpt2.isByteLevel, true);
    assert.equal(gpt2.idToToken(15496), 'Hello');
    assert.equal(gpt2.idToToken(995), 'Ġworld');
    assert.equal(gpt2.tokenToId('Ġworld'), 995);
    assert.equal(gpt2.tokenToId('no such token'), null);
    assert.equal(gpt2.idToToken(50257), null);
    assert.equal(gpt2.decode([15496, 995]), 'Hello world');
  });

  test('minTokens is a lower bound on the token count, and bounds a megabyte without tokenizing it', () => {
    const next = mulberry32(11);
    for (const text of [...TRICKY, ...Array.from({ length: 200 }, () => randomText(next, 400))])
      assert.ok(gpt2.minTokens(text) <= gpt2.encode(text).length, JSON.stringify(text));
    assert.equal(gpt2.minTokens(''), 0);
    // A megabyte of text is known to exceed any context without being tokenized.
    assert.ok(gpt2.minTokens('x'.repeat(1 << 20)) >= 8192); // GPT-2's longest token is 128 bytes
  });

  test('encode adds no special tokens; special-token text maps to its id', () => {
    assert.deepEqual(gpt2.encode(''), []);
    assert.deepEqual(gpt2.encode('<|endoftext|>'), [50256]);
    assert.deepEqual(gpt2.decode([]), '');
  });

  test('decode(encode(s)) === s on hard strings', () => {
    for (const s of TRICKY) assert.equal(gpt2.decode(gpt2.encode(s)), s, JSON.stringify(s));
  });

  test('decode(encode(s)) === s on seeded random unicode', () => {
    const next = mulberry32(7);
    for (let i = 0; i < 300; i++) {
      const s = randomText(next, 40);
      assert.equal(gpt2.decode(gpt2.encode(s)), s, JSON.stringify(s));
    }
  });

  test('decode agrees with the library, also for ids that split characters', () => {
    const json = JSON.parse(readFileSync(GPT2_TOKENIZER, 'utf8'));
    const hf = new HfTokenizer(json, { clean_up_tokenization_spaces: false });
    const next = mulberry32(11);
    for (let i = 0; i < 200; i++) {
      const ids = Array.from({ length: 1 + Math.floor(next() * 12) }, () =>
        // Bias towards byte tokens (ids < 256) and the end-of-text token, where the edge cases live.
        next() < 0.5 ? Math.floor(next() * 256) : next() < 0.2 ? 50256 : Math.floor(next() * 50257),
      );
      assert.equal(gpt2.decode(ids), hf.decode(ids, { clean_up_tokenization_spaces: false }), `ids ${ids}`);
    }
  });

  test('decode does not tidy spaces before punctuation', () => {
    const s = "word , word . don 't ?";
    assert.equal(gpt2.decode(gpt2.encode(s)), s);
  });

  test('bad ids are user errors', () => {
    assertFails(() => gpt2.decode([50257]), 'TF_ERR_BAD_ARGS', /50257/);
    assertFails(() => gpt2.decode([-1]), 'TF_ERR_BAD_ARGS', /-1/);
    assertFails(() => gpt2.decode([1.5]), 'TF_ERR_BAD_ARGS', /1\.5/);
  });
});

describe('Tokenizer loading', () => {
  test('a missing file is named in the error', () => {
    assertFails(
      () => Tokenizer.fromFile('/nonexistent/tokenizer.json'),
      'TF_ERR_NOT_FOUND',
      /\/nonexistent\/tokenizer\.json/,
    );
  });

  test('invalid JSON and invalid structure are TF_ERR_BAD_CONFIG naming the file', (t) => {
    const dir = tempDir(t);
    const garbage = join(dir, 'garbage.json');
    writeFileSync(garbage, '{ not json');
    assertFails(() => Tokenizer.fromFile(garbage), 'TF_ERR_BAD_CONFIG', /garbage\.json.*not valid JSON/);
    const noModel = join(dir, 'no-model.json');
    writeFileSync(noModel, JSON.stringify({ version: '1.0', added_tokens: [] }));
    assertFails(() => Tokenizer.fromFile(noModel), 'TF_ERR_BAD_CONFIG', /no-model\.json.*"model"/);
    const badModel = join(dir, 'bad-model.json');
    writeFileSync(badModel, JSON.stringify({ model: { type: 'Nonsense' }, added_tokens: [] }));
    assertFails(() => Tokenizer.fromFile(badModel), 'TF_ERR_BAD_CONFIG', /bad-model\.json/);
    assertFails(() => Tokenizer.fromJSON([], 'inline'), 'TF_ERR_BAD_CONFIG', /inline/);
    assertFails(
      () =>
        Tokenizer.fromJSON(
          { model: { type: 'BPE', vocab: {}, merges: [] }, added_tokens: [{ id: 'x' }] },
          'mine',
        ),
      'TF_ERR_BAD_CONFIG',
      /mine.*added_tokens\[0\]/,
    );
  });
});

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { trainByteLevelBpe } from '../../src/tokenizer/bpe-trainer.ts';
import { BYTE_TO_SYMBOL } from '../../src/tokenizer/byte-level.ts';
import { StreamingDetokenizer } from '../../src/tokenizer/stream-decoder.ts';
import { Tokenizer } from '../../src/tokenizer/tokenizer.ts';
import { TokenFormerError } from '../../src/util/errors.ts';
import { mulberry32 } from '../helpers.ts';
import { GPT2_TOKENIZER, mobyChapters, randomText, TRICKY } from './fixtures.ts';

const gpt2 = Tokenizer.fromFile(GPT2_TOKENIZER);
const trained = Tokenizer.fromJSON(trainByteLevelBpe(mobyChapters(1, 10), { vocabSize: 600 }), 'trained');

/** A lone surrogate in a delta would mean half of an astral character was emitted. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function stream(tok: Tokenizer, ids: readonly number[]): string[] {
  const d = new StreamingDetokenizer(tok);
  const deltas = ids.map((id) => d.push(id));
  deltas.push(d.flush());
  return deltas;
}

/** The id of the token spelling exactly `bytes`. */
function idOfBytes(tok: Tokenizer, bytes: number[]): number {
  const id = tok.tokenToId(bytes.map((b) => BYTE_TO_SYMBOL[b]).join(''));
  assert.ok(id !== null, `no token for bytes ${bytes}`);
  return id;
}

function checkStream(tok: Tokenizer, text: string): void {
  const ids = tok.encode(text);
  const deltas = stream(tok, ids);
  assert.equal(deltas.join(''), tok.decode(ids), JSON.stringify(text));
  for (const delta of deltas) {
    assert.ok(!LONE_SURROGATE.test(delta), `half a character in ${JSON.stringify(delta)}`);
    if (!text.includes('\uFFFD'))
      assert.ok(!delta.includes('\uFFFD'), `U+FFFD in a delta of ${JSON.stringify(text)}`);
  }
}

describe('StreamingDetokenizer (byte-level)', () => {
  test('deltas are whole characters and concatenate to decode, on hard and random strings', () => {
    for (const tok of [gpt2, trained]) {
      for (const s of TRICKY) checkStream(tok, s);
      const next = mulberry32(5);
      for (let i = 0; i < 300; i++) checkStream(tok, randomText(next, 30));
    }
  });

  test('a 4-byte emoji split inside a token is held back until complete', () => {
    // GPT-2 has a token for the first two bytes of U+1F600 (F0 9F 98 80), none for the rest.
    const ids = [
      idOfBytes(gpt2, [0x41]),
      idOfBytes(gpt2, [0xf0, 0x9f]),
      idOfBytes(gpt2, [0x98]),
      idOfBytes(gpt2, [0x80]),
    ];
    assert.deepEqual(stream(gpt2, ids), ['A', '', '', '😀', '']);
    assert.equal(gpt2.decode(ids), 'A😀');
    // One byte at a time through the trained tokenizer, whose ids 0..255 are the bytes.
    const bytes = [...Buffer.from('é😀中')].map((b) => idOfBytes(trained, [b]));
    assert.deepEqual(stream(trained, bytes), ['', 'é', '', '', '', '😀', '', '', '中', '']);
  });

  test('an incomplete character becomes U+FFFD exactly where decode puts one', () => {
    const f0 = idOfBytes(gpt2, [0xf0]);
    const eos = gpt2.eosTokenId!;
    const x = idOfBytes(gpt2, [0x78]);
    for (const ids of [[f0], [x, f0], [f0, eos, x], [f0, x], [x, f0, f0, eos, f0]]) {
      const deltas = stream(gpt2, ids);
      assert.equal(deltas.join(''), gpt2.decode(ids), `ids ${ids}`);
    }
    assert.deepEqual(stream(gpt2, [x, f0, eos]), ['x', '', '\uFFFD<|endoftext|>', '']);
    assert.deepEqual(stream(gpt2, [x, f0]), ['x', '', '\uFFFD']);
  });

  test('flush starts a fresh stream', () => {
    const d = new StreamingDetokenizer(gpt2);
    assert.equal(d.push(idOfBytes(gpt2, [0xe4])), '');
    assert.equal(d.flush(), '\uFFFD');
    assert.equal(d.push(gpt2.encode('ok')[0]!), 'ok');
    assert.equal(d.flush(), '');
  });

  test('a bad id is a user error and leaves the stream usable', () => {
    const d = new StreamingDetokenizer(gpt2);
    assert.equal(d.push(idOfBytes(gpt2, [0xf0, 0x9f])), '');
    assert.throws(
      () => d.push(99999),
      (err: unknown) => err instanceof TokenFormerError && err.code === 'TF_ERR_BAD_ARGS',
    );
    assert.equal(d.push(idOfBytes(gpt2, [0x98])), '');
    assert.equal(d.push(idOfBytes(gpt2, [0x80])), '😀');
  });
});

/** A tiny Llama-style tokenizer: Metaspace-like normalizer, byte fallback, Strip decoder. */
function llamaStyle(): Tokenizer {
  const vocab: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2 };
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`] = 3 + b;
  for (const t of ['▁', 'a', 'b', 'h', 'i', '▁h', '▁hi', 'ab', '▁ab']) vocab[t] = Object.keys(vocab).length;
  const special = (id: number, content: string) => ({ id, content, special: true, normalized: false });
  return Tokenizer.fromJSON(
    {
      version: '1.0',
      added_tokens: [special(0, '<unk>'), special(1, '<s>'), special(2, '</s>')],
      normalizer: {
        type: 'Sequence',
        normalizers: [
          { type: 'Prepend', prepend: '▁' },
          { type: 'Replace', pattern: { String: ' ' }, content: '▁' },
        ],
      },
      pre_tokenizer: null,
      post_processor: null,
      decoder: {
        type: 'Sequence',
        decoders: [
          { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
          { type: 'ByteFallback' },
          { type: 'Fuse' },
          { type: 'Strip', content: ' ', start: 1, stop: 0 },
        ],
      },
      model: {
        type: 'BPE',
        vocab,
        merges: ['▁ h', '▁h i', 'a b', '▁ ab'],
        unk_token: '<unk>',
        byte_fallback: true,
        fuse_unk: true,
      },
    },
    'llama-style',
  );
}

describe('StreamingDetokenizer (other tokenizers)', () => {
  test('re-decodes a window: whole characters, same text as decode', () => {
    const tok = llamaStyle();
    assert.equal(tok.isByteLevel, false);
    const text = 'hi 😀 ab ab é中 hi';
    const ids = tok.encode(text);
    assert.ok(ids.length > 10, 'the emoji and CJK should fall back to byte tokens');
    assert.equal(tok.decode(ids), text);
    const deltas = stream(tok, ids);
    assert.equal(deltas.join(''), text);
    for (const delta of deltas) assert.ok(!delta.includes('\uFFFD') && !LONE_SURROGATE.test(delta), delta);
    assert.equal(deltas[0], 'hi');
  });
});

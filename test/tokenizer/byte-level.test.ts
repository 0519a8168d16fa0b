import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  BYTE_ORDER,
  BYTE_TO_SYMBOL,
  bytesToSymbols,
  gpt2SplitPattern,
  symbolsToBytes,
} from '../../src/tokenizer/byte-level.ts';

test('every byte has its own visible, non-space symbol', () => {
  assert.deepEqual(
    [...BYTE_ORDER].sort((a, b) => a - b),
    Array.from({ length: 256 }, (_, i) => i),
  );
  assert.equal(new Set(BYTE_TO_SYMBOL).size, 256);
  for (const s of BYTE_TO_SYMBOL) {
    assert.equal(s.length, 1);
    assert.doesNotMatch(s, /[\s\p{C}]/u);
  }
  assert.equal(BYTE_TO_SYMBOL[0x20], 'Ġ');
  assert.equal(BYTE_TO_SYMBOL[0x0a], 'Ċ');
  assert.equal(BYTE_TO_SYMBOL[0x41], 'A');
});

test('bytes ↔ symbols round trip; foreign characters are refused', () => {
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  assert.deepEqual(symbolsToBytes(bytesToSymbols(all)), all);
  assert.equal(symbolsToBytes('a b'), null);
  assert.equal(symbolsToBytes('\u0144'), null);
  assert.equal(symbolsToBytes('中'), null);
  assert.deepEqual(symbolsToBytes(''), new Uint8Array(0));
});

test('the GPT-2 split pattern is fresh per call and splits like GPT-2', () => {
  const a = gpt2SplitPattern();
  a.exec('hello world');
  assert.notEqual(gpt2SplitPattern(), a);
  assert.equal(gpt2SplitPattern().lastIndex, 0);
  assert.deepEqual("I'm  here,\n  ok 42!".match(gpt2SplitPattern()), [
    'I',
    "'m",
    ' ',
    ' here',
    ',',
    '\n ',
    ' ok',
    ' 42',
    '!',
  ]);
});

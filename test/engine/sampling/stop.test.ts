import assert from 'node:assert/strict';
import test from 'node:test';
import { StopMatcher } from '../../../src/engine/sampling/stop.ts';
import { Rng } from '../../../src/util/rng.ts';

/** Feeds the deltas; returns what each push emitted, whether it stopped, and the flushed tail. */
function run(stops: string[], deltas: string[]) {
  const m = new StopMatcher(stops);
  const emits: string[] = [];
  let stopped = false;
  let matched: string | undefined;
  for (const d of deltas) {
    const r = m.push(d);
    emits.push(r.emit);
    if (r.stopped && !stopped) matched = r.matched;
    stopped ||= r.stopped;
  }
  const tail = m.flush();
  return { emits, stopped, matched, text: emits.join('') + tail, tail };
}

test('a stop string split across three deltas is held back, then cut with what follows', () => {
  const r = run(['<|end|>'], ['Hello <|', 'en', 'd|> more']);
  assert.deepEqual(r.emits, ['Hello ', '', '']);
  assert.equal(r.stopped, true);
  assert.equal(r.matched, '<|end|>');
  assert.equal(r.text, 'Hello ');
});

test('overlapping prefixes: stop "ab" on "aab" emits "a", however the text is cut', () => {
  for (const deltas of [['a', 'a', 'b'], ['aab'], ['aa', 'b'], ['a', 'ab']]) {
    const r = run(['ab'], deltas);
    assert.equal(r.text, 'a', JSON.stringify(deltas));
    assert.equal(r.stopped, true);
  }
  assert.deepEqual(run(['ab'], ['a', 'a', 'b']).emits, ['', 'a', '']);
  // Prefix fallbacks beyond one character (KMP borders).
  assert.equal(run(['aab'], ['a', 'a', 'a', 'b']).text, 'a');
  assert.equal(run(['abac'], ['ab', 'ab', 'ac!']).text, 'ab');
  assert.equal(run(['abab'], ['aba', 'bab']).text, '');
});

test('with several stop strings the first to complete wins', () => {
  const r = run(['world', 'lo'], ['hello world']);
  assert.equal(r.text, 'hel');
  assert.equal(r.matched, 'lo');
  // "bc" completes before "abcd" does, in one delta as char by char.
  assert.equal(run(['abcd', 'bc'], ['abcd']).text, 'a');
  assert.equal(run(['abcd', 'bc'], ['a', 'b', 'c', 'd']).text, 'a');
  // Completing at the same place, the one starting earlier cuts more.
  const same = run(['cd', 'bcd'], ['abcde']);
  assert.equal(same.text, 'a');
  assert.equal(same.matched, 'bcd');
});

test('no false hold-back: text that stops being a prefix is emitted, and flush returns the rest', () => {
  assert.deepEqual(run(['</s>'], ['a <', '3 b']).emits, ['a ', '<3 b']);
  const r = run(['</s>'], ['x </']);
  assert.deepEqual(r.emits, ['x ']);
  assert.equal(r.stopped, false);
  assert.equal(r.tail, '</');
  assert.equal(r.text, 'x </');
  assert.deepEqual(run(['STOP'], ['nothing here']).emits, ['nothing here']);
  assert.deepEqual(run([], ['a', 'b']).emits, ['a', 'b']);
});

test('unicode stop strings, including characters outside the BMP', () => {
  assert.equal(run(['🛑'], ['go ', '🛑 never']).text, 'go ');
  const r = run(['日本語'], ['これは日本']);
  assert.deepEqual(r.emits, ['これは']);
  assert.equal(r.tail, '日本');
  assert.equal(run(['日本語'], ['これは日本', '語です']).text, 'これは');
  assert.equal(run(['ñ—fin'], ['señ', 'ñ—', 'fi', 'n!']).text, 'señ');
  assert.equal(run(['👋🏽'], ['hi 👋', '🏽 there']).text, 'hi ');
  assert.equal(run(['👋🏽'], ['hi 👋', ' there']).text, 'hi 👋 there');
});

test('matching is on code points: a lone surrogate never matches, cuts or holds half a character', () => {
  // "\uD83D" is the first half of 😀 (U+1F600) and of 🛑 (U+1F6D1); JSON lets a client send it alone.
  for (const stop of ['\uD83D', '\uDE00', 'a\uD83D', '\uDE00b']) {
    const r = run([stop], ['a😀b', ' 🛑 ab😀']);
    assert.equal(r.stopped, false, JSON.stringify(stop));
    assert.deepEqual(r.emits, ['a😀b', ' 🛑 ab😀'], JSON.stringify(stop));
  }
  // A character outside the BMP split across deltas is matched whole.
  assert.equal(run(['😀b'], ['a\uD83D', '\uDE00b!']).text, 'a');
  const split = run(['x'], ['a\uD83D', '\uDE00b']);
  assert.equal(split.text, 'a😀b');
  assert.ok(
    split.emits.every((e) => !/[\uD800-\uDBFF]$/.test(e)),
    JSON.stringify(split.emits),
  );
});

test('a stop string completed while not armed (min_tokens) does not stop; one completed later does', () => {
  const m = new StopMatcher(['ab']);
  assert.deepEqual(m.push('xab', false), { emit: 'x', stopped: false });
  assert.deepEqual(m.push('ca', false), { emit: 'abc', stopped: false });
  // The held "a" completes "ab" in an armed push: a match that straddles the boundary counts.
  assert.deepEqual(m.push('b!', true), { emit: '', stopped: true, matched: 'ab' });
});

test('after a stop nothing more is emitted', () => {
  const m = new StopMatcher(['.']);
  assert.deepEqual(m.push('one. two'), { emit: 'one', stopped: true, matched: '.' });
  assert.deepEqual(m.push('three'), { emit: '', stopped: true });
  assert.equal(m.flush(), '');
});

test('empty stop strings are rejected', () => {
  assert.throws(() => new StopMatcher(['x', '']), /stop strings must be non-empty strings/);
});

test('random texts and random cuts agree with a search on the whole text', () => {
  const rng = new Rng(99);
  const pick = (n: number) => rng.nextUint32() % n;
  const word = (len: number) => Array.from({ length: len }, () => 'abc'[pick(3)]).join('');
  for (let round = 0; round < 2000; round++) {
    const stops = Array.from({ length: 1 + pick(3) }, () => word(1 + pick(4)));
    const text = word(pick(20));
    // Expected: the shortest prefix of the text containing a stop string, cut at that match.
    let expected = text;
    for (let end = 1; end <= text.length; end++) {
      let start = end;
      for (const s of stops) if (text.slice(0, end).endsWith(s)) start = Math.min(start, end - s.length);
      if (start < end) {
        expected = text.slice(0, start);
        break;
      }
    }
    const deltas: string[] = [];
    for (let i = 0; i < text.length; ) {
      const n = 1 + pick(4);
      deltas.push(text.slice(i, i + n));
      i += n;
    }
    const r = run(stops, deltas);
    assert.equal(r.text, expected, `${JSON.stringify(stops)} on ${JSON.stringify(deltas)}`);
    assert.equal(
      r.stopped,
      stops.some((s) => text.includes(s)),
    );
  }
});

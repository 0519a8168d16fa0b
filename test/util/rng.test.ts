import assert from 'node:assert/strict';
import test from 'node:test';
import { Rng } from '../../src/util/rng.ts';

const draws = (rng: Rng, n: number): number[] => Array.from({ length: n }, () => rng.nextUint32());

test('seeding goes through splitmix64 and the first output is xoshiro128** of that state', () => {
  // splitmix64 from 0 first yields 0xe220a8397b1dcdaf (the published reference value), which
  // becomes s0 = 0x7b1dcdaf, s1 = 0xe220a839; xoshiro128**'s first output is rotl(s1·5, 7)·9.
  const s1 = 0xe220a839n;
  const m = (s1 * 5n) & 0xffffffffn;
  const rot = ((m << 7n) | (m >> 25n)) & 0xffffffffn;
  const expected = Number((rot * 9n) & 0xffffffffn);
  assert.equal(new Rng(0).nextUint32(), expected);
  // The next outputs, from an independent implementation (Python, arbitrary-precision ints).
  assert.deepEqual(draws(new Rng(0), 5), [3737715805, 2584255861, 2876756834, 3286328325, 1553311962]);
});

test('the same seed gives the same stream; different seeds give different streams', () => {
  assert.deepEqual(draws(new Rng(42), 100), draws(new Rng(42), 100));
  assert.notDeepEqual(draws(new Rng(42), 100), draws(new Rng(43), 100));
  assert.notDeepEqual(draws(new Rng(-1), 100), draws(new Rng(2 ** 53 - 1), 100));
});

test('an unseeded stream draws a random seed it reports, and replays from it', () => {
  const a = new Rng();
  const b = new Rng();
  assert.ok(Number.isSafeInteger(a.seed) && a.seed >= 0);
  assert.notEqual(a.seed, b.seed);
  assert.deepEqual(draws(a, 50), draws(new Rng(a.seed), 50));
});

test('nextFloat is uniform on [0, 1)', () => {
  const rng = new Rng(7);
  const bins = new Array<number>(10).fill(0);
  const n = 100_000;
  for (let i = 0; i < n; i++) {
    const x = rng.nextFloat();
    assert.ok(x >= 0 && x < 1);
    bins[Math.floor(x * 10)]!++;
  }
  for (const c of bins) assert.ok(Math.abs(c / n - 0.1) < 0.005, `bin share ${c / n}`);
});

test('a non-integer seed is rejected', () => {
  assert.throws(() => new Rng(1.5), /seed must be an integer, got 1.5/);
});

test('a stream restored from its state goes on exactly where it was; a bad state is refused', () => {
  const a = new Rng(42);
  for (let i = 0; i < 17; i++) a.nextUint32();
  const b = new Rng(1);
  b.restore(a.state);
  assert.deepEqual(
    Array.from({ length: 8 }, () => b.nextUint32()),
    Array.from({ length: 8 }, () => a.nextUint32()),
  );
  assert.throws(() => b.restore([0, 0, 0, 0]), /not all zero/);
  assert.throws(() => b.restore([1, 2, 3, 2 ** 32] as const), /32-bit/);
});

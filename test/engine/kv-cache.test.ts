import assert from 'node:assert/strict';
import test from 'node:test';
import { KvCache } from '../../src/engine/kv-cache.ts';
import { TokenFormerError } from '../../src/util/errors.ts';

const H = 2;
const DH = 3;

function cache(slots = 3, initialCapacity = 4, maxLength = 32) {
  return new KvCache({ layers: 2, heads: H, headDim: DH, slots, maxLength, initialCapacity });
}

/** A present tensor [batch, H, n, Dh] whose entry encodes (tag, row, head, t, d). */
function present(tag: number, batch: number, n: number): Float32Array {
  const out = new Float32Array(batch * H * n * DH);
  for (let b = 0; b < batch; b++)
    for (let h = 0; h < H; h++)
      for (let t = 0; t < n; t++)
        for (let d = 0; d < DH; d++) out[((b * H + h) * n + t) * DH + d] = code(tag, b, h, t, d);
  return out;
}

function code(tag: number, b: number, h: number, t: number, d: number): number {
  return tag * 10000 + b * 1000 + h * 100 + t * 10 + d;
}

/** Writes `n` positions for row `row` of a present pair into every layer of `slot`. */
function write(c: KvCache, slot: number, tag: number, row: number, batch: number, n: number) {
  for (let l = 0; l < c.layers; l++) {
    c.append(slot, l, present(tag + l, batch, n), present(-(tag + l), batch, n), row, n);
  }
  c.advance(slot, n);
}

/** Reads back one cached position of a slot through `views` (keys transposed, values not). */
function readPos(c: KvCache, slot: number, layer: number, pos: number) {
  const v = c.views(slot, 1);
  const cap = c.capacity;
  const keys: number[] = [];
  const values: number[] = [];
  for (let h = 0; h < H; h++)
    for (let d = 0; d < DH; d++) {
      keys.push(v.keys[layer]![(h * DH + d) * cap + pos]!);
      values.push(v.values[layer]![(h * cap + pos) * DH + d]!);
    }
  return { keys, values };
}

function expected(tag: number, row: number, t: number) {
  const out: number[] = [];
  for (let h = 0; h < H; h++) for (let d = 0; d < DH; d++) out.push(code(tag, row, h, t, d));
  return out;
}

test('append writes keys transposed [H, Dh, cap] and values [H, cap, Dh] at the sequence end', () => {
  const c = cache();
  const s = c.allocate()!;
  write(c, s, 1, 1, 2, 2); // row 1 of a batch-2 run, 2 new positions
  write(c, s, 5, 0, 1, 1); // then one more position
  assert.equal(c.length(s), 3);
  for (const [pos, tag, row, t] of [
    [0, 1, 1, 0],
    [1, 1, 1, 1],
    [2, 5, 0, 0],
  ] as const) {
    for (let l = 0; l < 2; l++) {
      const got = readPos(c, s, l, pos);
      assert.deepEqual(got.keys, expected(tag + l, row, t), `keys layer ${l} pos ${pos}`);
      assert.deepEqual(got.values, expected(-(tag + l), row, t), `values layer ${l} pos ${pos}`);
    }
  }
});

test('views are zero-copy subarrays of contiguous slots with the decoder shapes', () => {
  const c = cache(4, 4);
  for (let i = 0; i < 3; i++) c.allocate();
  const v = c.views(1, 2);
  assert.deepEqual(v.keyDims, [2, H, DH, 4]);
  assert.deepEqual(v.valueDims, [2, H, 4, DH]);
  assert.equal(v.keys[0]!.length, 2 * H * DH * 4);
  const all = c.views(0, 3);
  assert.equal(v.keys[0]!.buffer, all.keys[0]!.buffer, 'a view shares the cache buffer');
  assert.equal(v.keys[0]!.byteOffset, all.keys[0]!.byteOffset + H * DH * 4 * 4);
  write(c, 1, 3, 0, 1, 1);
  assert.equal(v.keys[0]![0], code(3, 0, 0, 0, 0), 'writes show through an existing view');
  assert.equal(v.keys[1]![0], code(4, 0, 0, 0, 0));
  assert.throws(() => c.views(2, 2), TokenFormerError, 'slot 3 is not active');
});

test('slots stay compacted: free moves the last slot into the hole and reports it', () => {
  const c = cache(3);
  const [a, b, d] = [c.allocate()!, c.allocate()!, c.allocate()!];
  assert.deepEqual([a, b, d], [0, 1, 2]);
  assert.equal(c.allocate(), undefined, 'all slots in use');
  write(c, d, 7, 0, 1, 2);
  assert.deepEqual(c.free(a), { from: 2, to: 0 });
  assert.equal(c.activeCount, 2);
  assert.equal(c.length(0), 2);
  assert.deepEqual(readPos(c, 0, 1, 1).keys, expected(8, 0, 1));
  assert.equal(c.free(1), undefined, 'freeing the last slot moves nothing');
  assert.equal(c.allocate(), 1, 'the freed slot is reused');
  assert.equal(c.length(1), 0, 'a reused slot starts empty');
  assert.throws(() => c.length(2), /not in use/);
});

test('swap exchanges two slots', () => {
  const c = cache(3);
  c.allocate();
  c.allocate();
  write(c, 0, 1, 0, 1, 1);
  write(c, 1, 3, 0, 1, 2);
  c.swap(0, 1);
  assert.deepEqual([c.length(0), c.length(1)], [2, 1]);
  assert.deepEqual(readPos(c, 0, 0, 1).values, expected(-3, 0, 1));
  assert.deepEqual(readPos(c, 1, 1, 0).keys, expected(2, 0, 0));
});

test('capacity doubles up to max_seq_len and keeps every cached position', () => {
  const c = cache(2, 4, 20);
  c.allocate();
  c.allocate();
  write(c, 0, 1, 0, 1, 3);
  write(c, 1, 4, 0, 1, 4);
  const before = c.stats();
  c.reserve(5);
  assert.equal(c.capacity, 8);
  c.reserve(17);
  assert.equal(c.capacity, 20, 'capped at max_seq_len');
  for (let t = 0; t < 3; t++) assert.deepEqual(readPos(c, 0, 1, t).keys, expected(2, 0, t));
  for (let t = 0; t < 4; t++) assert.deepEqual(readPos(c, 1, 0, t).values, expected(-4, 0, t));
  write(c, 0, 9, 0, 1, 2);
  assert.deepEqual(readPos(c, 0, 0, 4).keys, expected(9, 0, 1));
  assert.throws(() => c.reserve(21), /exceed max_seq_len 20/);
  const after = c.stats();
  assert.equal(before.bytesPerToken, 2 * 2 * H * DH * 4);
  assert.equal(after.bytesPerSequence, after.bytesPerToken * 20);
  assert.equal(after.totalBytes, 2 * after.bytesPerSequence);
  assert.equal(after.usage, (5 + 4) / 40);
});

test('append past the capacity is a bug, not a silent overwrite', () => {
  const c = cache(1, 4);
  c.allocate();
  write(c, 0, 1, 0, 1, 3);
  assert.throws(() => write(c, 0, 1, 0, 1, 2), /reserve first/);
});

test('capacity shrinks back when the long sequences leave, keeping the others intact', () => {
  const c = cache(2, 4, 64);
  c.allocate();
  c.allocate();
  write(c, 0, 1, 0, 1, 3);
  c.reserve(40);
  write(c, 1, 5, 0, 1, 40);
  assert.equal(c.capacity, 64);
  c.free(1); // the long sequence leaves: 3 positions left, capacity 8 holds twice that
  assert.equal(c.capacity, 8);
  for (let t = 0; t < 3; t++) assert.deepEqual(readPos(c, 0, 1, t).keys, expected(2, 0, t));
  for (let t = 0; t < 3; t++) assert.deepEqual(readPos(c, 0, 0, t).values, expected(-1, 0, t));
});

test('a padded row keeps only its first positions, and truncate rolls rejected positions back', () => {
  const c = cache(3, 8);
  const s = c.allocate()!;
  write(c, s, 1, 0, 1, 2);
  // A 4-position run of which this row uses 3 (padding after), then 2 of them are rejected.
  for (let l = 0; l < c.layers; l++) c.append(s, l, present(7 + l, 1, 4), present(-(7 + l), 1, 4), 0, 4, 3);
  c.advance(s, 3);
  assert.equal(c.length(s), 5);
  c.truncate(s, 3);
  assert.equal(c.length(s), 3);
  assert.deepEqual(readPos(c, s, 0, 2).keys, expected(7, 0, 0));
  write(c, s, 20, 0, 1, 1); // the next token overwrites the first rejected position
  assert.deepEqual(readPos(c, s, 1, 3).values, expected(-21, 0, 0));
  assert.throws(() => c.truncate(s, 5), /truncate/);
});

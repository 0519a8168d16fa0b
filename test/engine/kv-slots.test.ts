import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KvCache } from '../../src/engine/kv-cache.ts';
import { SequenceSlots } from '../../src/engine/kv-slots.ts';

const cache = () =>
  new KvCache({ layers: 1, heads: 1, headDim: 2, slots: 4, maxLength: 8, initialCapacity: 4 });

test('slots follow the cache: a freed slot takes the last sequence, which is remapped', () => {
  const c = cache();
  const s = new SequenceSlots(c);
  for (const id of [10, 11, 12, 13]) assert.equal(s.add(id), id - 10);
  assert.equal(s.add(14), undefined, 'every slot in use');
  s.free(11);
  assert.equal(s.size, 3);
  assert.equal(s.slot(11), undefined);
  assert.equal(s.slot(13), 1, 'the last slot moved into the hole');
  assert.equal(c.activeCount, 3);
  assert.equal(s.add(14), 3);
});

test('contiguous: a decode set spread over the slots is swapped into 0..k−1, with its cache data', () => {
  const c = cache();
  const s = new SequenceSlots(c);
  for (const id of [1, 2, 3, 4]) s.add(id);
  // Mark each slot's data by its length: 1..4 positions for sequences 1..4.
  for (const id of [1, 2, 3, 4]) c.advance(s.slot(id)!, id);
  assert.equal(s.contiguous([2, 3]), 1, 'already contiguous: nothing moves');
  const first = s.contiguous([1, 4]);
  assert.equal(first, 0);
  assert.deepEqual([s.slot(1), s.slot(4)].sort(), [0, 1]);
  for (const id of [1, 2, 3, 4]) assert.equal(c.length(s.slot(id)!), id, `sequence ${id} kept its cache`);
});

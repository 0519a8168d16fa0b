import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AdaptiveK } from '../../src/engine/speculative.ts';

/** A controller that has seen `plain` ms plain steps and speculative steps of k=2 at `accept`. */
function measured(plainMs: number, draftMs: number, accept: number): AdaptiveK {
  const a = new AdaptiveK(8, 4);
  for (let i = 0; i < 5; i++) a.recordPlain(plainMs);
  for (let i = 0; i < 200; i++) {
    const ok = i % 100 < accept * 100 ? 2 : 0;
    a.recordSpec(2, ok, ok === 2 ? 0 : 1, draftMs, plainMs * 1.05);
  }
  return a;
}

const choices = (a: AdaptiveK, steps: number, batch = 1) =>
  Array.from({ length: steps }, () => a.choose(batch));

test('AdaptiveK: plain steps until the reference time is known, then the prior k', () => {
  const a = new AdaptiveK(8, 4);
  assert.deepEqual(choices(a, 3), [0, 0, 0]);
  for (let i = 0; i < 3; i++) a.recordPlain(3);
  assert.equal(a.choose(1), 4);
});

test('AdaptiveK: a cheap draft that is always right drafts the most, with a plain step now and then', () => {
  const a = measured(3, 0.3, 1);
  const ks = choices(a, 256);
  assert.equal(Math.max(...ks), 8);
  const plain = ks.filter((k) => k === 0).length;
  assert.ok(plain >= 2 && plain <= 8, `${plain} plain steps of 256 re-measure the reference`);
  assert.deepEqual(choices(a, 3, 5), [0, 0, 0], 'batches above maxBatch decode plainly');
});

test('AdaptiveK: when speculation does not pay it decodes plainly, and still probes now and then', () => {
  // A draft as slow as the target, right half the time: no k beats one token per plain step.
  const a = measured(3, 3, 0.5);
  const ks = choices(a, 512);
  const probes = ks.filter((k) => k > 0);
  assert.ok(probes.length >= 2 && probes.length <= 8, `${probes.length} probes in 512 steps`);
  assert.ok(
    probes.every((k) => k <= 2),
    'probes are short',
  );
});

test('AdaptiveK: probes that keep finding no gain come less and less often', () => {
  const a = measured(3, 3, 0.5);
  const at = choices(a, 8192).flatMap((k, step) => (k > 0 ? [step] : []));
  assert.ok(at.length >= 4 && at.length <= 8, `${at.length} probes in 8192 steps: ${at.join(' ')}`);
  const gaps = at.slice(1).map((s, i) => s - at[i]!);
  assert.ok(
    gaps.every((g, i) => i === 0 || g >= gaps[i - 1]!),
    `gaps ${gaps.join(' ')} do not shrink`,
  );
  assert.ok(!a.drafting, 'the draft need not follow prompts while it does not pay');
  assert.ok(measured(3, 0.3, 1).drafting);
});

test('AdaptiveK: a fixed k is always used', () => {
  const a = new AdaptiveK(8, 4, 3);
  assert.deepEqual(choices(a, 4, 100), [3, 3, 3, 3]);
});

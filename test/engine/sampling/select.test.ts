import assert from 'node:assert/strict';
import test from 'node:test';
import { type Cut, topKCut, topPCut } from '../../../src/engine/sampling/select.ts';
import { Rng } from '../../../src/util/rng.ts';

/** Reference by full sort: the kept multiset of values for a cut. */
function keptBySort(w: number[], count: number): number[] {
  return [...w].sort((a, b) => b - a).slice(0, count);
}
function keptByCut(w: number[], cut: Cut): number[] {
  const above = w.filter((x) => x > cut.value);
  return [...above, ...new Array<number>(cut.ties).fill(cut.value)].sort((a, b) => b - a);
}

/** Random weights in (0, 1], quantised to few levels on some rounds so ties (and zeros) abound. */
function weights(rng: Rng, n: number, levels: number): number[] {
  return Array.from({ length: n }, () => {
    const u = rng.nextFloat();
    return levels > 0 ? Math.floor(u * levels) / levels : u;
  });
}

test('topKCut keeps exactly the k largest, ties counted, and leaves them in w[0, k)', () => {
  const rng = new Rng(3);
  for (let round = 0; round < 300; round++) {
    const n = 1 + (rng.nextUint32() % 300);
    const w = weights(rng, n, round % 3 === 0 ? 0 : 1 + (round % 7));
    const k = 1 + (rng.nextUint32() % n);
    const buf = Float64Array.from(w);
    const cut = topKCut(buf, n, k);
    assert.deepEqual(keptByCut(w, cut), keptBySort(w, k));
    assert.deepEqual(
      Array.from(buf.subarray(0, k)).sort((a, b) => b - a),
      keptBySort(w, k),
    );
  }
});

test('topPCut keeps the shortest prefix in descending order whose mass reaches the target', () => {
  const rng = new Rng(4);
  for (let round = 0; round < 300; round++) {
    const n = 1 + (rng.nextUint32() % 300);
    const w = weights(rng, n, round % 3 === 0 ? 0 : 1 + (round % 5));
    const total = w.reduce((a, b) => a + b, 0);
    if (total === 0) continue;
    const target = total * (0.05 + 0.9 * rng.nextFloat());
    const sorted = keptBySort(w, n);
    let count = 0;
    for (let acc = 0; acc < target; count++) acc += sorted[count]!;
    const cut = topPCut(Float64Array.from(w), n, target);
    assert.deepEqual(keptByCut(w, cut), sorted.slice(0, count), `round ${round}`);
  }
});

test('topPCut with a target at the whole mass keeps every positive weight', () => {
  const w = [0.5, 0, 0.25, 0.25, 0];
  const cut = topPCut(Float64Array.from(w), w.length, 1);
  assert.deepEqual(
    keptByCut(w, cut).filter((x) => x > 0),
    [0.5, 0.25, 0.25],
  );
});

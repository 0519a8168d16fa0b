import assert from 'node:assert/strict';
import test from 'node:test';
import { expNeg } from '../../../src/engine/sampling/fastexp.ts';
import { Rng } from '../../../src/util/rng.ts';

test('expNeg matches Math.exp to 1e-12 relative over [-708, 0]', () => {
  const rng = new Rng(1);
  let worst = 0;
  for (let i = 0; i < 200_000; i++) {
    const x = -rng.nextFloat() * (i % 2 === 0 ? 20 : 708);
    const rel = Math.abs(expNeg(x) - Math.exp(x)) / Math.exp(x);
    if (rel > worst) worst = rel;
  }
  assert.ok(worst < 1e-12, `worst relative error ${worst}`);
});

test('expNeg edge values', () => {
  assert.equal(expNeg(0), 1);
  assert.equal(expNeg(-0), 1);
  assert.equal(expNeg(Number.NEGATIVE_INFINITY), 0);
  assert.equal(expNeg(-1000), 0);
  assert.ok(Number.isNaN(expNeg(Number.NaN)));
});

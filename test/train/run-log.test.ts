import assert from 'node:assert/strict';
import test from 'node:test';
import { keptLogEntries } from '../../src/train/run.ts';

test('a resumed run keeps the training steps before its checkpoint and the evaluations up to it', () => {
  // Steps 0..7 trained, evaluated at 6 (logged after step 5), saved at 6, killed after step 7.
  const log = [
    { step: 0, val_loss: 5 },
    ...[0, 1, 2, 3, 4, 5].map((step) => ({ step, loss: 4 })),
    { step: 6, val_loss: 3.5 },
    { step: 6, loss: 3.4 },
    { step: 7, loss: 3.3 },
    { step: 8, val_loss: 3.2 },
  ];
  const kept = keptLogEntries(log, 6);
  assert.deepEqual(
    kept.map((e) => [e.step, 'loss' in e ? 'train' : 'val']),
    [
      [0, 'val'],
      [0, 'train'],
      [1, 'train'],
      [2, 'train'],
      [3, 'train'],
      [4, 'train'],
      [5, 'train'],
      [6, 'val'],
    ],
  );
});

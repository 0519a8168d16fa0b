import assert from 'node:assert/strict';
import test from 'node:test';
import { initParams } from '../../src/model/init.ts';
import { evalBatches, trainBatch } from '../../src/train/batches.ts';
import { learningRate } from '../../src/train/schedule.ts';
import { freshState, Trainer } from '../../src/train/trainer.ts';
import { OFFICIAL_OPTIMIZER } from '../../src/train/training-step.ts';
import { tinyConfig } from '../helpers.ts';

/** One "sentence" of token ids repeated end to end. */
function repeated(sentence: number[], times: number): Uint32Array {
  return Uint32Array.from({ length: sentence.length * times }, (_, i) => sentence[i % sentence.length]!);
}

test('a tiny model overfits one repeated sentence: loss goes close to zero', async () => {
  const cfg = tinyConfig({ vocab_size: 32, num_layers: 2, hidden_size: 32, num_heads: 2 });
  const tokens = repeated([3, 17, 5, 29, 8, 11, 2, 19, 23, 7, 1], 60);
  const trainer = await Trainer.create(
    cfg,
    { ...OFFICIAL_OPTIMIZER, weightDecay: 0 },
    freshState(cfg, initParams(cfg, 1)),
  );
  try {
    const first = (await trainer.step(trainBatch(tokens, 8, 24, 1, 0), 1e-2)).loss;
    let last = first;
    for (let s = 1; s < 150; s++) last = (await trainer.step(trainBatch(tokens, 8, 24, 1, s), 1e-2)).loss;
    const val = await trainer.evaluate(evalBatches(tokens, 4, 24, 2));
    assert.ok(first > 3, `initial loss ${first} should be near ln(32) = 3.47`);
    assert.ok(last < 0.05 && val < 0.05, `loss after 150 steps: train ${last}, eval ${val}`);
  } finally {
    await trainer.close();
  }
});

test('a non-finite loss stops the step with a clear message and leaves the weights unchanged', async () => {
  const cfg = tinyConfig({ vocab_size: 32 });
  const params = initParams(cfg, 2);
  params.get('embed.weight')![0] = Number.NaN;
  const trainer = await Trainer.create(cfg, OFFICIAL_OPTIMIZER, freshState(cfg, params));
  try {
    const before = trainer.state.params.get('layers.0.ffn.keys')!;
    await assert.rejects(
      trainer.step(trainBatch(repeated([0, 1, 2], 40), 2, 8, 1, 0), 1e-3),
      /loss became NaN .* at step 0; the weights were not updated/,
    );
    assert.equal(trainer.state.params.get('layers.0.ffn.keys'), before);
    assert.equal(trainer.state.step, 0);
  } finally {
    await trainer.close();
  }
});

test('training is deterministic for a fixed seed and thread count', async () => {
  const cfg = tinyConfig({ vocab_size: 32 });
  const tokens = repeated([1, 4, 9, 16, 25, 3, 7, 30, 2], 50);
  const run = async () => {
    const trainer = await Trainer.create(cfg, OFFICIAL_OPTIMIZER, freshState(cfg, initParams(cfg, 9)), 2);
    const losses: number[] = [];
    for (let s = 0; s < 5; s++) losses.push((await trainer.step(trainBatch(tokens, 4, 16, 7, s), 3e-3)).loss);
    await trainer.close();
    return losses;
  };
  assert.deepEqual(await run(), await run());
});

test('schedule: linear warmup, cosine to the floor, batches a pure function of (seed, step)', () => {
  const s = { kind: 'cosine' as const, lr: 1e-3, minLr: 1e-4, warmupSteps: 10, totalSteps: 110 };
  assert.equal(learningRate(s, 0), 1e-4);
  assert.equal(learningRate(s, 9), 1e-3);
  assert.ok(Math.abs(learningRate(s, 60) - 5.5e-4) < 1e-12);
  assert.ok(Math.abs(learningRate(s, 110) - 1e-4) < 1e-12);
  assert.equal(learningRate({ ...s, kind: 'constant' }, 50), 1e-3);
  const tokens = Uint32Array.from({ length: 500 }, (_, i) => i % 97);
  assert.deepEqual(trainBatch(tokens, 3, 8, 5, 12), trainBatch(tokens, 3, 8, 5, 12));
  assert.notDeepEqual(trainBatch(tokens, 3, 8, 5, 12).ids, trainBatch(tokens, 3, 8, 5, 13).ids);
  const b = trainBatch(tokens, 2, 8, 1, 0);
  for (let i = 0; i < 7; i++) assert.equal(b.labels[i], b.ids[i + 1]);
});

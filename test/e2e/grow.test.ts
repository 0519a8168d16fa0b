import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import test from 'node:test';
import { importOfficial } from '../../src/model/official/import.ts';
import { FIXTURES, tempDir } from '../helpers.ts';

const ROOT = resolve(import.meta.dirname, '../..');

/** Runs `npm run <script> -- args` from the project root, as the README tells users to. */
function npmRun(script: string, args: string[]) {
  const r = spawnSync('npm', ['run', '--silent', script, '--', ...args], { cwd: ROOT, encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function imported(t: { after: (fn: () => void) => void }) {
  const dir = tempDir(t, 'tf-e2e-grow-');
  const ck = join(dir, 'ckpt');
  await importOfficial(join(FIXTURES, 'official-tiny/checkpoint'), ck);
  return { dir, ck };
}

test('npm run grow: an imported checkpoint grown to qkv 80 / proj 64 / ffn 160', async (t) => {
  const { dir, ck } = await imported(t);
  const out = join(dir, 'grown');
  const r = npmRun('grow', [
    '--checkpoint',
    ck,
    '--out',
    out,
    '--qkv-tokens',
    '80',
    '--proj-tokens',
    '64',
    '--ffn-tokens',
    '160',
  ]);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trimEnd().split('\n');
  assert.equal(lines.length, 1, `one summary line, got:\n${r.stdout}`);
  assert.match(lines[0]!, /tokens qkv 48→80, proj 40→64, ffn 96→160/);
  assert.match(lines[0]!, /parameters 104,576 → 151,680/);
  assert.match(lines[0]!, /τ keep \(qkv 6\.928, proj 6\.325, ffn 9\.798\)/);
  assert.match(lines[0]!, /new keys zero/);
  const meta = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
  assert.equal(meta.provenance.source, 'grow');
  assert.equal(meta.parent.path, resolve(ck));
  assert.deepEqual([meta.model.qkv.tokens, meta.model.proj.tokens, meta.model.ffn.tokens], [80, 64, 160]);

  // Official policy, one kind only: the others keep count and τ.
  const off = npmRun('grow', [
    '--checkpoint',
    ck,
    '--out',
    join(dir, 'official'),
    '--ffn-tokens',
    '128',
    '--init',
    'random',
    '--tau',
    'recompute',
    '--seed',
    '5',
  ]);
  assert.equal(off.code, 0, off.stderr);
  assert.match(
    off.stdout,
    /tokens qkv 48→48, proj 40→40, ffn 96→128;.*τ recompute \(qkv 6\.928, proj 6\.325, ffn 11\.314\); new keys random/,
  );

  const help = npmRun('grow', ['--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^npm run grow -- --checkpoint DIR --out DIR/);
  assert.match(help.stdout, /depth, width, heads and vocabulary/);
});

test('npm run grow: bad invocations give a one-line error, exit 2, no stack, nothing written', async (t) => {
  const { dir, ck } = await imported(t);
  const out = join(dir, 'never');
  const cases: [string[], RegExp][] = [
    [['--qkv-tokens', '32'], /^error: cannot shrink qkv from 48 to 32 tokens[^\n]*\n$/],
    [[], /^error: nothing to grow: the target equals the current token counts[^\n]*\n$/],
    [['--ffn-tokens', '1.5'], /^error: --ffn-tokens must be an integer ≥ 1, got 1\.5\n$/],
    [['--ffn-tokens', '0'], /^error: --ffn-tokens must be an integer ≥ 1, got 0\n$/],
    [['--ffn-tokens', '128', '--tau', 'sometimes'], /^error: --tau must be keep or recompute[^\n]*\n$/],
  ];
  for (const [args, pattern] of cases) {
    const r = npmRun('grow', ['--checkpoint', ck, '--out', out, ...args]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, pattern);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
    assert.equal(r.stdout, '');
    assert.ok(!existsSync(out), `${args.join(' ')}: nothing written`);
  }
  const unknown = npmRun('grow', ['--checkpoint', ck, '--out', out, '--hidden-size', '128']);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /^error: Unknown option '--hidden-size'/);
});

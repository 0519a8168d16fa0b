import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import test from 'node:test';
import { FIXTURES, tempDir } from '../helpers.ts';

const ROOT = resolve(import.meta.dirname, '../..');

/** Runs `npm run <script> -- args` from the project root, as the README tells users to. */
function npmRun(script: string, args: string[]) {
  const r = spawnSync('npm', ['run', '--silent', script, '--', ...args], { cwd: ROOT, encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('npm run import, then npm run export: the commands of the README', async (t) => {
  const dir = tempDir(t);
  const imp = npmRun('import', [
    '--from',
    join(FIXTURES, 'official-tiny/checkpoint'),
    '--out',
    join(dir, 'ckpt'),
  ]);
  assert.equal(imp.code, 0, imp.stderr);
  assert.match(
    imp.stdout,
    /imported .* 2 layers, hidden 64, 4 heads, tokens qkv\/proj\/ffn 48\/40\/96, vocab 512/,
  );
  assert.match(imp.stderr, /\[import .*s\] tensor \d+\/23/);
  const exp = npmRun('export', ['--checkpoint', join(dir, 'ckpt'), '--out', join(dir, 'onnx')]);
  assert.equal(exp.code, 0, exp.stderr);
  for (const f of ['model.onnx', 'manifest.json']) assert.ok(existsSync(join(dir, 'onnx', f)), f);
  const manifest = JSON.parse(readFileSync(join(dir, 'onnx', 'manifest.json'), 'utf8'));
  assert.equal(manifest.format, 'tokenformer-export');
  assert.equal(manifest.source.step, 0);
});

test('bad arguments and bad inputs: a one-line error, no stack trace, non-zero exit', (t) => {
  const dir = tempDir(t);
  const noArgs = npmRun('import', []);
  assert.equal(noArgs.code, 2);
  assert.match(noArgs.stderr, /^error: --from is required\nusage: npm run import -- --from DIR --out DIR\n$/);
  const unknown = npmRun('export', ['--checkpoint', dir, '--out', dir, '--bogus']);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /error: Unknown option '--bogus'/);
  const missing = npmRun('export', ['--checkpoint', join(dir, 'none'), '--out', join(dir, 'o')]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /error: cannot read .*none\/config.json/);
  assert.doesNotMatch(missing.stderr, /\n\s+at /);
  assert.ok(!existsSync(join(dir, 'o')), 'nothing written on failure');
  const badExt = npmRun('export', ['--checkpoint', dir, '--out', dir, '--external-data', 'sometimes']);
  assert.equal(badExt.code, 2);
  assert.match(badExt.stderr, /--external-data must be auto, always or never, got sometimes/);
});

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

test('numeric and enum flags are checked by the command line table: one line naming flag and value, exit 2', () => {
  // As real processes: the check happens before any work (no archive, no GPU probe, no checkpoint read).
  const cases: [string, string[], string][] = [
    ['bundle', ['--out', 'never-written', '--split-mib', '0'], '--split-mib must be an integer ≥ 1, got 0'],
    ['bundle', ['--out', 'never-written', '--format', 'zip'], '--format must be gz or xz, got zip'],
    ['gpu-check', ['--budget-s', 'soon'], '--budget-s must be a number > 0, got soon'],
    ['gpu-check', ['--device', 'tpu'], '--device must be cuda or cpu, got tpu'],
    [
      'export',
      ['--checkpoint', 'x', '--out', 'y', '--quantize', 'int8', '--accuracy-level', '5'],
      '--accuracy-level must be an integer ≥ 0 and ≤ 4, got 5',
    ],
  ];
  for (const [script, args, message] of cases) {
    const r = spawnSync(process.execPath, ['--import', 'tsx', `scripts/${script}.ts`, ...args], {
      cwd: ROOT,
      encoding: 'utf8',
    });
    assert.equal(r.status, 2, `${script} ${args.join(' ')}: ${r.stderr}`);
    assert.equal(r.stderr, `error: ${message}\n`);
  }
  assert.ok(!existsSync(join(ROOT, 'never-written')));
});

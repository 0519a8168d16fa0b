import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import test from 'node:test';
import { ROOT } from '../../scripts/harness/server.ts';
import { cudaProblem } from '../../src/runtime/cuda.ts';

/** `npm run gpu:check` end to end with tiny shapes: every part but PyTorch runs on the CPU here. */
function gpuCheck(args: string[]) {
  const r = spawnSync(
    'npm',
    ['run', '--silent', 'gpu:check', '--', '--quick', '--json', '--budget-s', '400', ...args],
    {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 600_000,
      maxBuffer: 16 * 2 ** 20,
    },
  );
  assert.equal(r.status, 0, r.stderr);
  return { report: JSON.parse(r.stdout) as Record<string, Record<string, unknown>>, stderr: r.stderr };
}

test('gpu:check --device cpu --quick: every engine, server and training part runs and reports', () => {
  const { report, stderr } = gpuCheck(['--device', 'cpu', '--skip-torch']);
  assert.match(stderr, /\[gpu-check .*s\] decode batch 4/, 'progress on stderr');
  for (const part of [
    'device_outputs',
    'parity_fixture',
    'model',
    'parity_model',
    'placement',
    'prefill',
    'served',
    'train',
  ]) {
    assert.equal(report[part]!.status, 'ok', `${part}: ${JSON.stringify(report[part])}`);
  }
  const fixture = report.parity_fixture as { fp32_max_abs_diff: number; fp16_max_abs_diff: number };
  assert.equal(fixture.fp32_max_abs_diff, 0, 'CPU against CPU');
  assert.ok(fixture.fp16_max_abs_diff > 0 && fixture.fp16_max_abs_diff <= 3e-2);
  const decode = report.decode as Record<string, { status: string; decode_tok_s: number }>;
  assert.deepEqual(Object.keys(decode), ['batch1', 'batch4']);
  for (const d of Object.values(decode)) assert.ok(d.status === 'ok' && d.decode_tok_s > 0);
  assert.ok((report.served as { completion_tokens: number }).completion_tokens > 0);
  assert.ok((report.train as { tok_s: number }).tok_s > 0);
  const placement = report.placement as { not_on_expected: string[]; by_op: Record<string, unknown> };
  assert.deepEqual(placement.not_on_expected, []);
  assert.ok('MatMul' in placement.by_op);
  assert.equal((report.device_outputs as { location: string }).location, 'cpu');
  assert.equal((report.torch as Record<string, { status: string }>).train!.status, 'skipped');
});

test('gpu:check --device cuda without a usable GPU: each GPU part is skipped with the reason', (t) => {
  const problem = cudaProblem();
  if (!problem) return t.skip('a usable CUDA install is present');
  const { report } = gpuCheck(['--device', 'cuda']);
  assert.equal((report.cuda as { problem: string }).problem, problem);
  for (const part of ['parity_fixture', 'prefill', 'served', 'train']) {
    assert.deepEqual(report[part], { status: 'skipped', reason: problem });
  }
  assert.ok('libraries' in report.cuda!);
});

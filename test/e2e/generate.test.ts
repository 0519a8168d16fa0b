import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { resolve } from 'node:path';
import test from 'node:test';
import { loadCheckpoint } from '../../src/model/checkpoint.ts';

const ROOT = resolve(import.meta.dirname, '../..');

function npmRun(script: string, args: string[]) {
  return spawnSync('npm', ['run', '--silent', script, '--', ...args], { cwd: ROOT, encoding: 'utf8' });
}

test('npm run generate continues a prompt with the shipped model, without a server', () => {
  const args = ['--prompt', 'The President', '--temperature', '0', '--max-tokens', '12', '--device', 'cpu'];
  const a = npmRun('generate', args);
  assert.equal(a.status, 0, a.stderr);
  assert.ok(a.stdout.trim().length > 0, 'text on stdout');
  assert.match(a.stderr, /\[generate .*\] \d+ prompt tokens, 12 generated, finish reason length/);
  const b = npmRun('generate', args);
  assert.equal(b.stdout, a.stdout, 'greedy is deterministic');
  const bad = npmRun('generate', ['--prompt', 'x', '--temperature', 'hot']);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /^error: --temperature must be a number ≥ 0, got hot\n/);
  const noModel = npmRun('generate', ['--prompt', 'x', '--model', 'no-such-model']);
  assert.equal(noModel.status, 1);
  assert.match(noModel.stderr, /^error: no model no-such-model/);
});

test('the shipped models record their tokenizer checksum (loading prints no warning)', () => {
  for (const m of ['default', 'default-grown']) {
    const warnings: string[] = [];
    const ck = loadCheckpoint(resolve(ROOT, 'models', m), { onWarning: (w) => warnings.push(w) });
    assert.match(ck.meta.tokenizer?.sha256 ?? '', /^[0-9a-f]{64}$/, m);
    assert.equal(warnings.length, 0, warnings.join('\n'));
  }
});

test('serve on a port in use: a one-line error, exit 1', async () => {
  const blocker = createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
  const port = (blocker.address() as { port: number }).port;
  try {
    const r = spawnSync(
      process.execPath,
      ['--import', 'tsx', 'scripts/serve.ts', '--model', 'default', '--port', String(port)],
      {
        cwd: ROOT,
        encoding: 'utf8',
        timeout: 60_000,
      },
    );
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`^error: cannot listen on 127.0.0.1:${port}: the address is in use`));
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  } finally {
    blocker.close();
  }
});

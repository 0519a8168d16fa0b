import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import test from 'node:test';
import { ROOT, ServerProcess } from '../../scripts/harness/server.ts';
import { tempDir } from '../helpers.ts';

/**
 * The offline bundle as an air-gapped host sees it: built by `npm run bundle`, unpacked with tar
 * into an empty folder, served by its own `./serve` with an empty environment (no PATH, so no
 * system Node or npm), answering a completion.
 */
test('a CPU bundle unpacks into an empty folder and serves a completion with env -i', async (t) => {
  if (process.platform !== 'linux' || process.arch !== 'x64') return t.skip('bundles are Linux x64');
  const dir = tempDir(t, 'tf-bundle-');
  const out = join(dir, 'out');
  const b = spawnSync(
    'npm',
    ['run', '--silent', 'bundle', '--', '--out', out, '--models', 'default', '--split-mib', '40'],
    {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 600_000,
    },
  );
  assert.equal(b.status, 0, b.stderr);
  assert.match(b.stderr, /compressing \(gz\): \d+%/, 'progress is shown');
  const name = 'tokenformer-linux-x64-cpu.tar.gz';
  const parts = readdirSync(out).filter((f) => f.startsWith(`${name}.part-`));
  assert.ok(parts.length >= 2, `split into ${parts.length} parts`);
  for (const p of parts) assert.ok(statSync(join(out, p)).size <= 40 * 2 ** 20);
  assert.ok(existsSync(join(out, 'SHA256SUMS')) && existsSync(join(out, 'JOIN.sh')));
  const joined = spawnSync('sh', ['JOIN.sh'], { cwd: out, encoding: 'utf8' });
  assert.equal(joined.status, 0, joined.stderr);
  assert.match(joined.stdout, new RegExp(`${name.replaceAll('.', '\\.')}: OK`));

  const listing = spawnSync('tar', ['-tzf', join(out, name)], {
    encoding: 'utf8',
    maxBuffer: 64 * 2 ** 20,
  }).stdout;
  assert.ok(!/libonnxruntime_providers_/.test(listing), 'a CPU bundle carries no CUDA provider');
  assert.ok(!/napi-v6\/(darwin|win32|linux\/arm64)/.test(listing), 'only Linux x64 natives');
  assert.ok(!/node_modules\/(typescript|@biomejs|fast-check|openai)\//.test(listing), 'no dev dependencies');

  const host = join(dir, 'host');
  mkdirSync(host);
  assert.equal(spawnSync('tar', ['-xzf', join(out, name), '-C', host]).status, 0);
  const bundle = join(host, 'tokenformer-linux-x64-cpu');
  assert.match(readFileSync(join(bundle, 'README.txt'), 'utf8'), /\.\/serve --model default/);
  const server = await ServerProcess.start(['--model', 'default', '--max-sequences', '2'], {
    launcher: join(bundle, 'serve'),
    cwd: host,
    env: {},
  });
  try {
    const r = await fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'The President', max_tokens: 5, temperature: 0 }),
    });
    assert.equal(r.status, 200);
    const body = (await r.json()) as { choices: { text: string }[]; usage: { completion_tokens: number } };
    assert.equal(body.usage.completion_tokens, 5);
    assert.ok(body.choices[0]!.text.length > 0);
  } finally {
    assert.equal(await server.stop(), 0);
  }
  assert.ok(existsSync(join(bundle, 'app/.cache/exports')), 'the first-use export went inside the bundle');
});

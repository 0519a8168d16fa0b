import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import test from 'node:test';
import {
  extractProvider,
  installCudaProvider,
  providerTarball,
  TARBALL_NAME,
  verifiedFile,
} from '../../scripts/cuda/install.ts';
import { CUDA_PROVIDER_FILES } from '../../src/runtime/cuda.ts';
import { tempDir } from '../helpers.ts';

const ROOT = resolve(import.meta.dirname, '../..');
/** The real provider package, when a developer has run setup:cuda here (CI never downloads it). */
const CACHED = join(ROOT, '.cache/cuda-provider', TARBALL_NAME);
const quiet = () => {};

function fakeTarball(dir: string): string {
  const lib = join(dir, 'src/package/Plugins/Linux/x64');
  mkdirSync(lib, { recursive: true });
  for (const f of CUDA_PROVIDER_FILES) writeFileSync(join(lib, f), 'not the real library');
  const tgz = join(dir, 'fake.tgz');
  assert.equal(spawnSync('tar', ['-czf', tgz, '-C', join(dir, 'src'), 'package']).status, 0);
  return tgz;
}

test('a tarball that is not the recorded package is refused, by integrity and by file hashes', (t) => {
  const dir = tempDir(t);
  const tgz = fakeTarball(dir);
  assert.throws(() => providerTarball(dir, quiet, tgz), /integrity .* does not match the recorded/);
  assert.throws(() => extractProvider(tgz, join(dir, 'x')), /does not match its recorded size and SHA-256/);
  assert.deepEqual(readdirSync(join(dir, 'x')), [], 'nothing extracted is left behind');
  assert.throws(() => providerTarball(dir, quiet, join(dir, 'absent.tgz')), /does not exist/);
});

test('setup:cuda from the cached package: installs verified files, is idempotent, repairs a bad file', (t) => {
  if (!existsSync(CACHED))
    return t.skip(`${TARBALL_NAME} is not cached here (npm run setup:cuda fetches it)`);
  const dir = tempDir(t);
  const target = join(dir, 'ort');
  mkdirSync(target);
  const first = installCudaProvider({ cacheDir: dir, tarball: CACHED, log: quiet, targetDir: target });
  assert.deepEqual(first.installed, [...CUDA_PROVIDER_FILES]);
  for (const f of CUDA_PROVIDER_FILES) assert.ok(verifiedFile(join(target, f), f), f);
  const again = installCudaProvider({ cacheDir: dir, tarball: CACHED, log: quiet, targetDir: target });
  assert.deepEqual(again.installed, []);
  writeFileSync(join(target, 'libonnxruntime_providers_shared.so'), 'truncated');
  const repaired = installCudaProvider({ cacheDir: dir, tarball: CACHED, log: quiet, targetDir: target });
  assert.deepEqual(repaired.installed, ['libonnxruntime_providers_shared.so']);
  assert.deepEqual(readdirSync(target).sort(), [...CUDA_PROVIDER_FILES].sort(), 'no temporary files left');
});

test('serve and train with --device cuda and no usable GPU stop at start with one line', (t) => {
  const r = spawnSync(
    process.execPath,
    ['--import', 'tsx', 'scripts/serve.ts', '--model', 'default', '--device', 'cuda', '--port', '0'],
    {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 60_000,
    },
  );
  if (r.status === null || (r.status === 0 && !r.stderr)) return t.skip('a usable CUDA device is present');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^error: --device cuda: [^\n]+\n$/);
  assert.equal(r.stdout, '');
  const dir = tempDir(t);
  const train = spawnSync(
    process.execPath,
    [
      '--import',
      'tsx',
      'scripts/train.ts',
      '--out',
      join(dir, 'run'),
      '--layers',
      '1',
      '--hidden',
      '16',
      '--heads',
      '2',
      '--qkv-tokens',
      '8',
      '--proj-tokens',
      '8',
      '--ffn-tokens',
      '8',
      '--vocab-size',
      '300',
      '--steps',
      '1',
      '--batch-size',
      '1',
      '--seq-len',
      '8',
      '--lr',
      '1e-3',
      '--device',
      'cuda',
    ],
    { cwd: ROOT, encoding: 'utf8', timeout: 60_000 },
  );
  assert.equal(train.status, 1);
  assert.match(train.stderr, /^error: --device cuda: [^\n]+\n$/);
  assert.ok(!existsSync(join(dir, 'run')), 'nothing written');
});

import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { CUDA_PROVIDER_FILES, ortBinaryDir } from '../../src/runtime/cuda.ts';
import { fail } from '../../src/util/errors.ts';
import { fileSha256 } from '../../src/util/files.ts';
import { CUDA_PROVIDER_PACKAGE as PKG } from './provider-package.ts';

/**
 * Installs the CUDA provider from the npm registry into onnxruntime-node's native folder:
 * `npm pack` of the recorded package into a cache (fetched once, on request only), its npm
 * integrity checked, the three libraries extracted, each checked against its recorded SHA-256,
 * then renamed into place. Files already there with the right hashes are left alone.
 */

export type ProviderFile = (typeof CUDA_PROVIDER_FILES)[number];

export const TARBALL_NAME = `${PKG.name}-${PKG.version}.tgz`;

export function requireLinuxX64(what: string): void {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    fail(
      'TF_ERR_BAD_ARGS',
      `${what} supports Linux x64 only (this is ${process.platform} ${process.arch}): ` +
        `${PKG.name} holds Linux x64 CUDA libraries`,
    );
  }
}

/** The installed onnxruntime-node must be the version the providers were built for. */
function checkCoreVersion(): void {
  const require = createRequire(import.meta.url);
  const pkgPath = require.resolve('onnxruntime-node/package.json');
  const version = (JSON.parse(readFileSync(pkgPath, 'utf8')) as { version: string }).version;
  if (version !== PKG.onnxruntime) {
    fail(
      'TF_ERR_RUNTIME',
      `onnxruntime-node ${version} is installed but the CUDA provider is built for ${PKG.onnxruntime}: ` +
        'run ONNXRUNTIME_NODE_INSTALL=skip npm ci',
    );
  }
}

function sha512Integrity(path: string): string {
  return `sha512-${createHash('sha512').update(readFileSync(path)).digest('base64')}`;
}

/** True when `path` holds exactly the recorded bytes of provider file `name`. */
export function verifiedFile(path: string, name: ProviderFile): boolean {
  const want = PKG.files[name];
  return existsSync(path) && statSync(path).size === want.bytes && fileSha256(path) === want.sha256;
}

/** The cached tarball, downloaded with `npm pack` when absent; its integrity checked either way. */
export function providerTarball(cacheDir: string, log: (m: string) => void, tarball?: string): string {
  const path = tarball ? resolve(tarball) : join(resolve(cacheDir), TARBALL_NAME);
  if (!existsSync(path)) {
    if (tarball) fail('TF_ERR_NOT_FOUND', `--tarball ${tarball} does not exist`);
    mkdirSync(dirname(path), { recursive: true });
    log(
      `downloading ${PKG.name}@${PKG.version} (${(PKG.tarballBytes / 1e6).toFixed(0)} MB) from the npm registry…`,
    );
    const r = spawnSync(
      'npm',
      ['pack', `${PKG.name}@${PKG.version}`, '--pack-destination', dirname(path), '--silent'],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 30 * 60_000 },
    );
    if (r.error || r.status !== 0 || !existsSync(path)) {
      const why = r.error?.message ?? r.stderr.trim().split('\n').pop() ?? `exit ${r.status}`;
      fail('TF_ERR_RUNTIME', `npm pack ${PKG.name}@${PKG.version} failed: ${why}`);
    }
  }
  log(`checking ${path}`);
  const integrity = sha512Integrity(path);
  if (integrity !== PKG.integrity) {
    fail(
      'TF_ERR_RUNTIME',
      `${path}: integrity ${integrity.slice(0, 24)}… does not match the recorded ${PKG.integrity.slice(0, 24)}…; ` +
        'delete it and run again',
    );
  }
  return path;
}

/** Extracts the provider files from the tarball into a fresh temporary folder and verifies them. */
export function extractProvider(
  tgz: string,
  tmpParent: string,
): { dir: string; files: Map<ProviderFile, string> } {
  mkdirSync(tmpParent, { recursive: true });
  const dir = mkdtempSync(join(tmpParent, '.provider-'));
  const members = CUDA_PROVIDER_FILES.map((f) => `${PKG.folder}/${f}`);
  const r = spawnSync('tar', ['-xzf', tgz, '-C', dir, ...members], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    fail('TF_ERR_RUNTIME', `tar could not extract ${tgz}: ${r.error?.message ?? r.stderr.trim()}`);
  }
  const files = new Map<ProviderFile, string>();
  for (const name of CUDA_PROVIDER_FILES) {
    const path = join(dir, PKG.folder, name);
    if (!verifiedFile(path, name)) {
      rmSync(dir, { recursive: true, force: true });
      fail('TF_ERR_RUNTIME', `${name} in ${tgz} does not match its recorded size and SHA-256`);
    }
    files.set(name, path);
  }
  return { dir, files };
}

export interface InstallResult {
  dir: string;
  installed: ProviderFile[];
  alreadyPresent: ProviderFile[];
}

/**
 * Makes onnxruntime-node's folder hold the three verified provider libraries; idempotent.
 * `tarball` installs from a given copy of the package instead of the cache/registry.
 */
export function installCudaProvider(opts: {
  cacheDir: string;
  tarball?: string;
  log: (m: string) => void;
  /** Where to install (default: onnxruntime-node's native folder). */
  targetDir?: string;
}): InstallResult {
  requireLinuxX64('npm run setup:cuda');
  checkCoreVersion();
  const dir = opts.targetDir ?? ortBinaryDir();
  const alreadyPresent = CUDA_PROVIDER_FILES.filter((f) => verifiedFile(join(dir, f), f));
  const needed = CUDA_PROVIDER_FILES.filter((f) => !alreadyPresent.includes(f));
  if (needed.length === 0) return { dir, installed: [], alreadyPresent };
  const tgz = providerTarball(opts.cacheDir, opts.log, opts.tarball);
  opts.log(`extracting ${needed.join(', ')}`);
  const extracted = extractProvider(tgz, opts.cacheDir);
  try {
    for (const name of needed) {
      // Copy beside the target, then rename: a reader never sees half a library.
      const tmp = join(dir, `.${name}.${process.pid}.tmp`);
      copyFileSync(extracted.files.get(name)!, tmp);
      renameSync(tmp, join(dir, name));
    }
  } finally {
    rmSync(extracted.dir, { recursive: true, force: true });
  }
  return { dir, installed: needed, alreadyPresent };
}

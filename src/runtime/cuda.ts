import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { delimiter, dirname, join } from 'node:path';

/**
 * What the CUDA execution provider needs on this host, found without onnxruntime: its three
 * provider libraries beside onnxruntime-node's core, and the CUDA libraries they load. Session
 * creation with a missing piece throws a long native error (and prints its own log lines), so
 * callers check here first and say in one line what is missing and how to fix it.
 */

/** Installed by `npm run setup:cuda` beside onnxruntime-node's `libonnxruntime.so.1`. */
export const CUDA_PROVIDER_FILES = [
  'libonnxruntime_providers_cuda.so',
  'libonnxruntime_providers_shared.so',
  'libonnxruntime_providers_tensorrt.so',
] as const;

/** Linked (NEEDED) by the provider, except libcudnn.so.9, which it opens at run time. */
export const CUDA_LIBRARIES = [
  'libcuda.so.1',
  'libcudart.so.13',
  'libcublas.so.13',
  'libcublasLt.so.13',
  'libcurand.so.10',
  'libcudnn.so.9',
] as const;

/** onnxruntime-node's native folder for this platform (where providers must live). */
export function ortBinaryDir(): string {
  const require = createRequire(import.meta.url);
  const pkg = dirname(require.resolve('onnxruntime-node/package.json'));
  return join(pkg, 'bin', 'napi-v6', process.platform, process.arch);
}

/**
 * Folders of CUDA libraries from pip wheels (a PyTorch cu13x environment): `nvidia/cu13/lib`,
 * `nvidia/cudnn/lib` and the other `nvidia/*\/lib` under every site-packages python3 reports.
 */
export function pipCudaLibraryDirs(python = 'python3'): string[] {
  const r = spawnSync(
    python,
    [
      '-c',
      'import site, sysconfig\n' +
        'p = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]\n' +
        'p += getattr(site, "getsitepackages", lambda: [])()\n' +
        'p.append(site.getusersitepackages())\n' +
        'print("\\n".join(p))',
    ],
    { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'ignore'] },
  );
  if (r.status !== 0 || !r.stdout) return [];
  const dirs: string[] = [];
  const preferred = ['cu13', 'cudnn'];
  for (const site of new Set(r.stdout.split('\n').filter(Boolean))) {
    const nvidia = join(site, 'nvidia');
    if (!existsSync(nvidia)) continue;
    const names = readdirSync(nvidia).sort(
      (a, b) => (preferred.indexOf(a) + 1 || 99) - (preferred.indexOf(b) + 1 || 99),
    );
    for (const name of names) {
      const lib = join(nvidia, name, 'lib');
      if (existsSync(lib) && !dirs.includes(lib)) dirs.push(lib);
    }
  }
  return dirs;
}

export interface LibraryProbe {
  name: string;
  /** The file the dynamic loader opened, or null when it could not be loaded. */
  path: string | null;
  /** The loader's reason when it could not. */
  error?: string;
}

/**
 * Asks the dynamic loader itself (dlopen in a child process, with `ldLibraryPath` in its
 * environment) which of `names` load and from where; a child because a loaded libcuda cannot
 * be unloaded and LD_LIBRARY_PATH is read once at process start.
 */
export function probeLibraries(
  names: readonly string[],
  ldLibraryPath = process.env.LD_LIBRARY_PATH ?? '',
): LibraryProbe[] {
  const script = `
const out = [];
for (const name of JSON.parse(process.argv[1])) {
  try { process.dlopen({ exports: {} }, name); out.push({ name, path: '' }); }
  catch (e) {
    const m = String(e && e.message);
    // A library that loaded but is not a Node addon still loaded: only loader errors count.
    if (/self-register|napi_register|Module did not/.test(m)) out.push({ name, path: '' });
    else out.push({ name, path: null, error: m.split('\\n')[0] });
  }
}
process.stdout.write(JSON.stringify(out));`;
  const r = spawnSync(process.execPath, ['-e', script, JSON.stringify(names)], {
    encoding: 'utf8',
    timeout: 30_000,
    env: { ...process.env, LD_LIBRARY_PATH: ldLibraryPath },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  try {
    const found = JSON.parse(r.stdout) as LibraryProbe[];
    for (const f of found) if (f.path === '') f.path = locateLibrary(f.name, ldLibraryPath);
    return found;
  } catch {
    return names.map((name) => ({ name, path: null, error: `probe failed: ${r.stderr.split('\n')[0]}` }));
  }
}

/**
 * Where the loader found `name` (Node unloads a library that is not an addon, so /proc/self/maps
 * no longer shows it): the first LD_LIBRARY_PATH folder holding it, else ld.so's cache.
 */
function locateLibrary(name: string, ldLibraryPath: string): string {
  for (const dir of ldLibraryPath.split(delimiter).filter(Boolean)) {
    if (existsSync(join(dir, name))) return join(dir, name);
  }
  const r = spawnSync('/sbin/ldconfig', ['-p'], { encoding: 'utf8', timeout: 10_000 });
  const line = (r.stdout ?? '').split('\n').find((l) => l.trim().startsWith(`${name} `));
  return line?.split('=> ')[1]?.trim() ?? name;
}

export interface CudaReadiness {
  providerDir: string;
  /** Provider files absent from `providerDir` (run `npm run setup:cuda`). */
  missingProviderFiles: string[];
  libraries: LibraryProbe[];
  /** CUDA libraries the loader cannot find with the current LD_LIBRARY_PATH. */
  missingLibraries: string[];
  /** pip-wheel folders that would supply missing libraries (not yet on LD_LIBRARY_PATH). */
  suggestedLibraryDirs: string[];
  ready: boolean;
}

let cached: CudaReadiness | undefined;

/** Checks the provider files and CUDA libraries (once per process: the answer cannot change). */
export function cudaReadiness(opts: { refresh?: boolean } = {}): CudaReadiness {
  if (cached && !opts.refresh) return cached;
  const providerDir = ortBinaryDir();
  const supported = process.platform === 'linux' && process.arch === 'x64';
  const missingProviderFiles = CUDA_PROVIDER_FILES.filter((f) => !existsSync(join(providerDir, f)));
  const libraries = supported ? probeLibraries(CUDA_LIBRARIES) : [];
  const missingLibraries = supported
    ? libraries.filter((l) => l.path === null).map((l) => l.name)
    : [...CUDA_LIBRARIES];
  const current = (process.env.LD_LIBRARY_PATH ?? '').split(delimiter).filter(Boolean);
  const suggestedLibraryDirs =
    missingLibraries.length && supported ? pipCudaLibraryDirs().filter((d) => !current.includes(d)) : [];
  cached = {
    providerDir,
    missingProviderFiles,
    libraries,
    missingLibraries,
    suggestedLibraryDirs,
    ready: supported && missingProviderFiles.length === 0 && missingLibraries.length === 0,
  };
  return cached;
}

/** The LD_LIBRARY_PATH that adds `dirs` in front of the current one. */
export function libraryPathWith(dirs: readonly string[]): string {
  const current = (process.env.LD_LIBRARY_PATH ?? '').split(delimiter).filter(Boolean);
  return [...dirs, ...current.filter((d) => !dirs.includes(d))].join(delimiter);
}

/** One line naming what keeps CUDA from being used, or undefined when nothing is missing. */
export function cudaProblem(r: CudaReadiness = cudaReadiness()): string | undefined {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    return `the CUDA provider is built for Linux x64 only (this is ${process.platform} ${process.arch})`;
  }
  if (r.missingProviderFiles.length) {
    return `the CUDA provider is not installed (${r.missingProviderFiles[0]} missing): run npm run setup:cuda`;
  }
  if (r.missingLibraries.length) {
    const fix = r.suggestedLibraryDirs.length
      ? `export LD_LIBRARY_PATH=${libraryPathWith(r.suggestedLibraryDirs)}`
      : 'install CUDA 13 + cuDNN 9 (system packages, or the nvidia-* pip wheels of a PyTorch cu130 install) and add their lib folders to LD_LIBRARY_PATH';
    const driver = r.missingLibraries.includes('libcuda.so.1')
      ? ' (libcuda.so.1 comes with the NVIDIA driver)'
      : '';
    return `CUDA libraries not found: ${r.missingLibraries.join(', ')}${driver}; ${fix}`;
  }
  return undefined;
}

/** The first line of a native error, without onnxruntime's source locations. */
export function shortNativeError(message: string): string {
  const line =
    message
      .split('\n')
      .map((l) => l.trim())
      .find(Boolean) ?? message;
  return line
    .replace(/\s*\/[^\s:]+\.(?:cc|cpp|h):\d+\s*/g, ' ')
    .replace(/\s+/g, ' ')
    .slice(0, 300);
}

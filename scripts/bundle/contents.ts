import {
  chmodSync,
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { basename, join, relative, resolve, sep } from 'node:path';
import { MANIFEST_FILE } from '../../src/export/export.ts';
import { CONFIG_FILE } from '../../src/model/checkpoint.ts';
import { CUDA_PROVIDER_FILES } from '../../src/runtime/cuda.ts';
import { fail } from '../../src/util/errors.ts';
import type { ProviderFile } from '../cuda/install.ts';
import { parseArchs, type TrimReport, trimFatbin } from './fatbin.ts';

/**
 * What goes into an offline bundle, staged as a folder: the Node binary running this script, the
 * project's sources, its production dependencies (from package-lock.json, Linux x64 natives
 * only), the chosen models, the official-tiny fixture for gpu-check's parity, an optional
 * PyTorch anchor, the CUDA provider when asked (trimmed to some architectures when asked), and
 * the `serve` / `gpu-check` launchers. Nothing in it needs npm, a network or a system Node.
 */

export interface BundleSpec {
  root: string;
  models: string[];
  cuda: boolean;
  /** SM architectures kept in the CUDA provider (all when undefined). */
  cudaArch?: string;
  anchor?: string;
  fixture?: string;
  /** The provider's three verified files (from setup:cuda's folder or the package cache). */
  provider?: Map<ProviderFile, string>;
  log: (m: string) => void;
}

export interface StageReport {
  bytes: number;
  files: number;
  fatbin?: TrimReport;
}

const APP_FILES = ['package.json', 'package-lock.json', 'tsconfig.json', 'README.md'];
const APP_DIRS = ['src', 'scripts'];
const ORT_BIN = 'node_modules/onnxruntime-node/bin/napi-v6';

interface LockEntry {
  dev?: boolean;
}

/** The lock file's production packages that are installed here (platform-optional ones may not be). */
export function productionPackages(root: string): string[] {
  const lock = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, LockEntry>;
  };
  return Object.entries(lock.packages)
    .filter(([path, e]) => path !== '' && !e.dev && existsSync(join(root, path)))
    .map(([path]) => path);
}

/** Leaves out other platforms' onnxruntime natives and any CUDA provider (added on request). */
function keepDependencyFile(src: string, root: string): boolean {
  const rel = relative(root, src).split(sep).join('/');
  if (rel.startsWith(`${ORT_BIN}/`)) {
    const [platform, arch] = rel.slice(ORT_BIN.length + 1).split('/');
    if (platform !== 'linux' || (arch !== undefined && arch !== 'x64')) return false;
    if ((CUDA_PROVIDER_FILES as readonly string[]).includes(basename(rel))) return false;
  }
  return true;
}

function copyDependencies(root: string, app: string): void {
  for (const pkg of productionPackages(root)) {
    cpSync(join(root, pkg), join(app, pkg), {
      recursive: true,
      dereference: true,
      // Nested node_modules are lock entries of their own (copied when they are production ones).
      filter: (src) =>
        keepDependencyFile(src, root) &&
        !(src !== join(root, pkg) && basename(src) === 'node_modules' && statSync(src).isDirectory()),
    });
  }
}

function modelDir(root: string, name: string): string {
  const dir = existsSync(name) ? resolve(name) : join(root, 'models', name);
  if (!existsSync(join(dir, CONFIG_FILE)) && !existsSync(join(dir, MANIFEST_FILE))) {
    fail(
      'TF_ERR_NOT_FOUND',
      `--models: ${name} is neither a checkpoint nor an export directory (nor models/${name})`,
    );
  }
  return dir;
}

const LAUNCHER = (script: string, extra: string) => `#!/bin/sh
# ${script === 'serve' ? "Starts the server; takes npm run serve's flags (paths are relative to app/)." : 'Checks this host for the CUDA execution provider and measures it; --json for JSON.'}
# Uses the bundled Node; no npm, network or system Node needed.
case "$0" in */*) here=\${0%/*} ;; *) here=. ;; esac
here=$(cd "$here" && pwd) || exit 1
PATH=\${PATH:-/usr/local/bin:/usr/bin:/bin}
export PATH
node="$here/node/bin/node"
cd "$here/app" || exit 1
# CUDA bundles: add the CUDA libraries of pip wheels (a PyTorch cu13x install) to the loader path.
if [ -f ${ORT_BIN}/linux/x64/libonnxruntime_providers_cuda.so ]; then
  LD_LIBRARY_PATH=$("$node" --import tsx scripts/cuda-library-path.ts)
  export LD_LIBRARY_PATH
fi
exec "$node" --import tsx scripts/${script}.ts ${extra}"$@"
`;

function writeLauncher(path: string, text: string): void {
  writeFileSync(path, text);
  chmodSync(path, 0o755);
}

/** Fills `dir` (the bundle's top folder) with everything the bundle holds. */
export function stageBundle(dir: string, spec: BundleSpec): StageReport {
  const { root, log } = spec;
  const app = join(dir, 'app');
  mkdirSync(join(dir, 'node', 'bin'), { recursive: true });
  log(`node ${process.version} (${process.execPath})`);
  copyFileSync(process.execPath, join(dir, 'node', 'bin', 'node'));
  chmodSync(join(dir, 'node', 'bin', 'node'), 0o755);
  mkdirSync(app, { recursive: true });
  for (const f of APP_FILES) if (existsSync(join(root, f))) copyFileSync(join(root, f), join(app, f));
  for (const d of APP_DIRS) cpSync(join(root, d), join(app, d), { recursive: true });
  log('production dependencies (Linux x64)');
  copyDependencies(root, app);
  for (const name of spec.models) {
    const src = modelDir(root, name);
    log(`model ${basename(src)}`);
    cpSync(src, join(app, 'models', basename(src)), { recursive: true });
  }
  if (spec.fixture && existsSync(spec.fixture)) {
    cpSync(spec.fixture, join(app, 'fixtures', basename(spec.fixture)), { recursive: true });
  }
  let fatbin: TrimReport | undefined;
  if (spec.cuda) {
    if (!spec.provider) fail('TF_ERR_RUNTIME', 'a CUDA bundle needs the provider files');
    const target = join(app, ORT_BIN, 'linux', 'x64');
    for (const [name, src] of spec.provider) {
      if (name === 'libonnxruntime_providers_cuda.so' && spec.cudaArch) {
        const archs = parseArchs(spec.cudaArch);
        log(`trimming ${name} to ${archs.map((a) => `sm_${a}`).join(', ')}`);
        const elf = readFileSync(src);
        fatbin = trimFatbin(elf, archs);
        writeFileSync(join(target, name), elf);
      } else {
        copyFileSync(src, join(target, name));
      }
    }
  }
  let extra = '';
  if (spec.anchor) {
    log(`anchor ${spec.anchor}`);
    cpSync(spec.anchor, join(dir, 'anchor'), { recursive: true });
    extra = '--anchor "$here/anchor" ';
  }
  const fixtureArg =
    spec.fixture && existsSync(spec.fixture) ? `--fixture fixtures/${basename(spec.fixture)} ` : '';
  writeLauncher(join(dir, 'serve'), LAUNCHER('serve', ''));
  writeLauncher(join(dir, 'gpu-check'), LAUNCHER('gpu-check', extra + fixtureArg));
  writeFileSync(
    join(dir, 'README.txt'),
    [
      `TokenFormer serving bundle (${spec.cuda ? `CUDA${spec.cudaArch ? ` ${spec.cudaArch}` : ''}` : 'CPU'}), Linux x64.`,
      '',
      '  ./serve --model default --port 8080     start the server (npm run serve flags; paths relative to app/)',
      '  ./gpu-check --json                      CUDA provider, libraries, parity and speed as JSON',
      '',
      `Models: ${spec.models.join(', ') || '(none)'} (in app/models). Node ${process.version} in node/bin.`,
      'Needs: glibc 2.28+ and libstdc++ (any current Linux). The CUDA provider needs the NVIDIA driver',
      'and CUDA 13 + cuDNN 9 libraries; pip wheels of a PyTorch cu13x install are found automatically.',
      '',
    ].join('\n'),
  );
  return { ...measure(dir), ...(fatbin ? { fatbin } : {}) };
}

function measure(dir: string): { bytes: number; files: number } {
  let bytes = 0;
  let files = 0;
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile()) continue;
    bytes += statSync(join(e.parentPath, e.name)).size;
    files++;
  }
  return { bytes, files };
}

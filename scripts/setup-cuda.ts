import { cudaProblem, cudaReadiness, libraryPathWith } from '../src/runtime/cuda.ts';
import { type FlagSpec, helpText, parseCommandLine, progress, runMain } from '../src/util/cli.ts';
import { installCudaProvider } from './cuda/install.ts';
import { CUDA_PROVIDER_PACKAGE as PKG } from './cuda/provider-package.ts';

const USAGE = 'npm run setup:cuda [-- --cache-dir DIR] [--tarball PATH]';

const INTRO = `Linux x64: fetches the CUDA execution provider for the pinned onnxruntime-node from npm, checks
its integrity and each file's SHA-256, installs it next to onnxruntime's own binaries, then
reports which CUDA libraries the loader finds.`;

const FLAGS = {
  'cache-dir': {
    kind: 'string',
    arg: 'DIR',
    help: 'where the provider package is fetched to',
    default: '.cache/cuda-provider',
  },
  tarball: { kind: 'string', arg: 'PATH', help: 'install from this copy of the package instead of fetching' },
} as const satisfies Record<string, FlagSpec>;

runMain(async () => {
  const flags = parseCommandLine(USAGE, FLAGS);
  if (flags.help) return void console.log(helpText(USAGE, INTRO, FLAGS));
  const log = progress('setup:cuda');
  const r = installCudaProvider({
    cacheDir: flags['cache-dir'] ?? '.cache/cuda-provider',
    ...(flags.tarball ? { tarball: flags.tarball } : {}),
    log,
  });
  console.log(
    r.installed.length
      ? `installed ${r.installed.join(', ')} (${PKG.name}@${PKG.version}, SHA-256 verified) into ${r.dir}`
      : `the CUDA provider is already installed in ${r.dir} (SHA-256 verified)`,
  );
  const ready = cudaReadiness();
  console.log('CUDA libraries:');
  for (const l of ready.libraries) console.log(`  ${l.name.padEnd(20)} ${l.path ?? 'NOT FOUND'}`);
  const problem = cudaProblem(ready);
  if (!problem) return void console.log('ready: --device cuda can load the provider (a GPU is still needed)');
  console.log(`missing: ${ready.missingLibraries.join(', ')}`);
  if (ready.suggestedLibraryDirs.length) {
    console.log(
      `fix: found them in pip wheels; before starting node:\n  export LD_LIBRARY_PATH=${libraryPathWith(ready.suggestedLibraryDirs)}`,
    );
  } else {
    console.log(
      'fix: install the NVIDIA driver (libcuda.so.1) and CUDA 13 + cuDNN 9, or a PyTorch cu130 wheel set, then point\n' +
        '  LD_LIBRARY_PATH at their lib folders, e.g. for pip wheels:\n' +
        '  SP=$(python3 -c \'import sysconfig; print(sysconfig.get_paths()["purelib"])\')\n' +
        '  export LD_LIBRARY_PATH=$SP/nvidia/cu13/lib:$SP/nvidia/cudnn/lib:$LD_LIBRARY_PATH',
    );
  }
});

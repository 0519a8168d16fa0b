import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { CUDA_PROVIDER_FILES, ortBinaryDir } from '../src/runtime/cuda.ts';
import {
  type FlagSpec,
  helpText,
  parseCommandLine,
  progress,
  requireFlag,
  runMain,
} from '../src/util/cli.ts';
import { fail } from '../src/util/errors.ts';
import { splitArchive, writeArchive } from './bundle/archive.ts';
import { stageBundle } from './bundle/contents.ts';
import {
  extractProvider,
  type ProviderFile,
  providerTarball,
  requireLinuxX64,
  verifiedFile,
} from './cuda/install.ts';

const USAGE =
  'npm run bundle -- --out DIR [--cuda] [--cuda-arch sm_90[,sm_80]] [--models NAME,…] [--anchor DIR] ' +
  '[--split-mib N] [--format gz|xz] [--fixture DIR] [--cache-dir DIR]';

const INTRO = `Writes one archive for an air-gapped Linux x64 host: the Node binary running this command,
the sources, the production dependencies, the models, the official-tiny fixture and, with --cuda,
the CUDA provider. On the target: tar -xf, then ./serve and ./gpu-check.`;

const FLAGS = {
  out: { kind: 'string', arg: 'DIR', help: 'where the archive is written (required)' },
  cuda: {
    kind: 'boolean',
    help: "include the CUDA provider (setup:cuda's install, or fetched into --cache-dir)",
  },
  'cuda-arch': {
    kind: 'string',
    arg: 'sm_90[,sm_80]',
    help: "keep only these GPU architectures' device code in the provider (needs --cuda)",
    default: 'every architecture',
  },
  models: {
    kind: 'string',
    arg: 'NAME,…',
    help: 'models to include: names under models/ or directories',
    default: 'default',
  },
  anchor: { kind: 'string', arg: 'DIR', help: 'a PyTorch reference (e.g. ../shared/oracle) for ./gpu-check' },
  'split-mib': {
    kind: 'int',
    min: 1,
    help: 'cut the archive into parts of N MiB with SHA256SUMS and JOIN.sh',
    default: 'one file',
  },
  format: { kind: 'string', choices: ['gz', 'xz'], help: 'archive compression', default: 'gz' },
  fixture: {
    kind: 'string',
    arg: 'DIR',
    help: "the official-tiny fixture for gpu-check's parity",
    default: "the project's ../shared/fixtures/official-tiny",
  },
  'cache-dir': {
    kind: 'string',
    arg: 'DIR',
    help: 'where the CUDA provider package is fetched to',
    default: '.cache/cuda-provider',
  },
} as const satisfies Record<string, FlagSpec>;

const ROOT = resolve(import.meta.dirname, '..');
const MiB = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;

runMain(async () => {
  const flags = parseCommandLine(USAGE, FLAGS);
  if (flags.help) return void console.log(helpText(USAGE, INTRO, FLAGS));
  requireLinuxX64('npm run bundle');
  const out = resolve(requireFlag(USAGE, flags, 'out'));
  const format = flags.format ?? 'gz';
  const cuda = flags.cuda ?? false;
  const cacheDir = flags['cache-dir'] ?? '.cache/cuda-provider';
  if (flags['cuda-arch'] && !cuda) fail('TF_ERR_BAD_ARGS', `--cuda-arch needs --cuda\nusage: ${USAGE}`);
  const split = flags['split-mib'];
  if (flags.anchor && !existsSync(flags.anchor))
    fail('TF_ERR_NOT_FOUND', `--anchor ${flags.anchor} does not exist`);
  const fixture = resolve(flags.fixture ?? join(ROOT, '../shared/fixtures/official-tiny'));
  if (flags.fixture && !existsSync(fixture))
    fail('TF_ERR_NOT_FOUND', `--fixture ${flags.fixture} does not exist`);
  const models = (flags.models ?? 'default').split(',').filter(Boolean);
  const log = progress('bundle');
  const arch = flags['cuda-arch']?.replaceAll(',', '+');
  const name = `tokenformer-linux-x64-${cuda ? `cuda${arch ? `-${arch}` : ''}` : 'cpu'}`;

  mkdirSync(out, { recursive: true });
  const stageParent = join(out, `.stage-${process.pid}`);
  let extracted: string | undefined;
  // An interrupted bundle leaves nothing behind (the archive is renamed into place only when whole).
  const cleanUp = () => {
    rmSync(stageParent, { recursive: true, force: true });
    if (extracted) rmSync(extracted, { recursive: true, force: true });
    for (const f of readdirSync(out))
      if (f.endsWith(`.${process.pid}.tmp`)) rmSync(join(out, f), { force: true });
  };
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      cleanUp();
      process.exit(130);
    });
  }
  try {
    let provider: Map<ProviderFile, string> | undefined;
    if (cuda) {
      // setup:cuda's installed copy when it is intact, else the package itself (fetched on request).
      const dir = ortBinaryDir();
      if (CUDA_PROVIDER_FILES.every((f) => verifiedFile(join(dir, f), f))) {
        provider = new Map(CUDA_PROVIDER_FILES.map((f) => [f, join(dir, f)]));
      } else {
        const x = extractProvider(providerTarball(cacheDir, log), cacheDir);
        extracted = x.dir;
        provider = x.files;
      }
    }
    log(`staging ${name}`);
    const staged = stageBundle(join(stageParent, name), {
      root: ROOT,
      models,
      cuda,
      ...(flags['cuda-arch'] ? { cudaArch: flags['cuda-arch'] } : {}),
      ...(flags.anchor ? { anchor: resolve(flags.anchor) } : {}),
      ...(existsSync(fixture) ? { fixture } : {}),
      ...(provider ? { provider } : {}),
      log,
    });
    if (staged.fatbin) {
      const f = staged.fatbin;
      log(
        `fatbin: kept ${MiB(f.keptBytes)}, zeroed ${MiB(f.zeroedBytes)} (${Object.keys(f.architectures).join(', ')} present)`,
      );
    }
    log(`staged ${staged.files} files, ${MiB(staged.bytes)}`);
    const archive = await writeArchive({
      stageParent,
      name,
      outDir: out,
      format,
      stagedBytes: staged.bytes,
      log,
    });
    const size = statSync(archive).size;
    console.log(`wrote ${archive}: ${MiB(size)} (${MiB(staged.bytes)} unpacked)`);
    if (split) {
      const s = splitArchive(archive, split, log);
      console.log(`split into ${s.parts.length} parts + SHA256SUMS + JOIN.sh; on the target: ${s.join}`);
    }
    const file = `${name}.tar.${format}`;
    console.log(
      `on the target host: tar -xf ${file} && cd ${name} && ./serve --model ${models[0] ?? 'DIR'}   (./gpu-check --json)`,
    );
  } finally {
    cleanUp();
  }
});

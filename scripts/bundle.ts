import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { CUDA_PROVIDER_FILES, ortBinaryDir } from '../src/runtime/cuda.ts';
import { parseFlags, progress, requireFlag, runMain } from '../src/util/cli.ts';
import { fail } from '../src/util/errors.ts';
import { type ArchiveFormat, splitArchive, writeArchive } from './bundle/archive.ts';
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

const ROOT = resolve(import.meta.dirname, '..');
const MiB = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;

runMain(async () => {
  const flags = parseFlags(USAGE, {
    out: { type: 'string' },
    cuda: { type: 'boolean', default: false },
    'cuda-arch': { type: 'string' },
    models: { type: 'string', default: 'default' },
    anchor: { type: 'string' },
    'split-mib': { type: 'string' },
    format: { type: 'string', default: 'gz' },
    fixture: { type: 'string' },
    'cache-dir': { type: 'string', default: '.cache/cuda-provider' },
  });
  if (flags.help) return void console.log(USAGE);
  requireLinuxX64('npm run bundle');
  const out = resolve(requireFlag(USAGE, flags, 'out'));
  const format = flags.format as ArchiveFormat;
  if (format !== 'gz' && format !== 'xz')
    fail('TF_ERR_BAD_ARGS', `--format must be gz or xz, got ${format}\nusage: ${USAGE}`);
  if (flags['cuda-arch'] && !flags.cuda) fail('TF_ERR_BAD_ARGS', `--cuda-arch needs --cuda\nusage: ${USAGE}`);
  const split = flags['split-mib'] === undefined ? undefined : Number(flags['split-mib']);
  if (split !== undefined && !(Number.isInteger(split) && split >= 1)) {
    fail(
      'TF_ERR_BAD_ARGS',
      `--split-mib must be a positive integer, got ${flags['split-mib']}\nusage: ${USAGE}`,
    );
  }
  if (flags.anchor && !existsSync(flags.anchor))
    fail('TF_ERR_NOT_FOUND', `--anchor ${flags.anchor} does not exist`);
  const fixture = resolve(flags.fixture ?? join(ROOT, '../shared/fixtures/official-tiny'));
  if (flags.fixture && !existsSync(fixture))
    fail('TF_ERR_NOT_FOUND', `--fixture ${flags.fixture} does not exist`);
  const models = flags.models.split(',').filter(Boolean);
  const log = progress('bundle');
  const arch = flags['cuda-arch']?.replaceAll(',', '+');
  const name = `tokenformer-linux-x64-${flags.cuda ? `cuda${arch ? `-${arch}` : ''}` : 'cpu'}`;

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
    if (flags.cuda) {
      // setup:cuda's installed copy when it is intact, else the package itself (fetched on request).
      const dir = ortBinaryDir();
      if (CUDA_PROVIDER_FILES.every((f) => verifiedFile(join(dir, f), f))) {
        provider = new Map(CUDA_PROVIDER_FILES.map((f) => [f, join(dir, f)]));
      } else {
        const x = extractProvider(providerTarball(flags['cache-dir'], log), flags['cache-dir']);
        extracted = x.dir;
        provider = x.files;
      }
    }
    log(`staging ${name}`);
    const staged = stageBundle(join(stageParent, name), {
      root: ROOT,
      models,
      cuda: flags.cuda,
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

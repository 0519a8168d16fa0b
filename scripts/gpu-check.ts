import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { cudaProblem, cudaReadiness, libraryPathWith } from '../src/runtime/cuda.ts';
import { writeJsonAtomic } from '../src/util/atomic.ts';
import { type FlagSpec, helpText, parseCommandLine, progress, runMain } from '../src/util/cli.ts';
import { decode, deviceOutputs, parity, placement, prefill } from './gpu-check/engine.ts';
import { hostInfo, loadedCudaLibraries } from './gpu-check/host.ts';
import { type BuiltModels, buildFixture, buildRandomModel, FULL, QUICK } from './gpu-check/models.ts';
import { served } from './gpu-check/served.ts';
import { torchDecode, torchInfo, torchPrefill, torchTrain } from './gpu-check/torch.ts';
import { trainSpeed } from './gpu-check/train.ts';

const USAGE =
  'npm run gpu:check -- [--json] [--device cuda|cpu] [--quick] [--anchor DIR] [--fixture DIR] ' +
  '[--python PATH] [--budget-s N] [--out FILE] [--skip-torch]';

const INTRO = `Checks and measures the engine on a GPU: parity against CPU float32, provider placement, prefill,
decode, the served process, training and PyTorch eager on the same device, each part within its own
time limit inside --budget-s. Prints a summary, or one JSON report with --json.`;

const FLAGS = {
  json: { kind: 'boolean', help: 'print the report as JSON instead of a summary' },
  device: { kind: 'string', choices: ['cuda', 'cpu'], help: 'where the parts run', default: 'cuda' },
  quick: { kind: 'boolean', help: 'tiny shapes, so the command runs anywhere' },
  anchor: {
    kind: 'string',
    arg: 'DIR',
    help: 'the PyTorch reference for the torch parts',
    default: "the project's ../shared/oracle",
  },
  fixture: {
    kind: 'string',
    arg: 'DIR',
    help: 'the official-tiny fixture for parity',
    default: 'fixtures/official-tiny, else ../shared/fixtures/official-tiny',
  },
  python: { kind: 'string', arg: 'PATH', help: 'the python with torch', default: 'python3' },
  'budget-s': {
    kind: 'number',
    above: 0,
    arg: 'N',
    help: 'seconds for the whole run (up to 150 of them kept for the PyTorch parts)',
    default: '480',
  },
  out: { kind: 'string', arg: 'FILE', help: 'also write the JSON report here' },
  'skip-torch': { kind: 'boolean', help: 'skip the PyTorch parts' },
} as const satisfies Record<string, FlagSpec>;

const ROOT = resolve(import.meta.dirname, '..');
const CHILD = 'TOKENFORMER_GPU_CHECK_CHILD';

type Section = Record<string, unknown> & {
  status: 'ok' | 'skipped' | 'failed';
  reason?: string;
  seconds?: number;
};

runMain(async () => {
  const flags = parseCommandLine(USAGE, FLAGS);
  if (flags.help) return void console.log(helpText(USAGE, INTRO, FLAGS));
  const device = flags.device ?? 'cuda';
  const budget = flags['budget-s'] ?? 480;
  const python = flags.python ?? 'python3';

  // The loader reads LD_LIBRARY_PATH once: with CUDA libraries from pip wheels, start again with them on it.
  if (device === 'cuda' && !process.env[CHILD]) {
    const r = cudaReadiness();
    if (r.missingLibraries.length && r.suggestedLibraryDirs.length) {
      const child = spawnSync(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
        stdio: 'inherit',
        env: { ...process.env, [CHILD]: '1', LD_LIBRARY_PATH: libraryPathWith(r.suggestedLibraryDirs) },
      });
      process.exitCode = child.status ?? 1;
      return;
    }
  }

  const log = progress('gpu-check');
  const shapes = flags.quick ? QUICK : FULL;
  const started = Date.now();
  const end = started + budget * 1000;
  // Seconds kept back for the PyTorch parts (they run last): the engine parts may not spend them.
  let reserved = 0;
  const remaining = () => Math.max(0, (end - Date.now()) / 1000 - reserved);
  const problem = device === 'cuda' ? cudaProblem() : undefined;
  const anchor = resolve(flags.anchor ?? join(ROOT, '../shared/oracle'));
  const fixture = resolve(
    flags.fixture ??
      [join(ROOT, 'fixtures/official-tiny'), join(ROOT, '../shared/fixtures/official-tiny')].find(
        existsSync,
      ) ??
      'fixtures/official-tiny',
  );
  const work = mkdtempSync(join(tmpdir(), 'tokenformer-gpu-check-'));

  /** Runs one part within `limitS` (and the overall budget); failures and skips carry the reason. */
  async function part(
    name: string,
    limitS: number,
    fn: (deadline: number) => Promise<Record<string, unknown>>,
    needs?: string,
  ): Promise<Section> {
    if (needs) return { status: 'skipped', reason: needs };
    const left = remaining();
    if (left < 3) return { status: 'skipped', reason: `the ${budget} s budget was spent` };
    log(name);
    const t0 = Date.now();
    try {
      const r = await fn(t0 + Math.min(limitS, left) * 1000);
      return { status: 'ok', seconds: (Date.now() - t0) / 1000, ...r };
    } catch (err) {
      const reason = (err instanceof Error ? err.message : String(err)).split('\n')[0]!.slice(0, 400);
      log(`${name} failed: ${reason}`);
      return { status: 'failed', reason, seconds: (Date.now() - t0) / 1000 };
    }
  }

  const gpu = problem; // reason every device part is skipped, or undefined
  const report: Record<string, unknown> = {
    tool: 'tokenformer gpu-check',
    date: new Date().toISOString(),
    device,
    shapes: flags.quick ? 'quick' : 'official 150M',
    host: hostInfo(),
  };
  const readiness = cudaReadiness();
  report.cuda = {
    ready: device === 'cuda' ? !problem : false,
    problem: problem ?? null,
    provider_dir: readiness.providerDir,
    missing_provider_files: readiness.missingProviderFiles,
    libraries: readiness.libraries,
  };
  const torch = flags['skip-torch'] ? undefined : torchInfo(python);
  const torchMissing = flags['skip-torch']
    ? '--skip-torch'
    : torch!.error
      ? `python3 with torch not available (${torch!.error})`
      : device === 'cuda' && !torch!.cuda
        ? 'torch sees no CUDA device'
        : !existsSync(anchor)
          ? `no anchor at ${anchor} (--anchor)`
          : undefined;
  if (!torchMissing) reserved = Math.min(150, budget / 3);
  try {
    report.device_outputs = await part(
      'device outputs (gpu-buffer)',
      30,
      async () => ({ ...(await deviceOutputs(device)) }),
      gpu,
    );

    let tiny: { fp32: string; fp16: string } | undefined;
    report.parity_fixture = await part(
      'parity: official-tiny fixture',
      60,
      async () => {
        if (!existsSync(fixture)) throw new Error(`no fixture at ${fixture} (--fixture)`);
        tiny = await buildFixture(join(work, 'fixture'), fixture);
        return { fixture, ...(await parity(tiny, device, 512, 24)) };
      },
      gpu,
    );

    let model: BuiltModels | undefined;
    const built = await part(
      'random model of the measured shape (float32 + float16 exports)',
      240,
      async () => {
        model = await buildRandomModel(work, shapes, log);
        return { parameters: shapes.model };
      },
      gpu,
    );
    report.model = built;
    const needModel = gpu ?? (model ? undefined : `no model: ${built.reason ?? 'not built'}`);
    report.parity_model = await part(
      'parity: random model',
      60,
      async () => ({ ...(await parity(model!, device, shapes.model.vocab, shapes.parityTokens)) }),
      needModel,
    );
    report.placement = await part(
      'provider placement (profile)',
      60,
      async () => ({ ...(await placement(model!.fp16, device, shapes.model.vocab, work)) }),
      needModel,
    );
    report.cuda_libraries_loaded = loadedCudaLibraries();
    report.prefill = await part(
      `prefill ${shapes.prefillTokens} tokens (float16)`,
      45,
      async () => ({ ...(await prefill(model!.fp16, device, shapes.prefillTokens)) }),
      needModel,
    );
    const decodes: Record<string, Section> = {};
    for (const b of shapes.decodeBatches) {
      decodes[`batch${b}`] = await part(
        `decode batch ${b} (float16)`,
        b >= 64 ? 75 : 45,
        async (deadline) => ({
          ...(await decode(model!.fp16, device, {
            batch: b,
            prompt: shapes.decodePrompt,
            newTokens: shapes.decodeNew,
            deadline,
          })),
        }),
        needModel,
      );
    }
    report.decode = decodes;
    report.served = await part(
      `served: ${shapes.servedStreams} SSE streams`,
      90,
      async (deadline) => ({
        ...(await served(model!.fp16, device, {
          streams: shapes.servedStreams,
          prompt: shapes.decodePrompt,
          newTokens: shapes.decodeNew,
          vocab: shapes.model.vocab,
          deadline,
        })),
      }),
      needModel,
    );
    report.train = await part(
      `training ${shapes.train.batch}×${shapes.train.seq}`,
      75,
      async (deadline) => ({
        ...(await trainSpeed(model!.config, device, { ...shapes.train, deadline })),
      }),
      needModel,
    );

    // PyTorch eager on the same device, when python3 with torch (and CUDA for --device cuda) is here.
    reserved = 0;
    const t: Record<string, unknown> = { info: torch ?? null };
    for (const b of shapes.decodeBatches.filter((x) => x > 1)) {
      t[`decode_batch1_and_${b}`] = await part(
        `torch decode batch 1 + ${b}`,
        70,
        async (deadline) => torchDecode(python, anchor, shapes, device, b, (deadline - Date.now()) / 1000),
        torchMissing,
      );
    }
    t.prefill = await part(
      'torch prefill',
      45,
      async (deadline) => torchPrefill(python, anchor, shapes, device, (deadline - Date.now()) / 1000),
      torchMissing,
    );
    t.train = await part(
      'torch training',
      70,
      async (deadline) => torchTrain(python, anchor, shapes, device, (deadline - Date.now()) / 1000),
      torchMissing,
    );
    report.torch = t;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  report.total_seconds = (Date.now() - started) / 1000;
  if (flags.out) writeJsonAtomic(flags.out, report);
  if (flags.json) console.log(JSON.stringify(report, null, 2));
  else printSummary(report);
});

function printSummary(r: Record<string, unknown>): void {
  const show = (name: string, v: unknown) => {
    const s = v as Section | undefined;
    if (!s || typeof s !== 'object' || !('status' in s)) return;
    const { status, reason, seconds: _s, ...rest } = s;
    console.log(
      `${name.padEnd(22)} ${status}${reason ? ` (${reason})` : ''} ${status === 'ok' ? JSON.stringify(rest) : ''}`,
    );
  };
  const host = r.host as { gpus: { name: string; driver: string }[] | null };
  console.log(
    `gpu: ${host.gpus?.map((g) => `${g.name} (driver ${g.driver})`).join(', ') ?? 'none found'}; device ${String(r.device)}`,
  );
  for (const k of ['device_outputs', 'parity_fixture', 'parity_model', 'prefill', 'served', 'train'])
    show(k, r[k]);
  for (const [k, v] of Object.entries((r.decode as Record<string, unknown>) ?? {})) show(`decode ${k}`, v);
  for (const [k, v] of Object.entries((r.torch as Record<string, unknown>) ?? {})) show(`torch ${k}`, v);
  console.log(`total ${(r.total_seconds as number).toFixed(0)} s`);
}

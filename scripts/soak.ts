import { SERVE_DEFAULTS } from '../src/server/defaults.ts';
import { writeJsonAtomic } from '../src/util/atomic.ts';
import { type FlagSpec, helpText, parseCommandLine, progress, runMain } from '../src/util/cli.ts';
import { runSoak, type SoakOptions } from './soak/run.ts';
import { summaryText } from './soak/summary.ts';

const USAGE =
  'npm run soak -- [--models-dir DIR] [--from NAME] [--to NAME] [--corrupt-from NAME] [--clients N] ' +
  '[--duration-s S] [--warmup-s S] [--swap-every-s S] [--tail-s S] [--max-tokens MIN-MAX] ' +
  '[--cancel-fraction X] [--max-sequences N] [--max-queue N] [--device auto|cpu|cuda] [--threads N] ' +
  '[--server-cwd DIR] [--settle-s S] [--stall-s S] [--seed N] [--served-model-name NAME] [--no-baseline] [--keep] [--json FILE]';

const INTRO = `Starts a server, runs many streaming clients against it for a while, swaps models under them
(including a corrupt one) and checks that nothing is lost: exit 1 when a check fails.`;

const FLAGS = {
  'models-dir': { kind: 'string', arg: 'DIR', help: 'models to serve', default: SERVE_DEFAULTS.modelsDir },
  from: { kind: 'string', arg: 'NAME', help: 'model served first', default: 'default' },
  to: { kind: 'string', arg: 'NAME', help: 'model swapped to', default: 'default-grown' },
  'corrupt-from': { kind: 'string', arg: 'NAME', help: 'model a corrupt copy is made of', default: '--from' },
  clients: { kind: 'int', min: 1, help: 'concurrent streaming clients', default: '64' },
  'duration-s': { kind: 'number', min: 5, arg: 'S', help: 'length of the run in seconds', default: '120' },
  'warmup-s': {
    kind: 'number',
    min: 0,
    arg: 'S',
    help: 'seconds before the first swap',
    default: 'min(10, duration/6)',
  },
  'swap-every-s': { kind: 'number', min: 1, arg: 'S', help: 'seconds between swaps', default: '10' },
  'tail-s': {
    kind: 'number',
    min: 0,
    arg: 'S',
    help: 'seconds after the last swap',
    default: 'min(10, duration/6)',
  },
  'max-tokens': {
    kind: 'range',
    min: 1,
    help: 'max_tokens of each request, drawn from this range',
    default: '8-96',
  },
  'cancel-fraction': {
    kind: 'number',
    min: 0,
    max: 1,
    help: 'fraction of streams the client cancels',
    default: '0.15',
  },
  'max-sequences': { kind: 'int', min: 1, help: "server's --max-sequences", default: '16' },
  'max-queue': {
    kind: 'int',
    min: 0,
    help: "server's --max-queue",
    default: `max(${SERVE_DEFAULTS.maxQueue}, 2 × clients)`,
  },
  device: { kind: 'string', choices: ['auto', 'cpu', 'cuda'], help: "server's --device", default: 'cpu' },
  threads: { kind: 'int', min: 0, help: "server's --threads (0: onnxruntime's choice)", default: '0' },
  'server-cwd': {
    kind: 'string',
    arg: 'DIR',
    help: 'working directory of the server',
    default: 'the current one',
  },
  'settle-s': { kind: 'number', min: 1, arg: 'S', help: 'seconds a swap may take to settle', default: '60' },
  'stall-s': {
    kind: 'number',
    min: 1,
    arg: 'S',
    help: 'seconds without a token that count as a stall',
    default: '60',
  },
  seed: { kind: 'int', min: 0, help: "seed of the clients' random choices", default: '1' },
  'served-model-name': {
    kind: 'string',
    arg: 'NAME',
    help: "server's --served-model-name",
    default: 'tokenformer',
  },
  'no-baseline': { kind: 'boolean', help: 'skip the run without swaps that the swap run is compared with' },
  keep: { kind: 'boolean', help: 'keep the scratch directory' },
  json: { kind: 'string', arg: 'FILE', help: 'write the full report as JSON to FILE' },
} as const satisfies Record<string, FlagSpec>;

runMain(async () => {
  const flags = parseCommandLine(USAGE, FLAGS);
  if (flags.help) return void console.log(helpText(USAGE, INTRO, FLAGS));
  const clients = flags.clients ?? 64;
  const durationS = flags['duration-s'] ?? 120;
  const from = flags.from ?? 'default';
  const device = flags.device ?? 'cpu';
  const cancelFraction = flags['cancel-fraction'] ?? 0.15;
  const o: SoakOptions = {
    modelsDir: flags['models-dir'] ?? SERVE_DEFAULTS.modelsDir,
    from,
    to: flags.to ?? 'default-grown',
    corruptFrom: flags['corrupt-from'] ?? from,
    clients,
    durationS,
    warmupS: flags['warmup-s'] ?? Math.min(10, durationS / 6),
    swapEveryS: flags['swap-every-s'] ?? 10,
    tailS: flags['tail-s'] ?? Math.min(10, durationS / 6),
    maxTokens: flags['max-tokens'] ?? [8, 96],
    cancelFraction,
    maxSequences: flags['max-sequences'] ?? 16,
    // Every client has one stream open at most: twice that leaves room for the sequences a
    // cancel has not freed yet, so a 429 means something is wrong.
    maxQueue: flags['max-queue'] ?? Math.max(SERVE_DEFAULTS.maxQueue, 2 * clients),
    device,
    threads: flags.threads ?? 0,
    serverCwd: flags['server-cwd'] ?? process.cwd(),
    settleS: flags['settle-s'] ?? 60,
    stallS: flags['stall-s'] ?? 60,
    seed: flags.seed ?? 1,
    servedName: flags['served-model-name'] ?? 'tokenformer',
    baseline: !flags['no-baseline'],
    keep: flags.keep === true,
  };
  const report = await runSoak(o, progress('soak'));
  if (flags.json) writeJsonAtomic(flags.json, report);
  console.log(summaryText(report));
  if (!report.ok) process.exitCode = 1;
});

import { SERVE_DEFAULTS } from '../src/server/defaults.ts';
import { writeJsonAtomic } from '../src/util/atomic.ts';
import { parseFlags, progress, runMain } from '../src/util/cli.ts';
import { fail } from '../src/util/errors.ts';
import { runSoak, type SoakOptions } from './soak/run.ts';
import { summaryText } from './soak/summary.ts';

const USAGE =
  'npm run soak -- [--models-dir DIR] [--from NAME] [--to NAME] [--corrupt-from NAME] [--clients N] ' +
  '[--duration-s S] [--warmup-s S] [--swap-every-s S] [--tail-s S] [--max-tokens MIN-MAX] ' +
  '[--cancel-fraction X] [--max-sequences N] [--max-queue N] [--device auto|cpu|cuda] [--threads N] ' +
  '[--server-cwd DIR] [--settle-s S] [--stall-s S] [--seed N] [--served-model-name NAME] [--no-baseline] [--keep] [--json FILE]';

function number(name: string, v: string | undefined, dflt: number, min: number, integer = true): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n < min || (integer && !Number.isInteger(n)))
    fail(
      'TF_ERR_BAD_ARGS',
      `--${name} must be ${integer ? 'an integer' : 'a number'} ≥ ${min}, got ${v}\nusage: ${USAGE}`,
    );
  return n;
}

function range(v: string | undefined, dflt: [number, number]): [number, number] {
  if (v === undefined) return dflt;
  const m = /^(\d+)-(\d+)$/.exec(v);
  const lo = Number(m?.[1]);
  const hi = Number(m?.[2]);
  if (!m || lo < 1 || hi < lo)
    fail('TF_ERR_BAD_ARGS', `--max-tokens must be MIN-MAX with 1 ≤ MIN ≤ MAX, got ${v}`);
  return [lo, hi];
}

runMain(async () => {
  const s = { type: 'string' } as const;
  const flags = parseFlags(USAGE, {
    'models-dir': s,
    from: s,
    to: s,
    'corrupt-from': s,
    clients: s,
    'duration-s': s,
    'warmup-s': s,
    'swap-every-s': s,
    'tail-s': s,
    'max-tokens': s,
    'cancel-fraction': s,
    'max-sequences': s,
    'max-queue': s,
    device: s,
    threads: s,
    'server-cwd': s,
    'settle-s': s,
    'stall-s': s,
    seed: s,
    'served-model-name': s,
    'no-baseline': { type: 'boolean' },
    keep: { type: 'boolean' },
    json: s,
  });
  if (flags.help) return void console.log(USAGE);
  const clients = number('clients', flags.clients, 64, 1);
  const durationS = number('duration-s', flags['duration-s'], 120, 5, false);
  const from = flags.from ?? 'default';
  const device = flags.device ?? 'cpu';
  if (device !== 'auto' && device !== 'cpu' && device !== 'cuda')
    fail('TF_ERR_BAD_ARGS', `--device must be auto, cpu or cuda, got ${device}`);
  const cancelFraction = number('cancel-fraction', flags['cancel-fraction'], 0.15, 0, false);
  if (cancelFraction > 1)
    fail('TF_ERR_BAD_ARGS', `--cancel-fraction must be within 0–1, got ${cancelFraction}`);
  const o: SoakOptions = {
    modelsDir: flags['models-dir'] ?? SERVE_DEFAULTS.modelsDir,
    from,
    to: flags.to ?? 'default-grown',
    corruptFrom: flags['corrupt-from'] ?? from,
    clients,
    durationS,
    warmupS: number('warmup-s', flags['warmup-s'], Math.min(10, durationS / 6), 0, false),
    swapEveryS: number('swap-every-s', flags['swap-every-s'], 10, 1, false),
    tailS: number('tail-s', flags['tail-s'], Math.min(10, durationS / 6), 0, false),
    maxTokens: range(flags['max-tokens'], [8, 96]),
    cancelFraction,
    maxSequences: number('max-sequences', flags['max-sequences'], 16, 1),
    // Every client has one stream open at most: twice that leaves room for the sequences a
    // cancel has not freed yet, so a 429 means something is wrong.
    maxQueue: number('max-queue', flags['max-queue'], Math.max(SERVE_DEFAULTS.maxQueue, 2 * clients), 0),
    device,
    threads: number('threads', flags.threads, 0, 0),
    serverCwd: flags['server-cwd'] ?? process.cwd(),
    settleS: number('settle-s', flags['settle-s'], 60, 1, false),
    stallS: number('stall-s', flags['stall-s'], 60, 1, false),
    seed: number('seed', flags.seed, 1, 0),
    servedName: flags['served-model-name'] ?? 'tokenformer',
    baseline: !flags['no-baseline'],
    keep: flags.keep === true,
  };
  const report = await runSoak(o, progress('soak'));
  if (flags.json) writeJsonAtomic(flags.json, report);
  console.log(summaryText(report));
  if (!report.ok) process.exitCode = 1;
});

import { trainInWorker } from '../src/train/launch.ts';
import { progressRenderer } from '../src/train/progress.ts';
import type { TrainOptions } from '../src/train/run.ts';
import { OFFICIAL_OPTIMIZER } from '../src/train/training-step.ts';
import { parseFlags, requireFlag, runMain } from '../src/util/cli.ts';
import { fail } from '../src/util/errors.ts';

const USAGE = `npm run train -- --out DIR [--data PATH]… (--init DIR | --layers N --hidden N --heads N
    --qkv-tokens N --proj-tokens N --ffn-tokens N --vocab-size N [--max-seq-len N] [--rotary-pct X] [--tokenizer tokenizer.json])
    --steps N --batch-size N --seq-len N --lr X [--min-lr X] [--warmup N] [--schedule cosine|constant]
    [--weight-decay X] [--clip X] [--seed N] [--eval-interval N] [--eval-batches N]
    [--save-interval N] [--val-fraction X] [--threads N] [--resume] [--cache-dir DIR]`;

function num(
  flags: Record<string, unknown>,
  name: string,
  opts: { int?: boolean; min?: number; fallback?: number } = {},
): number {
  const raw = flags[name];
  if (raw === undefined) {
    if (opts.fallback !== undefined) return opts.fallback;
    fail('TF_ERR_BAD_ARGS', `--${name} is required\nusage: ${USAGE}`);
  }
  const v = Number(raw);
  if (!Number.isFinite(v) || (opts.int && !Number.isInteger(v)) || (opts.min !== undefined && v < opts.min)) {
    fail(
      'TF_ERR_BAD_ARGS',
      `--${name} must be ${opts.int ? 'an integer' : 'a number'}${opts.min !== undefined ? ` ≥ ${opts.min}` : ''}, got ${String(raw)}`,
    );
  }
  return v;
}

runMain(async () => {
  const s = { type: 'string' } as const;
  const flags = parseFlags(USAGE, {
    data: { type: 'string', multiple: true },
    out: s,
    init: s,
    layers: s,
    hidden: s,
    heads: s,
    'qkv-tokens': s,
    'proj-tokens': s,
    'ffn-tokens': s,
    'vocab-size': s,
    'max-seq-len': s,
    'rotary-pct': s,
    steps: s,
    'batch-size': s,
    'seq-len': s,
    lr: s,
    'min-lr': s,
    warmup: s,
    schedule: s,
    'weight-decay': s,
    clip: s,
    seed: s,
    'eval-interval': s,
    'eval-batches': s,
    tokenizer: s,
    'save-interval': s,
    'val-fraction': s,
    threads: s,
    'cache-dir': s,
    resume: { type: 'boolean' },
  });
  if (flags.help) return void console.log(USAGE);
  const steps = num(flags, 'steps', { int: true, min: 1 });
  const lr = num(flags, 'lr', { min: 0 });
  const seqLen = num(flags, 'seq-len', { int: true, min: 1 });
  const schedule = flags.schedule ?? 'cosine';
  if (schedule !== 'cosine' && schedule !== 'constant')
    fail('TF_ERR_BAD_ARGS', `--schedule must be cosine or constant, got ${schedule}`);
  const newModel = flags.layers !== undefined || flags.hidden !== undefined;
  const opts: TrainOptions = {
    data: flags.data ?? [],
    out: requireFlag(USAGE, flags, 'out'),
    ...(flags.init ? { init: flags.init } : {}),
    ...(flags.tokenizer ? { tokenizer: flags.tokenizer } : {}),
    ...(newModel
      ? {
          model: {
            layers: num(flags, 'layers', { int: true, min: 1 }),
            hidden: num(flags, 'hidden', { int: true, min: 1 }),
            heads: num(flags, 'heads', { int: true, min: 1 }),
            qkvTokens: num(flags, 'qkv-tokens', { int: true, min: 1 }),
            projTokens: num(flags, 'proj-tokens', { int: true, min: 1 }),
            ffnTokens: num(flags, 'ffn-tokens', { int: true, min: 1 }),
            vocabSize: num(flags, 'vocab-size', { int: true, min: 258 }),
            maxSeqLen: num(flags, 'max-seq-len', {
              int: true,
              min: seqLen,
              fallback: Math.max(1024, seqLen),
            }),
            rotaryPct: num(flags, 'rotary-pct', { min: 0, fallback: 0.25 }),
          },
        }
      : {}),
    steps,
    batchSize: num(flags, 'batch-size', { int: true, min: 1 }),
    seqLen,
    schedule: {
      kind: schedule,
      lr,
      minLr: num(flags, 'min-lr', { min: 0, fallback: lr / 10 }),
      warmupSteps: num(flags, 'warmup', {
        int: true,
        min: 0,
        fallback: Math.max(1, Math.round(steps / 100)),
      }),
      totalSteps: steps,
    },
    optimizer: {
      ...OFFICIAL_OPTIMIZER,
      weightDecay: num(flags, 'weight-decay', { min: 0, fallback: OFFICIAL_OPTIMIZER.weightDecay }),
      clipNorm: num(flags, 'clip', { min: 0, fallback: OFFICIAL_OPTIMIZER.clipNorm }),
    },
    seed: num(flags, 'seed', { int: true, min: 0, fallback: 1234 }),
    evalInterval: num(flags, 'eval-interval', {
      int: true,
      min: 0,
      fallback: Math.max(1, Math.round(steps / 10)),
    }),
    evalBatches: num(flags, 'eval-batches', { int: true, min: 1, fallback: 8 }),
    saveInterval: num(flags, 'save-interval', {
      int: true,
      min: 0,
      fallback: Math.max(1, Math.round(steps / 5)),
    }),
    valFraction: num(flags, 'val-fraction', { min: 0, fallback: 0.05 }),
    ...(flags.threads ? { threads: num(flags, 'threads', { int: true, min: 1 }) } : {}),
    resume: flags.resume ?? false,
    cacheDir: flags['cache-dir'] ?? '.cache',
  };
  await trainInWorker(opts, progressRenderer(process.stderr));
});

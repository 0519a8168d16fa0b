import { join } from 'node:path';
import {
  PIPELINE_DEFAULTS,
  PIPELINE_QUICK,
  type PipelineOptions,
  runPipeline,
} from '../src/train/pipeline.ts';
import { progressRenderer } from '../src/train/progress.ts';
import { parseFlags, requireFlag, runMain } from '../src/util/cli.ts';
import { fail } from '../src/util/errors.ts';

const USAGE = `npm run pipeline -- --out DIR [--quick] [--data PATH]… [--base-steps N] [--grow-steps N]
    [--layers N --hidden N --heads N --qkv-tokens N --proj-tokens N --ffn-tokens N --vocab-size N]
    [--grown-qkv-tokens N --grown-proj-tokens N --grown-ffn-tokens N] [--batch-size N] [--seq-len N]
    [--lr X] [--seed N] [--eval-interval N] [--threads N] [--no-scratch] [--ship] [--models-dir DIR]`;

const INT_FLAGS = [
  'base-steps',
  'grow-steps',
  'layers',
  'hidden',
  'heads',
  'qkv-tokens',
  'proj-tokens',
  'ffn-tokens',
  'vocab-size',
  'grown-qkv-tokens',
  'grown-proj-tokens',
  'grown-ffn-tokens',
  'batch-size',
  'seq-len',
  'seed',
  'eval-interval',
  'threads',
] as const;

runMain(async () => {
  const flags = parseFlags(USAGE, {
    out: { type: 'string' },
    data: { type: 'string', multiple: true },
    quick: { type: 'boolean' },
    lr: { type: 'string' },
    'no-scratch': { type: 'boolean' },
    ship: { type: 'boolean' },
    'models-dir': { type: 'string' },
    'cache-dir': { type: 'string' },
    ...Object.fromEntries(INT_FLAGS.map((f) => [f, { type: 'string' as const }])),
  }) as Record<string, string | string[] | boolean | undefined>;
  if (flags.help) return void console.log(USAGE);
  const int = (name: (typeof INT_FLAGS)[number], fallback: number) => {
    const v = flags[name];
    if (v === undefined) return fallback;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1)
      fail('TF_ERR_BAD_ARGS', `--${name} must be a positive integer, got ${String(v)}`);
    return n;
  };
  const d = flags.quick ? PIPELINE_QUICK : PIPELINE_DEFAULTS;
  const lr = flags.lr === undefined ? d.lr : Number(flags.lr);
  if (!(lr > 0)) fail('TF_ERR_BAD_ARGS', `--lr must be a positive number, got ${String(flags.lr)}`);
  const modelsDir = (flags['models-dir'] as string | undefined) ?? 'models';
  const o: PipelineOptions = {
    ...d,
    out: requireFlag(USAGE, flags, 'out'),
    data: (flags.data as string[] | undefined) ?? [],
    base: {
      ...d.base,
      layers: int('layers', d.base.layers),
      hidden: int('hidden', d.base.hidden),
      heads: int('heads', d.base.heads),
      qkvTokens: int('qkv-tokens', d.base.qkvTokens),
      projTokens: int('proj-tokens', d.base.projTokens),
      ffnTokens: int('ffn-tokens', d.base.ffnTokens),
      vocabSize: int('vocab-size', d.base.vocabSize),
    },
    grown: {
      qkvTokens: int('grown-qkv-tokens', d.grown.qkvTokens),
      projTokens: int('grown-proj-tokens', d.grown.projTokens),
      ffnTokens: int('grown-ffn-tokens', d.grown.ffnTokens),
    },
    baseSteps: int('base-steps', d.baseSteps),
    growSteps: int('grow-steps', d.growSteps),
    batchSize: int('batch-size', d.batchSize),
    seqLen: int('seq-len', d.seqLen),
    lr,
    seed: int('seed', d.seed),
    evalInterval: int('eval-interval', d.evalInterval),
    ...(flags.threads ? { threads: int('threads', 2) } : {}),
    scratch: !flags['no-scratch'],
    ...(flags.ship
      ? { ship: { base: join(modelsDir, 'default'), grown: join(modelsDir, 'default-grown') } }
      : {}),
    cacheDir: (flags['cache-dir'] as string | undefined) ?? '.cache',
  };
  const render = progressRenderer(process.stderr);
  const report = await runPipeline(o, (stage, e) => {
    if (e) render(e);
    else process.stderr.write(`== ${stage}\n`);
  });
  console.log(`report: ${join(o.out, 'report.md')}\n\n${report.answer}`);
});

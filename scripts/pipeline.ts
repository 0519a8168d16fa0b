import { join } from 'node:path';
import {
  PIPELINE_DEFAULTS,
  PIPELINE_QUICK,
  type PipelineOptions,
  runPipeline,
} from '../src/train/pipeline.ts';
import { progressRenderer } from '../src/train/progress.ts';
import { type FlagSpec, helpText, parseCommandLine, requireFlag, runMain } from '../src/util/cli.ts';

const USAGE = `npm run pipeline -- --out DIR [--quick] [--data PATH]… [--base-steps N] [--grow-steps N]
    [--layers N --hidden N --heads N --qkv-tokens N --proj-tokens N --ffn-tokens N --vocab-size N]
    [--grown-qkv-tokens N --grown-proj-tokens N --grown-ffn-tokens N] [--batch-size N] [--seq-len N]
    [--lr X] [--seed N] [--eval-interval N] [--threads N] [--no-scratch] [--ship] [--models-dir DIR]
    [--cache-dir DIR]`;

const INTRO = `Trains a base model, grows it, trains on, evaluates both and writes report.md to --out.
Model and run flags default to the full run's values, or the --quick run's.`;

const int = (help: string, dflt: (d: typeof PIPELINE_DEFAULTS) => number): FlagSpec => ({
  kind: 'int',
  min: 1,
  help,
  default: `${dflt(PIPELINE_DEFAULTS)}; --quick: ${dflt(PIPELINE_QUICK)}`,
});

const FLAGS = {
  out: { kind: 'string', arg: 'DIR', help: 'run directory (required)' },
  quick: { kind: 'boolean', help: 'a small, fast run (the defaults marked --quick)' },
  data: {
    kind: 'list',
    arg: 'PATH',
    help: 'training text file(s); repeatable',
    default: 'the bundled corpus',
  },
  'base-steps': int('training steps of the base model', (d) => d.baseSteps),
  'grow-steps': int('training steps after growing', (d) => d.growSteps),
  layers: int('layers of the base model', (d) => d.base.layers),
  hidden: int('hidden width of the base model', (d) => d.base.hidden),
  heads: int('attention heads of the base model', (d) => d.base.heads),
  'qkv-tokens': int('query/key/value Pattention tokens of the base model', (d) => d.base.qkvTokens),
  'proj-tokens': int('attention output Pattention tokens of the base model', (d) => d.base.projTokens),
  'ffn-tokens': int('FFN Pattention tokens of the base model', (d) => d.base.ffnTokens),
  'vocab-size': int('tokenizer vocabulary size', (d) => d.base.vocabSize),
  'grown-qkv-tokens': int('query/key/value Pattention tokens after growing', (d) => d.grown.qkvTokens),
  'grown-proj-tokens': int('attention output Pattention tokens after growing', (d) => d.grown.projTokens),
  'grown-ffn-tokens': int('FFN Pattention tokens after growing', (d) => d.grown.ffnTokens),
  'batch-size': int('sequences per step', (d) => d.batchSize),
  'seq-len': int('tokens per sequence', (d) => d.seqLen),
  lr: {
    kind: 'number',
    above: 0,
    help: 'learning rate',
    default: `${PIPELINE_DEFAULTS.lr}; --quick: ${PIPELINE_QUICK.lr}`,
  },
  seed: int('random seed', (d) => d.seed),
  'eval-interval': int('steps between validation evaluations', (d) => d.evalInterval),
  threads: { kind: 'int', min: 1, help: 'training threads', default: 'the trainer default' },
  'no-scratch': { kind: 'boolean', help: 'skip the from-scratch comparison model' },
  ship: { kind: 'boolean', help: 'copy the results to MODELS_DIR/default and MODELS_DIR/default-grown' },
  'models-dir': { kind: 'string', arg: 'DIR', help: 'where --ship copies to', default: 'models' },
  'cache-dir': { kind: 'string', arg: 'DIR', help: 'cache of tokenized data', default: '.cache' },
} as const satisfies Record<string, FlagSpec>;

runMain(async () => {
  const flags = parseCommandLine(USAGE, FLAGS);
  if (flags.help) return void console.log(helpText(USAGE, INTRO, FLAGS));
  const d = flags.quick ? PIPELINE_QUICK : PIPELINE_DEFAULTS;
  const int = (name: keyof typeof FLAGS, fallback: number): number => {
    const v = flags[name];
    return typeof v === 'number' ? v : fallback;
  };
  const lr = flags.lr ?? d.lr;
  const modelsDir = flags['models-dir'] ?? 'models';
  const o: PipelineOptions = {
    ...d,
    out: requireFlag(USAGE, flags, 'out'),
    data: flags.data ?? [],
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
    ...(flags.threads !== undefined ? { threads: flags.threads } : {}),
    scratch: !flags['no-scratch'],
    ...(flags.ship
      ? { ship: { base: join(modelsDir, 'default'), grown: join(modelsDir, 'default-grown') } }
      : {}),
    cacheDir: flags['cache-dir'] ?? '.cache',
  };
  const render = progressRenderer(process.stderr);
  const report = await runPipeline(o, (stage, e) => {
    if (e) render(e);
    else process.stderr.write(`== ${stage}\n`);
  });
  console.log(`report: ${join(o.out, 'report.md')}\n\n${report.answer}`);
});

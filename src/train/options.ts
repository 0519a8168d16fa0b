import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { readCheckpointMeta, TOKENIZER_FILE } from '../model/checkpoint.ts';
import type { TokenFormerConfig } from '../model/config.ts';
import type { FlagSpec, FlagValues } from '../util/cli.ts';
import { fail, TokenFormerError } from '../util/errors.ts';
import { fileSha256, readJsonFile } from '../util/files.ts';
import type { SavedSettings, TrainOptions } from './run.ts';
import { newModelConfig } from './setup.ts';
import { TRAINER_STATE_FILE } from './trainer.ts';
import { OFFICIAL_OPTIMIZER } from './training-step.ts';

/**
 * `npm run train`'s flags, their defaults, and how a run's saved settings take their place on
 * --resume: the run continues with what it was started with, and a flag that says otherwise is
 * an argument error naming the saved value.
 */

export const TRAIN_USAGE = `npm run train -- --out DIR [--data PATH]… (--init DIR | --layers N --hidden N --heads N
    --qkv-tokens N --proj-tokens N --ffn-tokens N (--vocab-size N | --tokenizer FILE) [--max-seq-len N] [--rotary-pct X])
    --steps N --batch-size N --seq-len N --lr X [--min-lr X] [--warmup N] [--schedule cosine|constant]
    [--weight-decay X] [--clip X] [--seed N] [--eval-interval N] [--eval-batches N] [--save-interval N]
    [--val-fraction X] [--encoding utf8|latin1] [--threads N] [--device cpu|cuda] [--cache-dir DIR]
npm run train -- --resume --out DIR`;

export const TRAIN_INTRO = `Trains a TokenFormer: a new model (architecture flags), a continuation of a checkpoint (--init),
or the run in --out resumed where its last checkpoint left off (--resume: the saved settings and
data are used; a flag that differs from them is an error). --out is the run directory and the
checkpoint; a non-empty folder that is not a checkpoint is refused. Ctrl-C or SIGTERM saves a
checkpoint at the next step boundary and exits (130 / 143).`;

export const TRAIN_FLAGS = {
  out: { kind: 'string', arg: 'DIR', help: 'the run directory (it is the checkpoint)' },
  data: {
    kind: 'list',
    arg: 'PATH',
    help: 'text files or folders (.txt, .md, .text, .jsonl with a "text" field), repeatable',
    default: 'the offline corpus, State of the Union addresses + Moby-Dick',
  },
  encoding: {
    kind: 'string',
    choices: ['utf8', 'latin1'],
    help: 'how the data files are decoded; invalid UTF-8 is refused unless latin1 is chosen',
    default: 'utf8',
  },
  init: {
    kind: 'string',
    arg: 'DIR',
    help: 'start from this checkpoint (and its Adam moments, when it has them)',
  },
  layers: { kind: 'int', min: 1, help: 'a new model: decoder blocks' },
  hidden: { kind: 'int', min: 1, help: 'a new model: hidden size (a multiple of --heads)' },
  heads: { kind: 'int', min: 1, help: 'a new model: attention heads' },
  'qkv-tokens': { kind: 'int', min: 1, help: 'a new model: parameter tokens of the q/k/v Pattentions' },
  'proj-tokens': { kind: 'int', min: 1, help: 'a new model: parameter tokens of the attention output' },
  'ffn-tokens': { kind: 'int', min: 1, help: 'a new model: parameter tokens of the FFN Pattention' },
  'vocab-size': {
    kind: 'int',
    min: 258,
    help: 'a new model: tokens of the byte-level BPE tokenizer trained on the data (fewer if the data supports fewer; the embedding has one row per token)',
  },
  tokenizer: {
    kind: 'string',
    arg: 'FILE',
    help: 'a new model: use this tokenizer.json (copied into the run) instead of training one; the embedding is sized to it',
  },
  'max-seq-len': {
    kind: 'int',
    min: 1,
    help: 'a new model: context length',
    default: 'max(1024, --seq-len)',
  },
  'rotary-pct': { kind: 'number', min: 0, help: 'a new model: share of each head rotated', default: '0.25' },
  steps: {
    kind: 'int',
    min: 1,
    help: 'total optimizer steps (a continued model counts from its checkpoint step)',
  },
  'batch-size': { kind: 'int', min: 1, help: 'sequences per step' },
  'seq-len': { kind: 'int', min: 1, help: 'tokens per sequence' },
  lr: { kind: 'number', min: 0, help: 'peak learning rate' },
  'min-lr': { kind: 'number', min: 0, help: 'floor of the cosine schedule', default: 'lr/10' },
  warmup: { kind: 'int', min: 0, help: 'linear warmup steps', default: '1 % of --steps, at least 1' },
  schedule: {
    kind: 'string',
    choices: ['cosine', 'constant'],
    help: 'learning-rate schedule',
    default: 'cosine',
  },
  'weight-decay': {
    kind: 'number',
    min: 0,
    help: 'AdamW decoupled weight decay (not on the final LayerNorm)',
    default: String(OFFICIAL_OPTIMIZER.weightDecay),
  },
  clip: {
    kind: 'number',
    min: 0,
    help: 'global gradient-norm clip',
    default: String(OFFICIAL_OPTIMIZER.clipNorm),
  },
  seed: {
    kind: 'int',
    min: 0,
    help: 'weights and batches (a batch is a pure function of seed and step)',
    default: '1234',
  },
  'eval-interval': {
    kind: 'int',
    min: 0,
    help: 'validation loss every N steps (0: only at the start and end)',
    default: 'steps/10',
  },
  'eval-batches': { kind: 'int', min: 1, help: 'validation batches per evaluation', default: '8' },
  'save-interval': {
    kind: 'int',
    min: 0,
    help: 'checkpoint every N steps (0: only at the end)',
    default: 'steps/5',
  },
  'val-fraction': {
    kind: 'number',
    min: 0,
    help: 'share of the data held out for validation',
    default: '0.05',
  },
  threads: {
    kind: 'int',
    min: 1,
    help: 'onnxruntime intra-op threads (fixed seed + threads ⇒ identical losses)',
    default: "onnxruntime's choice; a resumed run keeps its own",
  },
  device: {
    kind: 'string',
    choices: ['cpu', 'cuda'],
    help: 'where the training step runs (cuda: weights and moments still travel host ↔ device each step)',
    default: 'cpu',
  },
  'cache-dir': { kind: 'string', arg: 'DIR', help: 'tokenized corpora', default: '.cache' },
  resume: { kind: 'boolean', help: "continue --out from its last checkpoint with the run's saved settings" },
} as const satisfies Record<string, FlagSpec>;

export type TrainFlags = FlagValues<typeof TRAIN_FLAGS>;

const need = (f: TrainFlags, name: keyof typeof TRAIN_FLAGS): number => {
  const v = f[name];
  if (typeof v !== 'number') fail('TF_ERR_BAD_ARGS', `--${name} is required\nusage: ${TRAIN_USAGE}`);
  return v;
};

/** A new run's options: the flags, with the defaults of TRAIN_FLAGS. */
function freshOptions(f: TrainFlags, out: string): TrainOptions {
  const steps = need(f, 'steps');
  const lr = need(f, 'lr');
  const seqLen = need(f, 'seq-len');
  const archFlags = ['layers', 'hidden', 'heads', 'qkv-tokens', 'proj-tokens', 'ffn-tokens'] as const;
  const newModel =
    archFlags.some((n) => f[n] !== undefined) || f['vocab-size'] !== undefined || f.tokenizer !== undefined;
  if (newModel && f.init !== undefined)
    fail('TF_ERR_BAD_ARGS', 'give either --init or a new model (architecture flags, --tokenizer), not both');
  let model: TrainOptions['model'];
  if (newModel) {
    if (f['vocab-size'] === undefined && f.tokenizer === undefined)
      fail('TF_ERR_BAD_ARGS', `a new model needs --vocab-size N or --tokenizer FILE\nusage: ${TRAIN_USAGE}`);
    const maxSeqLen = f['max-seq-len'] ?? Math.max(1024, seqLen);
    if (seqLen > maxSeqLen) {
      fail(
        'TF_ERR_BAD_ARGS',
        `--seq-len ${seqLen} is longer than the model's context --max-seq-len ${maxSeqLen}: lower --seq-len or raise --max-seq-len`,
      );
    }
    model = {
      layers: need(f, 'layers'),
      hidden: need(f, 'hidden'),
      heads: need(f, 'heads'),
      qkvTokens: need(f, 'qkv-tokens'),
      projTokens: need(f, 'proj-tokens'),
      ffnTokens: need(f, 'ffn-tokens'),
      ...(f['vocab-size'] !== undefined ? { vocabSize: f['vocab-size'] } : {}),
      maxSeqLen,
      rotaryPct: f['rotary-pct'] ?? 0.25,
    };
    try {
      newModelConfig({ ...model, vocabSize: model.vocabSize ?? 512 }); // the vocabulary is settled later
    } catch (err) {
      if (!(err instanceof TokenFormerError)) throw err;
      fail('TF_ERR_BAD_ARGS', `the architecture flags do not describe a valid model: ${err.message}`);
    }
  }
  return {
    data: f.data ?? [],
    out,
    ...(f.init !== undefined ? { init: f.init } : {}),
    ...(f.tokenizer !== undefined ? { tokenizer: f.tokenizer } : {}),
    ...(model ? { model } : {}),
    steps,
    batchSize: need(f, 'batch-size'),
    seqLen,
    schedule: {
      kind: f.schedule ?? 'cosine',
      lr,
      minLr: f['min-lr'] ?? lr / 10,
      warmupSteps: f.warmup ?? Math.max(1, Math.round(steps / 100)),
      totalSteps: steps,
    },
    optimizer: {
      ...OFFICIAL_OPTIMIZER,
      weightDecay: f['weight-decay'] ?? OFFICIAL_OPTIMIZER.weightDecay,
      clipNorm: f.clip ?? OFFICIAL_OPTIMIZER.clipNorm,
    },
    seed: f.seed ?? 1234,
    evalInterval: f['eval-interval'] ?? Math.max(1, Math.round(steps / 10)),
    evalBatches: f['eval-batches'] ?? 8,
    saveInterval: f['save-interval'] ?? Math.max(1, Math.round(steps / 5)),
    valFraction: f['val-fraction'] ?? 0.05,
    encoding: f.encoding ?? 'utf8',
    ...(f.threads !== undefined ? { threads: f.threads } : {}),
    device: f.device ?? 'cpu',
    resume: f.resume ?? false,
    cacheDir: f['cache-dir'] ?? '.cache',
  };
}

/**
 * A resumed run's options: its saved settings; each given flag must agree with them. Settings of
 * the machine rather than the run (--threads, --device, --cache-dir) may change.
 */
function resumedOptions(f: TrainFlags, out: string): TrainOptions {
  const statePath = join(out, TRAINER_STATE_FILE);
  const saved = readJsonFile(statePath, 'TF_ERR_BAD_CHECKPOINT') as SavedSettings;
  const cfg: TokenFormerConfig = readCheckpointMeta(out).model;
  const conflict = (flag: string, given: unknown, was: unknown, where = TRAINER_STATE_FILE): never =>
    fail(
      'TF_ERR_BAD_ARGS',
      `--${flag} ${String(given)} conflicts with the run in ${out}, saved with ${String(was)} (${where}): ` +
        `--resume continues with the saved settings; leave --${flag} out (or start a new run from it with --init ${out})`,
    );
  const check = (flag: keyof typeof TRAIN_FLAGS, was: unknown, where?: string) => {
    const given = f[flag];
    if (given !== undefined && was !== undefined && given !== was) conflict(flag, given, was, where);
  };
  check('steps', saved.steps);
  check('batch-size', saved.batch_size);
  check('seq-len', saved.seq_len);
  check('lr', saved.schedule.lr);
  check('min-lr', saved.schedule.minLr);
  check('warmup', saved.schedule.warmupSteps);
  check('schedule', saved.schedule.kind);
  check('weight-decay', saved.optimizer.weightDecay);
  check('clip', saved.optimizer.clipNorm);
  check('seed', saved.seed);
  check('eval-interval', saved.eval_interval);
  check('eval-batches', saved.eval_batches);
  check('save-interval', saved.save_interval);
  check('val-fraction', saved.val_fraction);
  check('encoding', saved.encoding);
  const model = 'config.json (model)';
  check('layers', cfg.num_layers, model);
  check('hidden', cfg.hidden_size, model);
  check('heads', cfg.num_heads, model);
  check('qkv-tokens', cfg.qkv.tokens, model);
  check('proj-tokens', cfg.proj.tokens, model);
  check('ffn-tokens', cfg.ffn.tokens, model);
  check('vocab-size', cfg.vocab_size, model);
  check('max-seq-len', cfg.max_seq_len, model);
  check('rotary-pct', cfg.rotary_pct, model);
  if (f.data !== undefined && saved.data !== undefined) {
    const given = f.data.map((p) => resolve(p));
    if (given.join('\0') !== saved.data.join('\0'))
      conflict('data', given.join(' '), saved.data.length ? saved.data.join(' ') : 'the default corpus');
  }
  if (f.init !== undefined && saved.init !== undefined && resolve(f.init) !== saved.init)
    conflict('init', resolve(f.init), saved.init ?? 'a new model (no --init)');
  const runTokenizer = join(out, TOKENIZER_FILE);
  if (
    f.tokenizer !== undefined &&
    existsSync(runTokenizer) &&
    fileSha256(f.tokenizer) !== fileSha256(runTokenizer)
  )
    conflict('tokenizer', f.tokenizer, `another tokenizer`, TOKENIZER_FILE);
  return {
    data: saved.data ?? f.data ?? [],
    out,
    steps: saved.steps,
    batchSize: saved.batch_size,
    seqLen: saved.seq_len,
    schedule: saved.schedule,
    optimizer: saved.optimizer,
    seed: saved.seed,
    evalInterval: saved.eval_interval ?? f['eval-interval'] ?? Math.max(1, Math.round(saved.steps / 10)),
    evalBatches: saved.eval_batches ?? f['eval-batches'] ?? 8,
    saveInterval: saved.save_interval ?? f['save-interval'] ?? Math.max(1, Math.round(saved.steps / 5)),
    valFraction: saved.val_fraction ?? f['val-fraction'] ?? 0.05,
    encoding: saved.encoding ?? f.encoding ?? 'utf8',
    ...((f.threads ?? saved.threads) !== undefined ? { threads: (f.threads ?? saved.threads)! } : {}),
    device: f.device ?? 'cpu',
    resume: true,
    cacheDir: f['cache-dir'] ?? '.cache',
  };
}

/** The options of `npm run train` from its parsed flags (argument errors before any work). */
export function trainOptionsFromFlags(f: TrainFlags): TrainOptions {
  if (f.out === undefined || f.out === '')
    fail('TF_ERR_BAD_ARGS', `--out is required\nusage: ${TRAIN_USAGE}`);
  const out = resolve(f.out);
  if (f.resume && existsSync(join(out, TRAINER_STATE_FILE))) return resumedOptions(f, out);
  return freshOptions(f, out);
}

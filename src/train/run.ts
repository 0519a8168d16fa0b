import { appendFileSync, existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { type CheckpointMeta, loadCheckpoint, TOKENIZER_FILE } from '../model/checkpoint.ts';
import { defaultTau, type TokenFormerConfig, validateModelConfig } from '../model/config.ts';
import { initParams } from '../model/init.ts';
import { readAdamMoments } from '../model/optimizer-state.ts';
import { paramCount } from '../model/params.ts';
import { saveTokenizer, trainByteLevelBpe } from '../tokenizer/bpe-trainer.ts';
import { Tokenizer } from '../tokenizer/tokenizer.ts';
import { recoverReplacedDir, writeFileAtomic } from '../util/atomic.ts';
import { fail } from '../util/errors.ts';
import { evalBatches, trainBatch } from './batches.ts';
import { defaultCorpusFiles, expandPaths, readDocuments, tokenizeCorpus } from './corpus.ts';
import { lineChartSvg } from './plot.ts';
import { learningRate, type Schedule } from './schedule.ts';
import { freshState, LOG_FILE, TRAINER_STATE_FILE, Trainer, type TrainerState } from './trainer.ts';
import type { OptimizerConfig } from './training-step.ts';

/**
 * `npm run train`: defaults → setup → one loop (nanoGPT). Starts from a checkpoint (`init`), a
 * new model (architecture flags; a tokenizer of `vocabSize` is trained on the data), or resumes
 * `out` exactly where its last checkpoint left off.
 */

export interface NewModelOptions {
  layers: number;
  hidden: number;
  heads: number;
  qkvTokens: number;
  projTokens: number;
  ffnTokens: number;
  vocabSize: number;
  maxSeqLen: number;
  rotaryPct: number;
}

export interface TrainOptions {
  /** Text files/folders; empty → the offline default corpus. */
  data: string[];
  out: string;
  init?: string;
  model?: NewModelOptions;
  /** An existing tokenizer.json for a new model (else one is trained on the data). */
  tokenizer?: string;
  steps: number;
  batchSize: number;
  seqLen: number;
  schedule: Schedule;
  optimizer: OptimizerConfig;
  seed: number;
  evalInterval: number;
  evalBatches: number;
  saveInterval: number;
  valFraction: number;
  threads?: number;
  resume: boolean;
  cacheDir: string;
}

export type TrainEvent =
  | { type: 'status'; message: string }
  | { type: 'start'; step: number; steps: number; parameters: number; trainTokens: number; valTokens: number }
  | { type: 'step'; step: number; loss: number; lr: number; gradNorm: number; tokensPerS: number; ms: number }
  | { type: 'eval'; step: number; valLoss: number }
  | { type: 'saved'; step: number; dir: string }
  | { type: 'done'; step: number; valLoss: number; seconds: number };

interface LogStep {
  step: number;
  loss?: number;
  val_loss?: number;
}

/** Reads the log; a line cut short by a killed run is dropped, not fatal. */
function readLog(path: string): LogStep[] {
  if (!existsSync(path)) return [];
  const out: LogStep[] = [];
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    try {
      out.push(JSON.parse(line) as LogStep);
    } catch {
      // an append interrupted by a kill
    }
  }
  return out;
}

function plotLog(dir: string): void {
  const log = readLog(join(dir, LOG_FILE));
  const train = log.filter((e) => e.loss !== undefined).map((e) => [e.step, e.loss!] as const);
  const val = log.filter((e) => e.val_loss !== undefined).map((e) => [e.step, e.val_loss!] as const);
  writeFileAtomic(
    join(dir, 'loss.svg'),
    lineChartSvg(
      [
        { name: 'train loss', points: train },
        { name: 'validation loss', points: val },
      ],
      { title: `training loss — ${dir}`, xLabel: 'step', yLabel: 'cross-entropy (nats/token)' },
    ),
  );
}

/** The config of a new model from the command-line architecture options (τ = √n). */
export function newModelConfig(m: NewModelOptions): TokenFormerConfig {
  return validateModelConfig(
    {
      vocab_size: m.vocabSize,
      hidden_size: m.hidden,
      num_layers: m.layers,
      num_heads: m.heads,
      rotary_pct: m.rotaryPct,
      rotary_base: 10000,
      layernorm_eps: 1e-5,
      max_seq_len: m.maxSeqLen,
      norm_activation: 'l2_norm_gelu',
      qkv: { tokens: m.qkvTokens, tau: defaultTau(m.qkvTokens) },
      proj: { tokens: m.projTokens, tau: defaultTau(m.projTokens) },
      ffn: { tokens: m.ffnTokens, tau: defaultTau(m.ffnTokens) },
    },
    'model options',
  );
}

function savedScheduleStart(dir: string): number {
  const saved = JSON.parse(readFileSync(join(dir, TRAINER_STATE_FILE), 'utf8')) as {
    schedule?: { startStep?: number };
  };
  return saved.schedule?.startStep ?? 0;
}

interface Setup {
  cfg: TokenFormerConfig;
  state: TrainerState;
  meta: Omit<CheckpointMeta, 'step'>;
  tokenizerPath: string;
  /** A freshly trained tokenizer waiting in the cache until the first save copies it. */
  tokenizerIsTemp: boolean;
  /** Where this run's learning-rate schedule starts (kept across --resume). */
  scheduleStart: number;
}

/** Decides where weights, optimizer state and tokenizer come from. */
function setup(opts: TrainOptions, emit: (e: TrainEvent) => void, texts: () => string[]): Setup {
  const out = resolve(opts.out);
  recoverReplacedDir(out); // a save killed between its two renames left the run directory aside
  const hasState = existsSync(join(out, TRAINER_STATE_FILE));
  if (hasState && !opts.resume) {
    fail(
      'TF_ERR_BAD_ARGS',
      `${out} already holds a training run; pass --resume to continue it or choose another --out`,
    );
  }
  if (opts.resume && hasState) {
    const ck = loadCheckpoint(out);
    const moments = readAdamMoments(out, ck.meta.model);
    if (!moments)
      fail('TF_ERR_BAD_CHECKPOINT', `${out}: optimizer.safetensors is missing; cannot resume exactly`);
    emit({ type: 'status', message: `resuming ${out} at step ${ck.meta.step}` });
    const { step: _s, ...meta } = ck.meta;
    return {
      cfg: ck.meta.model,
      state: { step: ck.meta.step, params: ck.params, ...moments },
      meta,
      tokenizerPath: join(out, TOKENIZER_FILE),
      tokenizerIsTemp: false,
      scheduleStart: savedScheduleStart(out),
    };
  }
  if (opts.resume) emit({ type: 'status', message: `nothing to resume in ${out}; starting a new run` });
  const now = new Date().toISOString();
  if (opts.init) {
    if (opts.model) fail('TF_ERR_BAD_ARGS', 'give either --init or the model architecture flags, not both');
    const ck = loadCheckpoint(opts.init);
    const tokenizerPath = join(opts.init, TOKENIZER_FILE);
    if (!existsSync(tokenizerPath))
      fail('TF_ERR_NOT_FOUND', `${opts.init} has no tokenizer.json to encode the training data`);
    const moments = readAdamMoments(opts.init, ck.meta.model);
    const state = moments
      ? { step: ck.meta.step, params: ck.params, ...moments }
      : freshState(ck.meta.model, ck.params, ck.meta.step);
    emit({
      type: 'status',
      message: `starting from ${opts.init} (step ${ck.meta.step}${moments ? ', with optimizer state' : ''})`,
    });
    const { step: _s, ...meta } = ck.meta;
    return {
      cfg: ck.meta.model,
      state,
      meta: {
        ...meta,
        provenance: { source: 'train', detail: `continued from ${resolve(opts.init)}`, created: now },
      },
      tokenizerPath,
      tokenizerIsTemp: false,
      scheduleStart: state.step,
    };
  }
  if (!opts.model)
    fail(
      'TF_ERR_BAD_ARGS',
      'give --init DIR or a new model (--layers --hidden --heads --qkv-tokens --proj-tokens --ffn-tokens --vocab-size)',
    );
  const cfg = newModelConfig(opts.model);
  emit({
    type: 'status',
    message: `training a ${cfg.vocab_size}-token byte-level BPE tokenizer on the corpus`,
  });
  const tokJson = trainByteLevelBpe(texts(), { vocabSize: cfg.vocab_size });
  mkdirSync(resolve(opts.cacheDir), { recursive: true });
  const tokenizerPath = join(resolve(opts.cacheDir), `tokenizer-${process.pid}-${Date.now()}.json`);
  saveTokenizer(tokenizerPath, tokJson);
  const tok = Tokenizer.fromFile(tokenizerPath);
  return {
    cfg,
    state: freshState(cfg, initParams(cfg, opts.seed)),
    meta: {
      format: 'tokenformer-checkpoint',
      format_version: 1,
      model: cfg,
      tokenizer: { file: TOKENIZER_FILE, eos_token_id: tok.eosTokenId },
      provenance: { source: 'train', detail: 'new model', created: now },
      parent: null,
    },
    tokenizerPath,
    tokenizerIsTemp: !opts.tokenizer,
    scheduleStart: 0,
  };
}

export async function runTraining(opts: TrainOptions, emit: (e: TrainEvent) => void): Promise<void> {
  const started = performance.now();
  const out = resolve(opts.out);
  emit({ type: 'status', message: 'reading the corpus' });
  const docs = readDocuments(opts.data.length ? expandPaths(opts.data) : defaultCorpusFiles());
  const s = setup(opts, emit, () => docs.map((d) => d.text));
  if (opts.seqLen > s.cfg.max_seq_len) {
    fail('TF_ERR_BAD_ARGS', `--seq-len ${opts.seqLen} exceeds the model's context (${s.cfg.max_seq_len})`);
  }
  const tokenizer = Tokenizer.fromFile(s.tokenizerPath);
  if (tokenizer.vocabSize > s.cfg.vocab_size) {
    fail(
      'TF_ERR_BAD_CONFIG',
      `tokenizer has ${tokenizer.vocabSize} tokens but the model only ${s.cfg.vocab_size}`,
    );
  }
  emit({ type: 'status', message: `tokenizing ${docs.length} documents` });
  const corpus = tokenizeCorpus(docs, tokenizer, readFileSync(s.tokenizerPath, 'utf8'), {
    cacheDir: join(opts.cacheDir, 'tokens'),
    valFraction: opts.valFraction,
  });
  const evalSet = evalBatches(corpus.val, opts.batchSize, opts.seqLen, opts.evalBatches);
  const schedule: Schedule = { ...opts.schedule, startStep: s.scheduleStart };
  const trainer = await Trainer.create(s.cfg, opts.optimizer, s.state, opts.threads);
  const logPath = join(out, LOG_FILE);
  // A killed run may have logged steps past its last checkpoint: drop them so the log matches.
  const kept = readLog(logPath).filter((e) => e.step < s.state.step);
  const trainerState = {
    seed: opts.seed,
    steps: opts.steps,
    batch_size: opts.batchSize,
    seq_len: opts.seqLen,
    schedule: opts.schedule,
    optimizer: opts.optimizer,
  };
  const save = async () => {
    await trainer.save(out, s.meta, { tokenizerFrom: s.tokenizerPath, trainerState });
    if (s.tokenizerIsTemp) rmSync(s.tokenizerPath, { force: true });
    s.tokenizerPath = join(out, TOKENIZER_FILE);
    s.tokenizerIsTemp = false;
    plotLog(out);
    emit({ type: 'saved', step: trainer.state.step, dir: out });
  };
  try {
    if (!existsSync(join(out, TRAINER_STATE_FILE))) await save(); // the run directory exists from step 0
    writeFileAtomic(logPath, kept.map((e) => `${JSON.stringify(e)}\n`).join(''));
    const log = (entry: object) => appendFileSync(logPath, `${JSON.stringify(entry)}\n`);
    emit({
      type: 'start',
      step: trainer.state.step,
      steps: opts.steps,
      parameters: paramCount(s.cfg),
      trainTokens: corpus.train.length,
      valTokens: corpus.val.length,
    });
    let valLoss = Number.NaN;
    const evaluate = async () => {
      valLoss = await trainer.evaluate(evalSet);
      log({ step: trainer.state.step, val_loss: valLoss, val_ppl: Math.exp(valLoss) });
      emit({ type: 'eval', step: trainer.state.step, valLoss });
    };
    // The starting point's validation loss (for a grown model: proof the function was kept).
    if (!opts.resume || kept.length === 0) await evaluate();
    while (trainer.state.step < opts.steps) {
      const step = trainer.state.step;
      const lr = learningRate(schedule, step);
      const r = await trainer.step(
        trainBatch(corpus.train, opts.batchSize, opts.seqLen, opts.seed, step),
        lr,
      );
      const tokensPerS = (opts.batchSize * opts.seqLen) / (r.ms / 1000);
      log({ step, loss: r.loss, lr, tokens_per_s: tokensPerS, grad_norm: r.gradNorm, ms: r.ms });
      emit({ type: 'step', step, loss: r.loss, lr, gradNorm: r.gradNorm, tokensPerS, ms: r.ms });
      const done = trainer.state.step;
      if (opts.evalInterval > 0 && done % opts.evalInterval === 0 && done < opts.steps) await evaluate();
      if (opts.saveInterval > 0 && done % opts.saveInterval === 0 && done < opts.steps) await save();
    }
    await evaluate();
    await save();
    emit({ type: 'done', step: trainer.state.step, valLoss, seconds: (performance.now() - started) / 1000 });
  } finally {
    await trainer.close();
  }
}

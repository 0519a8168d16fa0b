import { appendFileSync, existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { CHECKPOINT_MARKER, TOKENIZER_FILE } from '../model/checkpoint.ts';
import { paramCount } from '../model/params.ts';
import { checkTokenizerFits } from '../tokenizer/fit.ts';
import { Tokenizer } from '../tokenizer/tokenizer.ts';
import { checkReplaceable, writeFileAtomic } from '../util/atomic.ts';
import { evalBatches, trainBatch } from './batches.ts';
import {
  defaultCorpusFiles,
  type Encoding,
  expandPaths,
  readDocuments,
  skippedMessage,
  type TextSource,
  tokenizeCorpus,
} from './corpus.ts';
import { type LogEntry, readLog } from './log.ts';
import { lineChartSvg } from './plot.ts';
import { learningRate, type Schedule } from './schedule.ts';
import { setup, tokenizerText } from './setup.ts';
import { LOG_FILE, TRAINER_STATE_FILE, Trainer } from './trainer.ts';
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
  /** A new model; without vocabSize it takes the given tokenizer's size. */
  model?: Omit<NewModelOptions, 'vocabSize'> & { vocabSize?: number };
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
  /** How data files are decoded (utf8: invalid UTF-8 is refused). */
  encoding?: Encoding;
  threads?: number;
  /** Where the training step runs (default cpu). */
  device?: 'cpu' | 'cuda';
  resume: boolean;
  cacheDir: string;
}

/** What trainer-state.json holds besides the step: everything --resume needs to go on alone. */
export interface SavedSettings {
  seed: number;
  steps: number;
  batch_size: number;
  seq_len: number;
  schedule: TrainOptions['schedule'];
  optimizer: TrainOptions['optimizer'];
  /** Absolute data paths; [] for the default corpus. Absent in runs saved before it was recorded. */
  data?: string[];
  encoding?: Encoding;
  eval_interval?: number;
  eval_batches?: number;
  save_interval?: number;
  val_fraction?: number;
  threads?: number;
  /** The checkpoint the run started from, absolute; null for a new model. */
  init?: string | null;
}

/** The settings a run saves, from its options. */
export function savedSettings(o: TrainOptions): SavedSettings {
  return {
    seed: o.seed,
    steps: o.steps,
    batch_size: o.batchSize,
    seq_len: o.seqLen,
    schedule: o.schedule,
    optimizer: o.optimizer,
    data: o.data.map((p) => resolve(p)),
    encoding: o.encoding ?? 'utf8',
    eval_interval: o.evalInterval,
    eval_batches: o.evalBatches,
    save_interval: o.saveInterval,
    val_fraction: o.valFraction,
    ...(o.threads !== undefined ? { threads: o.threads } : {}),
    init: o.init !== undefined ? resolve(o.init) : null,
  };
}

export type TrainEvent =
  | { type: 'status'; message: string }
  | { type: 'start'; step: number; steps: number; parameters: number; trainTokens: number; valTokens: number }
  | { type: 'step'; step: number; loss: number; lr: number; gradNorm: number; tokensPerS: number; ms: number }
  | { type: 'eval'; step: number; valLoss: number }
  | { type: 'saved'; step: number; dir: string }
  /** Stopped early on request; the checkpoint of `step` was just saved to `dir`. */
  | { type: 'stopped'; step: number; dir: string }
  | { type: 'done'; step: number; valLoss: number; seconds: number };

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

/**
 * The log entries a resumed run keeps: training steps before the checkpoint's step and
 * evaluations up to it (an evaluation at step N is logged after step N-1, before the save at N).
 * Anything later came from a run killed past its last checkpoint and is redone.
 */
export function keptLogEntries(log: readonly LogEntry[], step: number): LogEntry[] {
  return log.filter((e) => (e.loss !== undefined ? e.step < step : e.step <= step));
}

/** How a run ended: all its steps, or stopped early on request (a signal) with a checkpoint saved. */
export type TrainOutcome = 'done' | 'stopped';

export async function runTraining(
  opts: TrainOptions,
  emit: (e: TrainEvent) => void,
  control: { stopRequested?: () => boolean } = {},
): Promise<TrainOutcome> {
  const started = performance.now();
  const out = resolve(opts.out);
  const stopRequested = control.stopRequested ?? (() => false);
  checkReplaceable(out, [CHECKPOINT_MARKER]); // a folder of the user's is refused before any work
  let docs: TextSource[] | undefined;
  const readCorpus = () => {
    if (!docs) {
      emit({ type: 'status', message: 'reading the corpus' });
      const files = opts.data.length ? expandPaths(opts.data) : { files: defaultCorpusFiles(), skipped: [] };
      if (files.skipped.length > 0) emit({ type: 'status', message: skippedMessage(files.skipped) });
      docs = readDocuments(files.files, { encoding: opts.encoding ?? 'utf8' });
    }
    return docs;
  };
  const s = setup(opts, emit, () => readCorpus().map((d) => d.text));
  const tokText = tokenizerText(s.tokenizer);
  const tokenizer = Tokenizer.fromJSON(
    JSON.parse(tokText) as object,
    'file' in s.tokenizer ? s.tokenizer.file : 'tokenizer',
  );
  checkTokenizerFits(
    'file' in s.tokenizer ? s.tokenizer.file : 'the trained tokenizer',
    tokenizer.vocabSize,
    s.configFile,
    s.cfg.vocab_size,
  );
  const corpusDocs = readCorpus();
  emit({ type: 'status', message: `tokenizing ${corpusDocs.length} documents` });
  const corpus = tokenizeCorpus(corpusDocs, tokenizer, tokText, {
    cacheDir: join(opts.cacheDir, 'tokens'),
    valFraction: opts.valFraction,
  });
  const evalSet = evalBatches(corpus.val, opts.batchSize, opts.seqLen, opts.evalBatches);
  const schedule: Schedule = { ...opts.schedule, startStep: s.scheduleStart };
  const trainer = await Trainer.create(s.cfg, opts.optimizer, s.state, opts.threads, opts.device ?? 'cpu');
  const logPath = join(out, LOG_FILE);
  // A killed run may have logged steps past its last checkpoint: drop them so the log matches.
  const kept = keptLogEntries(readLog(logPath), s.state.step);
  const trainerState = savedSettings(opts);
  const save = async () => {
    await trainer.save(out, s.meta, {
      tokenizer: 'file' in s.tokenizer ? { from: s.tokenizer.file } : { text: s.tokenizer.text },
      trainerState,
    });
    s.tokenizer = { file: join(out, TOKENIZER_FILE) };
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
    // The starting point's validation loss (for a grown model: proof the function was kept),
    // unless the log already has it (a resumed run whose last save followed an evaluation).
    const startStep = trainer.state.step;
    const logged = kept.find((e) => e.val_loss !== undefined && e.step === startStep);
    if (logged) valLoss = logged.val_loss!;
    else await evaluate();
    while (trainer.state.step < opts.steps) {
      if (stopRequested()) {
        await save();
        emit({ type: 'stopped', step: trainer.state.step, dir: out });
        return 'stopped';
      }
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
    return 'done';
  } finally {
    await trainer.close();
  }
}

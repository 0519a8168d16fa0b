import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { type CheckpointMeta, CONFIG_FILE, loadCheckpoint, TOKENIZER_FILE } from '../model/checkpoint.ts';
import { defaultTau, type TokenFormerConfig, validateModelConfig } from '../model/config.ts';
import { initParams } from '../model/init.ts';
import { readAdamMoments } from '../model/optimizer-state.ts';
import { tokenizerJsonText, trainByteLevelBpe } from '../tokenizer/bpe-trainer.ts';
import { Tokenizer } from '../tokenizer/tokenizer.ts';
import { fail } from '../util/errors.ts';
import { readJsonFile } from '../util/files.ts';
import type { NewModelOptions, TrainEvent, TrainOptions } from './run.ts';
import { freshState, TRAINER_STATE_FILE, type TrainerState } from './trainer.ts';

/**
 * Where a run's weights, optimizer state and tokenizer come from: the run in --out (--resume), a
 * checkpoint (--init), or a new model, whose tokenizer is given (--tokenizer) or trained in memory.
 * Every check that needs no corpus happens here, before the corpus is read.
 */

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
  const saved = readJsonFile(join(dir, TRAINER_STATE_FILE), 'TF_ERR_BAD_CHECKPOINT') as {
    schedule?: { startStep?: number };
  };
  return saved.schedule?.startStep ?? 0;
}

export interface Setup {
  cfg: TokenFormerConfig;
  state: TrainerState;
  meta: Omit<CheckpointMeta, 'step'>;
  /** Where saves take the tokenizer from: a file, copied byte for byte, or one trained in memory. */
  tokenizer: { file: string } | { text: string };
  /** Where this run's learning-rate schedule starts (kept across --resume). */
  scheduleStart: number;
  /** The config the model came from, for messages ("the new model" when there is none). */
  configFile: string;
}

export const tokenizerText = (t: Setup['tokenizer']) => ('text' in t ? t.text : readFileSync(t.file, 'utf8'));

/** Refuses a --seq-len past the model's context (before the corpus is read). */
function checkSeqLen(opts: TrainOptions, cfg: TokenFormerConfig, where: string): void {
  if (opts.seqLen > cfg.max_seq_len) {
    fail(
      'TF_ERR_BAD_ARGS',
      `--seq-len ${opts.seqLen} exceeds the context of ${where} (max_seq_len ${cfg.max_seq_len})`,
    );
  }
}

/** Decides where weights, optimizer state and tokenizer come from. */
export function setup(opts: TrainOptions, emit: (e: TrainEvent) => void, texts: () => string[]): Setup {
  const out = resolve(opts.out);
  const hasState = existsSync(join(out, TRAINER_STATE_FILE));
  if (hasState && !opts.resume) {
    fail(
      'TF_ERR_BAD_ARGS',
      `${out} already holds a training run; pass --resume to continue it or choose another --out`,
    );
  }
  if (opts.resume && hasState) {
    const ck = loadCheckpoint(out);
    checkSeqLen(opts, ck.meta.model, out);
    const moments = readAdamMoments(out, ck.meta.model);
    if (!moments)
      fail('TF_ERR_BAD_CHECKPOINT', `${out}: optimizer.safetensors is missing; cannot resume exactly`);
    emit({ type: 'status', message: `resuming ${out} at step ${ck.meta.step}` });
    const { step: _s, ...meta } = ck.meta;
    return {
      cfg: ck.meta.model,
      state: { step: ck.meta.step, params: ck.params, ...moments },
      meta,
      tokenizer: { file: join(out, TOKENIZER_FILE) },
      scheduleStart: savedScheduleStart(out),
      configFile: join(out, CONFIG_FILE),
    };
  }
  if (opts.resume) emit({ type: 'status', message: `nothing to resume in ${out}; starting a new run` });
  const now = new Date().toISOString();
  if (opts.init) {
    if (opts.model || opts.tokenizer)
      fail(
        'TF_ERR_BAD_ARGS',
        'give either --init or a new model (architecture flags, --tokenizer), not both',
      );
    const ck = loadCheckpoint(opts.init);
    checkSeqLen(opts, ck.meta.model, opts.init);
    if (opts.steps <= ck.meta.step) {
      fail(
        'TF_ERR_BAD_ARGS',
        `--steps ${opts.steps} is not past ${opts.init}'s step ${ck.meta.step}: nothing to train ` +
          `(--steps counts from step 0; pass more than ${ck.meta.step})`,
      );
    }
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
      tokenizer: { file: tokenizerPath },
      scheduleStart: state.step,
      configFile: join(opts.init, CONFIG_FILE),
    };
  }
  if (!opts.model)
    fail(
      'TF_ERR_BAD_ARGS',
      'give --init DIR or a new model (--layers --hidden --heads --qkv-tokens --proj-tokens --ffn-tokens --vocab-size)',
    );
  const m = opts.model;
  // Validated before a tokenizer is trained: the vocabulary size is settled below.
  checkSeqLen(opts, newModelConfig({ ...m, vocabSize: m.vocabSize ?? 512 }), 'the new model (--max-seq-len)');
  let tokenizer: Setup['tokenizer'];
  let tok: Tokenizer;
  if (opts.tokenizer) {
    tok = Tokenizer.fromFile(opts.tokenizer);
    if (m.vocabSize !== undefined && m.vocabSize !== tok.vocabSize) {
      fail(
        'TF_ERR_BAD_ARGS',
        `--vocab-size ${m.vocabSize} differs from the ${tok.vocabSize} tokens of --tokenizer ${opts.tokenizer}: ` +
          'the embedding is sized to the tokenizer; leave --vocab-size out',
      );
    }
    emit({ type: 'status', message: `using the ${tok.vocabSize}-token tokenizer ${opts.tokenizer}` });
    tokenizer = { file: resolve(opts.tokenizer) };
  } else {
    if (m.vocabSize === undefined)
      fail('TF_ERR_BAD_ARGS', 'a new model needs --vocab-size N or --tokenizer FILE');
    const corpus = texts();
    emit({
      type: 'status',
      message: `training a ${m.vocabSize}-token byte-level BPE tokenizer on the corpus`,
    });
    const json = trainByteLevelBpe(corpus, { vocabSize: m.vocabSize });
    tok = Tokenizer.fromJSON(json, 'the trained tokenizer');
    if (tok.vocabSize < m.vocabSize) {
      emit({
        type: 'status',
        message:
          `warning: --vocab-size ${m.vocabSize}: the corpus supports only ${tok.vocabSize} tokens ` +
          `(no pair left to merge twice or more); the embedding has ${tok.vocabSize} rows`,
      });
    }
    tokenizer = { text: tokenizerJsonText(json) };
  }
  const cfg = newModelConfig({ ...m, vocabSize: tok.vocabSize });
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
    tokenizer,
    scheduleStart: 0,
    configFile: 'the new model',
  };
}

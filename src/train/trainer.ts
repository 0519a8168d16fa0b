import { existsSync, linkSync } from 'node:fs';
import { join } from 'node:path';
import { serializeModel } from '../graph/serialize.ts';
import { type CheckpointMeta, saveCheckpoint } from '../model/checkpoint.ts';
import type { TokenFormerConfig } from '../model/config.ts';
import { writeAdamMoments } from '../model/optimizer-state.ts';
import { paramSpecs } from '../model/params.ts';
import { OrtSession } from '../runtime/ort.ts';
import { writeJsonAtomic } from '../util/atomic.ts';
import { fail } from '../util/errors.ts';
import type { Batch } from './batches.ts';
import { biasCorrections } from './schedule.ts';
import {
  buildEvalGraph,
  buildTrainingStepGraph,
  type OptimizerConfig,
  STEP_OUTPUTS,
  stateName,
} from './training-step.ts';

/**
 * The training state and one step of it. Weights and Adam moments live in the trainer's own
 * Float32Arrays and enter each step as zero-copy inputs; the step's outputs (fresh arrays, copied
 * once by the binding) simply replace them. Runs on whatever thread creates it: the CLI runs it
 * in a worker thread so progress keeps drawing while onnxruntime blocks.
 */

export const TRAINER_STATE_FILE = 'trainer-state.json';
export const LOG_FILE = 'train-log.jsonl';

export interface TrainerState {
  step: number;
  params: Map<string, Float32Array>;
  m: Map<string, Float32Array>;
  v: Map<string, Float32Array>;
}

export interface StepResult {
  step: number;
  loss: number;
  gradNorm: number;
  lr: number;
  ms: number;
}

/** Fresh optimizer state: zero moments. */
export function freshState(
  cfg: TokenFormerConfig,
  params: Map<string, Float32Array>,
  step = 0,
): TrainerState {
  const zeros = () =>
    new Map(paramSpecs(cfg).map((s) => [s.name, new Float32Array(params.get(s.name)!.length)]));
  return { step, params, m: zeros(), v: zeros() };
}

export class Trainer {
  private constructor(
    readonly cfg: TokenFormerConfig,
    readonly opt: OptimizerConfig,
    readonly state: TrainerState,
    private readonly stepSession: OrtSession,
    private readonly evalSession: OrtSession,
  ) {}

  static async create(
    cfg: TokenFormerConfig,
    opt: OptimizerConfig,
    state: TrainerState,
    threads?: number,
    /** `cuda`: each step still feeds weights and moments from the host and copies them back. */
    device: 'cpu' | 'cuda' = 'cpu',
  ): Promise<Trainer> {
    const so = { device, ...(threads ? { intraOpThreads: threads } : {}) };
    const step = await OrtSession.create(
      serializeModel(buildTrainingStepGraph(cfg, opt), { graphName: 'train_step' }),
      so,
    );
    const ev = await OrtSession.create(serializeModel(buildEvalGraph(cfg), { graphName: 'eval' }), so);
    return new Trainer(cfg, opt, state, step, ev);
  }

  private weightFeeds(prefix: 'p' | 'm' | 'v', map: Map<string, Float32Array>) {
    const feeds: Record<string, readonly [Float32Array, readonly number[]]> = {};
    for (const s of paramSpecs(this.cfg)) feeds[stateName(prefix, s.name)] = [map.get(s.name)!, s.shape];
    return feeds;
  }

  /** One optimizer step at learning rate `lr`. Throws on a non-finite loss, keeping the state. */
  async step(batch: Batch, lr: number): Promise<StepResult> {
    const [bc1, bc2] = biasCorrections(this.opt.beta1, this.opt.beta2, this.state.step);
    const dims = [batch.batchSize, batch.seqLen];
    const t0 = performance.now();
    const out = await this.stepSession.run({
      input_ids: [batch.ids, dims],
      labels: [batch.labels, dims],
      ...this.weightFeeds('p', this.state.params),
      ...this.weightFeeds('m', this.state.m),
      ...this.weightFeeds('v', this.state.v),
      lr: [Float32Array.of(lr), []],
      bias_correction1: [Float32Array.of(bc1), []],
      bias_correction2: [Float32Array.of(bc2), []],
    });
    const ms = performance.now() - t0;
    const loss = (out[STEP_OUTPUTS.loss]!.data as Float32Array)[0]!;
    const gradNorm = (out[STEP_OUTPUTS.gradNorm]!.data as Float32Array)[0]!;
    if (!Number.isFinite(loss) || !Number.isFinite(gradNorm)) {
      fail(
        'TF_ERR_RUNTIME',
        `loss became ${loss} (gradient norm ${gradNorm}) at step ${this.state.step}; ` +
          'the weights were not updated — lower --lr or check the data',
      );
    }
    for (const s of paramSpecs(this.cfg)) {
      this.state.params.set(s.name, out[stateName('new_p', s.name)]!.data as Float32Array);
      this.state.m.set(s.name, out[stateName('new_m', s.name)]!.data as Float32Array);
      this.state.v.set(s.name, out[stateName('new_v', s.name)]!.data as Float32Array);
    }
    this.state.step++;
    return { step: this.state.step - 1, loss, gradNorm, lr, ms };
  }

  /** Mean loss over the batches (token-weighted). */
  async evaluate(batches: readonly Batch[]): Promise<number> {
    let sum = 0;
    let count = 0;
    for (const b of batches) {
      const dims = [b.batchSize, b.seqLen];
      const out = await this.evalSession.run({
        input_ids: [b.ids, dims],
        labels: [b.labels, dims],
        ...this.weightFeeds('p', this.state.params),
      });
      const n = b.batchSize * b.seqLen;
      sum += (out[STEP_OUTPUTS.loss]!.data as Float32Array)[0]! * n;
      count += n;
    }
    return sum / count;
  }

  /**
   * Saves the checkpoint with optimizer state into `dir`, atomically (built beside, swapped in):
   * a run killed mid-save leaves the previous checkpoint whole. The append-only training log is
   * hard-linked into the new directory, so appends continue into the same file.
   */
  async save(
    dir: string,
    meta: Omit<CheckpointMeta, 'step'>,
    extra: { tokenizer: { from: string } | { text: string }; trainerState: object },
  ): Promise<void> {
    await saveCheckpoint(dir, { ...meta, step: this.state.step }, this.state.params, {
      ...('from' in extra.tokenizer
        ? { tokenizerFrom: extra.tokenizer.from }
        : { tokenizerText: extra.tokenizer.text }),
      extra: (tmp) => {
        writeAdamMoments(tmp, this.cfg, this.state);
        writeJsonAtomic(join(tmp, TRAINER_STATE_FILE), { step: this.state.step, ...extra.trainerState });
        if (existsSync(join(dir, LOG_FILE))) linkSync(join(dir, LOG_FILE), join(tmp, LOG_FILE));
      },
    });
  }

  async close(): Promise<void> {
    await this.stepSession.release();
    await this.evalSession.release();
  }
}

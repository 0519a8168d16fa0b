import { existsSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { exportCheckpoint } from '../export/export.ts';
import {
  CONFIG_FILE,
  type Lineage,
  loadCheckpoint,
  readCheckpointMeta,
  saveCheckpoint,
  TOKENIZER_FILE,
} from '../model/checkpoint.ts';
import type { TokenFormerConfig } from '../model/config.ts';
import { growDirectory } from '../model/grow.ts';
import { paramCount } from '../model/params.ts';
import { writeFileAtomic, writeJsonAtomic } from '../util/atomic.ts';
import { trainFlopsPerToken } from './flops.ts';
import { trainInWorker } from './launch.ts';
import { type LogEntry, readLog } from './log.ts';
import { lineChartSvg } from './plot.ts';
import type { NewModelOptions, TrainEvent, TrainOptions } from './run.ts';
import { LOG_FILE } from './trainer.ts';
import { OFFICIAL_OPTIMIZER } from './training-step.ts';

/**
 * `npm run pipeline`: the everyday progressive-scaling workflow in one command. Train a base
 * model, grow it (parameter tokens appended, function kept), continue training the grown model,
 * train a from-scratch model of the grown size for the same total steps as a baseline, export
 * base and grown, and write a report (JSON, Markdown, SVG) that answers the paper's question in
 * miniature: does base + growth + continuation reach the from-scratch loss at lower cost?
 */

export interface PipelineOptions {
  out: string;
  data: string[];
  base: NewModelOptions;
  grown: { qkvTokens: number; projTokens: number; ffnTokens: number };
  baseSteps: number;
  growSteps: number;
  batchSize: number;
  seqLen: number;
  lr: number;
  seed: number;
  evalInterval: number;
  evalBatches: number;
  threads?: number;
  scratch: boolean;
  /** Copy base and grown, compact (F16, no optimizer state), to these directories. */
  ship?: { base: string; grown: string };
  cacheDir: string;
}

export const PIPELINE_DEFAULTS: Omit<PipelineOptions, 'out' | 'data' | 'cacheDir'> = {
  base: {
    layers: 4,
    hidden: 256,
    heads: 4,
    qkvTokens: 256,
    projTokens: 256,
    ffnTokens: 512,
    vocabSize: 2048,
    maxSeqLen: 512,
    rotaryPct: 0.25,
  },
  grown: { qkvTokens: 512, projTokens: 512, ffnTokens: 1024 },
  baseSteps: 600,
  growSteps: 400,
  batchSize: 8,
  seqLen: 128,
  lr: 3e-3,
  seed: 1234,
  evalInterval: 50,
  evalBatches: 16,
  scratch: true,
};

/** A few minutes on this machine: the shape of the full run, tiny. */
export const PIPELINE_QUICK: Omit<PipelineOptions, 'out' | 'data' | 'cacheDir'> = {
  ...PIPELINE_DEFAULTS,
  base: {
    layers: 2,
    hidden: 64,
    heads: 4,
    qkvTokens: 64,
    projTokens: 64,
    ffnTokens: 128,
    vocabSize: 512,
    maxSeqLen: 128,
    rotaryPct: 0.25,
  },
  grown: { qkvTokens: 128, projTokens: 128, ffnTokens: 256 },
  baseSteps: 60,
  growSteps: 40,
  batchSize: 8,
  seqLen: 64,
  evalInterval: 20,
  evalBatches: 4,
};

const readRunLog = (dir: string): LogEntry[] => readLog(join(dir, LOG_FILE));

export interface RunSummary {
  name: string;
  dir: string;
  parameters: number;
  steps: [number, number];
  start_val_loss: number;
  final_val_loss: number;
  final_val_ppl: number;
  train_seconds: number;
  train_flops: number;
}

function summarize(
  name: string,
  dir: string,
  cfg: TokenFormerConfig,
  seqLen: number,
  tokensPerStep: number,
): RunSummary {
  const log = readRunLog(dir);
  const steps = log.filter((e) => e.loss !== undefined);
  const vals = log.filter((e) => e.val_loss !== undefined);
  const final = vals[vals.length - 1]?.val_loss ?? Number.NaN;
  return {
    name,
    dir,
    parameters: paramCount(cfg),
    steps: [steps[0]?.step ?? 0, (steps[steps.length - 1]?.step ?? -1) + 1],
    start_val_loss: vals[0]?.val_loss ?? Number.NaN,
    final_val_loss: final,
    final_val_ppl: Math.exp(final),
    train_seconds: steps.reduce((s, e) => s + (e.ms ?? 0), 0) / 1000,
    train_flops: steps.length * tokensPerStep * trainFlopsPerToken(cfg, seqLen),
  };
}

/** Cumulative cost along base → grown when the validation loss first reaches `target`. */
function costToReach(
  target: number,
  segments: { log: LogEntry[]; flopsPerStep: number }[],
): { step: number; flops: number; seconds: number } | null {
  let flops = 0;
  let seconds = 0;
  for (const seg of segments) {
    let lastStep = -1;
    for (const e of seg.log) {
      if (e.loss !== undefined) {
        flops += seg.flopsPerStep;
        seconds += (e.ms ?? 0) / 1000;
        lastStep = e.step;
      }
      if (e.val_loss !== undefined && e.val_loss <= target && lastStep >= 0)
        return { step: e.step, flops, seconds };
    }
  }
  return null;
}

function markdown(report: PipelineReport): string {
  const rows = report.runs.map(
    (r) =>
      `| ${r.name} | ${(r.parameters / 1e6).toFixed(2)}M | ${r.steps[0]}–${r.steps[1]} | ${r.start_val_loss.toFixed(4)} | ` +
      `${r.final_val_loss.toFixed(4)} | ${r.final_val_ppl.toFixed(2)} | ${(r.train_flops / 1e12).toFixed(2)} | ${r.train_seconds.toFixed(0)} |`,
  );
  return [
    '# Progressive scaling report',
    '',
    `Corpus: ${report.corpus}. Batch ${report.batch_size} × ${report.seq_len} tokens per step.`,
    '',
    '| run | parameters | steps | val loss at start | final val loss | final val ppl | train TFLOPs | train seconds |',
    '|---|---|---|---|---|---|---|---|',
    ...rows,
    '',
    `Growth kept the function: validation loss ${report.growth.parent_val_loss.toFixed(6)} before, ` +
      `${report.growth.grown_val_loss.toFixed(6)} right after (|Δ| = ${report.growth.delta.toExponential(2)}).`,
    '',
    '## Does base + growth + continuation reach the from-scratch loss at lower cost?',
    '',
    report.answer,
    '',
    '![loss curves](loss-curves.svg)',
    '',
  ].join('\n');
}

export interface PipelineReport {
  corpus: string;
  batch_size: number;
  seq_len: number;
  runs: RunSummary[];
  growth: { parent_val_loss: number; grown_val_loss: number; delta: number };
  scratch_target_reached: { step: number; flops: number; seconds: number } | null;
  answer: string;
  exports: { base: string; grown: string };
  shipped: { base: string; grown: string } | null;
}

export async function runPipeline(
  o: PipelineOptions,
  emit: (stage: string, e?: TrainEvent) => void,
): Promise<PipelineReport> {
  const out = resolve(o.out);
  const dirs = {
    base: join(out, 'base'),
    grownInit: join(out, 'grown-init'),
    grown: join(out, 'grown'),
    scratch: join(out, 'scratch'),
  };
  const common: Omit<TrainOptions, 'out' | 'steps'> = {
    data: o.data,
    batchSize: o.batchSize,
    seqLen: o.seqLen,
    schedule: {
      kind: 'cosine',
      lr: o.lr,
      minLr: o.lr / 10,
      warmupSteps: Math.max(1, Math.round(o.baseSteps / 50)),
      totalSteps: 0,
    },
    optimizer: OFFICIAL_OPTIMIZER,
    seed: o.seed,
    evalInterval: o.evalInterval,
    evalBatches: o.evalBatches,
    saveInterval: 0,
    valFraction: 0.05,
    resume: true,
    cacheDir: o.cacheDir,
    ...(o.threads ? { threads: o.threads } : {}),
  };
  const train = (stage: string, opts: TrainOptions) => {
    emit(stage);
    return trainInWorker({ ...opts, schedule: { ...opts.schedule, totalSteps: opts.steps } }, (e) =>
      emit(stage, e),
    );
  };
  const total = o.baseSteps + o.growSteps;

  await train('base', { ...common, out: dirs.base, model: o.base, steps: o.baseSteps });
  emit('grow');
  if (!existsSync(join(dirs.grownInit, CONFIG_FILE))) {
    await growDirectory(dirs.base, dirs.grownInit, {
      target: { qkv: o.grown.qkvTokens, proj: o.grown.projTokens, ffn: o.grown.ffnTokens },
      init: 'zero',
      tau: 'keep',
      optimizer: 'carry',
      seed: o.seed,
    });
  }
  await train('grown', { ...common, out: dirs.grown, init: dirs.grownInit, steps: total });
  const baseCfg = loadCheckpoint(dirs.base).meta.model;
  const grownCfg = loadCheckpoint(dirs.grown).meta.model;
  if (o.scratch) {
    await train('scratch', {
      ...common,
      out: dirs.scratch,
      model: {
        ...o.base,
        qkvTokens: o.grown.qkvTokens,
        projTokens: o.grown.projTokens,
        ffnTokens: o.grown.ffnTokens,
      },
      tokenizer: join(dirs.base, TOKENIZER_FILE),
      steps: total,
      schedule: { ...common.schedule, warmupSteps: Math.max(1, Math.round(total / 50)) },
    });
  }
  emit('export');
  const exports = { base: join(out, 'base-onnx'), grown: join(out, 'grown-onnx') };
  await exportCheckpoint(dirs.base, exports.base);
  await exportCheckpoint(dirs.grown, exports.grown);

  const tokensPerStep = o.batchSize * o.seqLen;
  const runs = [
    summarize('base', dirs.base, baseCfg, o.seqLen, tokensPerStep),
    summarize('grown (continued)', dirs.grown, grownCfg, o.seqLen, tokensPerStep),
  ];
  const baseLog = readRunLog(dirs.base);
  const grownLog = readRunLog(dirs.grown);
  const parentVal = runs[0]!.final_val_loss;
  const grownVal = runs[1]!.start_val_loss;
  let answer = 'No from-scratch baseline was trained (--no-scratch).';
  let reached: PipelineReport['scratch_target_reached'] = null;
  const series = [
    {
      name: 'base',
      points: baseLog.filter((e) => e.val_loss !== undefined).map((e) => [e.step, e.val_loss!] as const),
    },
    {
      name: 'grown',
      points: grownLog.filter((e) => e.val_loss !== undefined).map((e) => [e.step, e.val_loss!] as const),
    },
  ];
  if (o.scratch) {
    const scratch = summarize('from scratch (grown size)', dirs.scratch, grownCfg, o.seqLen, tokensPerStep);
    runs.push(scratch);
    series.push({
      name: 'from scratch',
      points: readRunLog(dirs.scratch)
        .filter((e) => e.val_loss !== undefined)
        .map((e) => [e.step, e.val_loss!] as const),
    });
    reached = costToReach(scratch.final_val_loss, [
      { log: baseLog, flopsPerStep: tokensPerStep * trainFlopsPerToken(baseCfg, o.seqLen) },
      {
        log: grownLog.filter((e) => e.step >= o.baseSteps),
        flopsPerStep: tokensPerStep * trainFlopsPerToken(grownCfg, o.seqLen),
      },
    ]);
    const ours = runs[0]!.train_flops + runs[1]!.train_flops;
    answer = reached
      ? `Yes: base + growth + continuation reached the from-scratch model's final validation loss ` +
        `(${scratch.final_val_loss.toFixed(4)}) at step ${reached.step}, after ${(reached.flops / 1e12).toFixed(2)} TFLOPs ` +
        `and ${reached.seconds.toFixed(0)} s of training, against ${(scratch.train_flops / 1e12).toFixed(2)} TFLOPs and ` +
        `${scratch.train_seconds.toFixed(0)} s from scratch (${((100 * reached.flops) / scratch.train_flops).toFixed(0)}% of the FLOPs).`
      : `No, not within this budget: base + growth + continuation ended at validation loss ${runs[1]!.final_val_loss.toFixed(4)} ` +
        `(${(ours / 1e12).toFixed(2)} TFLOPs, ${(runs[0]!.train_seconds + runs[1]!.train_seconds).toFixed(0)} s) against ` +
        `${scratch.final_val_loss.toFixed(4)} from scratch (${(scratch.train_flops / 1e12).toFixed(2)} TFLOPs, ` +
        `${scratch.train_seconds.toFixed(0)} s).`;
  }
  let shipped: PipelineReport['shipped'] = null;
  if (o.ship) {
    emit('ship');
    let shippedBase: Lineage | null = null;
    for (const [src, dst] of [
      [dirs.base, o.ship.base],
      [dirs.grown, o.ship.grown],
    ] as const) {
      const ck = loadCheckpoint(src);
      // The grown model's lineage names the shipped base (its name and its F16 weights), not the
      // run's temporary fp32 checkpoint: `--draft-model auto` finds its parent by it.
      const parent = src === dirs.grown && shippedBase ? shippedBase : ck.meta.parent;
      const meta = {
        ...ck.meta,
        parent,
        provenance: { ...ck.meta.provenance, detail: `npm run pipeline (${src})` },
      };
      await saveCheckpoint(dst, meta, ck.params, { dtype: 'F16', tokenizerFrom: join(src, TOKENIZER_FILE) });
      if (src === dirs.base) {
        const saved = readCheckpointMeta(dst);
        shippedBase = { name: basename(dst), path: dst, sha256: saved.weights_sha256!, step: saved.step };
      }
    }
    shipped = o.ship;
  }
  const report: PipelineReport = {
    corpus: o.data.length
      ? o.data.join(', ')
      : 'default (State of the Union addresses + Moby-Dick, from npm)',
    batch_size: o.batchSize,
    seq_len: o.seqLen,
    runs,
    growth: { parent_val_loss: parentVal, grown_val_loss: grownVal, delta: Math.abs(parentVal - grownVal) },
    scratch_target_reached: reached,
    answer,
    exports,
    shipped,
  };
  writeJsonAtomic(join(out, 'report.json'), report);
  writeFileAtomic(join(out, 'report.md'), markdown(report));
  writeFileAtomic(
    join(out, 'loss-curves.svg'),
    lineChartSvg(series, {
      title: 'validation loss: base → grown vs from scratch',
      xLabel: 'step',
      yLabel: 'validation loss (nats/token)',
    }),
  );
  return report;
}

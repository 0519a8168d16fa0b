import { initParams } from '../model/init.ts';
import { EMBEDDING, paramCount } from '../model/params.ts';
import { measureOutputCopy, measurePeakMatmul } from '../runtime/roofline.ts';
import { trainBatch } from '../train/batches.ts';
import { trainFlopsPerToken } from '../train/flops.ts';
import type { NewModelOptions } from '../train/run.ts';
import { newModelConfig } from '../train/setup.ts';
import { freshState, Trainer } from '../train/trainer.ts';
import { OFFICIAL_OPTIMIZER } from '../train/training-step.ts';

/**
 * `npm run bench:train`: training tokens/s and model FLOP utilisation (model FLOP/s divided by
 * the peak MatMul FLOP/s onnxruntime reaches on this machine, measured in the same run), plus
 * the cost of the one output copy per step (new weights and moments; DESIGN.md §3).
 */

export interface TrainBenchOptions extends Omit<NewModelOptions, 'maxSeqLen' | 'rotaryPct'> {
  seqLen: number;
  batchSize: number;
  steps: number;
  threads?: number;
}

/** A ≈ 4M-parameter configuration: the size the training figures are quoted at. */
export const BENCH_4M: TrainBenchOptions = {
  layers: 4,
  hidden: 256,
  heads: 4,
  qkvTokens: 256,
  projTokens: 256,
  ffnTokens: 768,
  vocabSize: 2048,
  seqLen: 256,
  batchSize: 8,
  steps: 8,
};

export async function benchTraining(o: TrainBenchOptions) {
  const cfg = newModelConfig({ ...o, maxSeqLen: o.seqLen, rotaryPct: 0.25 });
  const peakGflops = await measurePeakMatmul(o.threads ? { threads: o.threads } : {});
  const tokens = Uint32Array.from({ length: 200_000 }, (_, i) => (i * 2654435761) % o.vocabSize);
  const trainer = await Trainer.create(
    cfg,
    OFFICIAL_OPTIMIZER,
    freshState(cfg, initParams(cfg, 1)),
    o.threads,
  );
  const ms: number[] = [];
  try {
    await trainer.step(trainBatch(tokens, o.batchSize, o.seqLen, 1, 0), 1e-4); // warm-up
    for (let s = 1; s <= o.steps; s++)
      ms.push((await trainer.step(trainBatch(tokens, o.batchSize, o.seqLen, 1, s), 1e-4)).ms);
  } finally {
    await trainer.close();
  }
  const sorted = [...ms].sort((a, b) => a - b);
  const stepMs = sorted[Math.floor(sorted.length / 2)]!;
  const tokensPerStep = o.batchSize * o.seqLen;
  const tokensPerS = tokensPerStep / (stepMs / 1000);
  const flopsPerToken = trainFlopsPerToken(cfg, o.seqLen);
  const modelGflops = (tokensPerS * flopsPerToken) / 1e9;
  const outputMib = (paramCount(cfg) * 3 * 4) / 2 ** 20;
  const copyMs = await measureOutputCopy({ mib: outputMib });
  return {
    config: cfg,
    parameters: paramCount(cfg),
    embedding_parameters: cfg.vocab_size * cfg.hidden_size,
    embedding_name: EMBEDDING,
    batch_size: o.batchSize,
    seq_len: o.seqLen,
    step_ms_median: stepMs,
    step_ms_all: ms,
    tokens_per_s: tokensPerS,
    train_flops_per_token: flopsPerToken,
    model_gflops: modelGflops,
    peak_matmul_gflops: peakGflops,
    mfu: modelGflops / peakGflops,
    step_output_mib: outputMib,
    step_output_copy_ms: copyMs,
    output_copy_fraction_of_step: copyMs / stepMs,
  };
}

import type { TokenFormerConfig } from '../../src/model/config.ts';
import { initParams } from '../../src/model/init.ts';
import { trainBatch } from '../../src/train/batches.ts';
import { freshState, Trainer } from '../../src/train/trainer.ts';
import { OFFICIAL_OPTIMIZER } from '../../src/train/training-step.ts';

/** Training tokens/s of the real Trainer (one ONNX training-step graph per step, AdamW). */
export async function trainSpeed(
  cfg: TokenFormerConfig,
  device: 'cpu' | 'cuda',
  o: { batch: number; seq: number; steps: number; deadline: number },
) {
  const tokens = Uint32Array.from(
    { length: 4 * o.batch * (o.seq + 1) },
    (_, i) => (i * 2654435761) % cfg.vocab_size,
  );
  const trainer = await Trainer.create(
    cfg,
    OFFICIAL_OPTIMIZER,
    freshState(cfg, initParams(cfg, 1)),
    undefined,
    device,
  );
  const ms: number[] = [];
  try {
    await trainer.step(trainBatch(tokens, o.batch, o.seq, 1, 0), 1e-4); // warm-up
    for (let s = 1; s <= o.steps && Date.now() < o.deadline; s++) {
      ms.push((await trainer.step(trainBatch(tokens, o.batch, o.seq, 1, s), 1e-4)).ms);
    }
  } finally {
    await trainer.close();
  }
  if (!ms.length) throw new Error('the warm-up step used the whole time budget');
  const median = [...ms].sort((a, b) => a - b)[Math.floor(ms.length / 2)]!;
  return {
    batch: o.batch,
    seq: o.seq,
    steps: ms.length,
    step_ms_median: median,
    tok_s: (o.batch * o.seq) / (median / 1000),
  };
}

import { ModelRunner } from './runner.ts';

/**
 * Perplexity through the serving graph itself (decoder.onnx, KV cache, one token per step, as a
 * stream is decoded), so a quantized export is measured exactly as it serves; the trainer's
 * evaluator runs the float training graph and cannot see quantization.
 */
export async function servedPerplexity(
  exportDir: string,
  windows: readonly Uint32Array[],
  opts: { threads?: number } = {},
): Promise<{ perplexity: number; nll: number; tokens: number }> {
  const runner = await ModelRunner.create(exportDir, {
    device: 'cpu',
    maxSequences: 1,
    ...(opts.threads ? { threads: opts.threads } : {}),
  });
  let nll = 0;
  let count = 0;
  try {
    for (const w of windows) {
      const id = runner.addSequence();
      let logits = await runner.prefill(id, [w[0]!]);
      for (let t = 1; t < w.length; t++) {
        let max = Number.NEGATIVE_INFINITY;
        for (const x of logits) if (x > max) max = x;
        let sum = 0;
        for (const x of logits) sum += Math.exp(x - max);
        nll += max + Math.log(sum) - logits[w[t]!]!;
        count++;
        if (t < w.length - 1) logits = await runner.decode([id], [w[t]!]);
      }
      runner.release(id);
    }
  } finally {
    await runner.close();
  }
  return { perplexity: Math.exp(nll / count), nll: nll / count, tokens: count };
}

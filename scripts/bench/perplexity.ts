import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Precision, precisionQuantization } from '../../src/bench/serving.ts';
import { resolveExport } from '../../src/engine/model-dir.ts';
import { servedPerplexity } from '../../src/engine/perplexity.ts';
import { TOKENIZER_FILE } from '../../src/model/checkpoint.ts';
import { Tokenizer } from '../../src/tokenizer/tokenizer.ts';
import { defaultCorpusFiles, readDocuments, tokenizeCorpus } from '../../src/train/corpus.ts';

/**
 * Perplexity of one checkpoint at each precision, on the validation split of the default corpus
 * as the pipeline splits it (5%), through each precision's serving graph.
 */
export async function benchPerplexity(o: {
  checkpoint: string;
  cacheDir: string;
  precisions: Precision[];
  windows: number;
  windowTokens: number;
  threads?: number;
}) {
  const tokPath = join(o.checkpoint, TOKENIZER_FILE);
  const tokenizer = Tokenizer.fromFile(tokPath);
  const corpus = tokenizeCorpus(
    readDocuments(defaultCorpusFiles()),
    tokenizer,
    readFileSync(tokPath, 'utf8'),
    {
      cacheDir: join(o.cacheDir, 'tokens'),
      valFraction: 0.05,
    },
  );
  const windows: Uint32Array[] = [];
  for (
    let at = 0;
    windows.length < o.windows && at + o.windowTokens <= corpus.val.length;
    at += o.windowTokens
  )
    windows.push(corpus.val.subarray(at, at + o.windowTokens));
  const out: Record<string, { perplexity: number; nll: number; tokens: number; vs_fp32?: number }> = {};
  for (const p of o.precisions) {
    const { exportDir } = await resolveExport(o.checkpoint, o.cacheDir, undefined, precisionQuantization(p));
    out[p] = await servedPerplexity(exportDir, windows, o.threads ? { threads: o.threads } : {});
  }
  const base = out.fp32?.perplexity;
  if (base) for (const r of Object.values(out)) r.vs_fp32 = r.perplexity / base - 1;
  return {
    checkpoint: o.checkpoint,
    windows: windows.length,
    window_tokens: o.windowTokens,
    precisions: out,
  };
}

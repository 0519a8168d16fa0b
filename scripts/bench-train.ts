import { BENCH_4M, benchTraining, type TrainBenchOptions } from '../src/bench/training.ts';
import { type FlagSpec, helpText, parseCommandLine, runMain } from '../src/util/cli.ts';

const USAGE =
  'npm run bench:train -- [--json] [--layers N --hidden N --heads N --qkv-tokens N --proj-tokens N --ffn-tokens N ' +
  '--vocab-size N] [--seq-len N] [--batch-size N] [--steps N] [--threads N]';

const KEYS: Record<string, keyof TrainBenchOptions> = {
  layers: 'layers',
  hidden: 'hidden',
  heads: 'heads',
  'qkv-tokens': 'qkvTokens',
  'proj-tokens': 'projTokens',
  'ffn-tokens': 'ffnTokens',
  'vocab-size': 'vocabSize',
  'seq-len': 'seqLen',
  'batch-size': 'batchSize',
  steps: 'steps',
  threads: 'threads',
};

const FLAGS: Record<string, FlagSpec> = {
  json: { kind: 'boolean', help: 'print the result as one JSON line' },
  ...Object.fromEntries(
    Object.entries(KEYS).map(([flag, key]) => [
      flag,
      {
        kind: 'int',
        min: 1,
        help: `${key} of the benched model or run`,
        default: String(BENCH_4M[key] ?? 'auto'),
      },
    ]),
  ),
};

const INTRO = 'Times training steps of a model (default: the 4M-parameter bench model) and reports MFU.';

runMain(async () => {
  const flags = parseCommandLine(USAGE, FLAGS) as Record<string, number | boolean | undefined>;
  if (flags.help) return void console.log(helpText(USAGE, INTRO, FLAGS));
  const o: TrainBenchOptions = { ...BENCH_4M };
  for (const [flag, key] of Object.entries(KEYS)) {
    const v = flags[flag];
    if (typeof v === 'number') o[key] = v;
  }
  const r = await benchTraining(o);
  if (flags.json) return void console.log(JSON.stringify(r));
  console.log(
    `${(r.parameters / 1e6).toFixed(2)}M parameters, batch ${r.batch_size} × seq ${r.seq_len}: ` +
      `${r.step_ms_median.toFixed(0)} ms/step, ${r.tokens_per_s.toFixed(0)} tokens/s, ` +
      `${r.model_gflops.toFixed(1)} model GFLOP/s of ${r.peak_matmul_gflops.toFixed(1)} peak MatMul → MFU ${r.mfu.toFixed(2)}; ` +
      `output copy ${r.step_output_mib.toFixed(1)} MiB ≈ ${r.step_output_copy_ms.toFixed(1)} ms (${(100 * r.output_copy_fraction_of_step).toFixed(1)}% of a step)`,
  );
});

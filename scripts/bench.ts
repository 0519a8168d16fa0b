import { type BenchOptions, runBench, syntheticModel } from '../src/bench/serving.ts';
import { parseFlags, runMain } from '../src/util/cli.ts';
import { fail } from '../src/util/errors.ts';

const USAGE =
  'npm run bench -- (--model DIR | --synthetic) [--json] [--threads N] [--prompt-tokens N] [--decode-tokens N] ' +
  '[--concurrency N] [--cache-dir DIR]';

runMain(async () => {
  const s = { type: 'string' } as const;
  const flags = parseFlags(USAGE, {
    model: s,
    synthetic: { type: 'boolean' },
    json: { type: 'boolean' },
    threads: s,
    'prompt-tokens': s,
    'decode-tokens': s,
    concurrency: s,
    'cache-dir': s,
  });
  if (flags.help) return void console.log(USAGE);
  const int = (name: string, v: string | undefined, fallback: number) => {
    if (v === undefined) return fallback;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1)
      fail('TF_ERR_BAD_ARGS', `--${name} must be a positive integer, got ${v}`);
    return n;
  };
  const cacheDir = flags['cache-dir'] ?? '.cache';
  if (!flags.model && !flags.synthetic)
    fail('TF_ERR_BAD_ARGS', `give --model DIR or --synthetic\nusage: ${USAGE}`);
  const o: BenchOptions = {
    model: flags.model ?? (await syntheticModel(cacheDir)),
    cacheDir,
    promptTokens: int('prompt-tokens', flags['prompt-tokens'], 512),
    decodeTokens: int('decode-tokens', flags['decode-tokens'], 64),
    concurrency: int('concurrency', flags.concurrency, 16),
    ...(flags.threads ? { threads: int('threads', flags.threads, 2) } : {}),
  };
  const r = await runBench(o);
  if (flags.json) return void console.log(JSON.stringify(r));
  const f = (x: number, d = 1) => x.toFixed(d);
  console.log(
    [
      `model ${r.model}: ${f(r.parameters / 1e6, 2)}M parameters (${f(r.weight_bytes / 2 ** 20)} MiB f32), device ${r.device}`,
      `machine: read bandwidth ${f(r.machine.read_bandwidth_gb_s)} GB/s, peak MatMul ${f(r.machine.peak_matmul_gflops)} GFLOP/s`,
      `prefill ${r.prefill.prompt_tokens} tokens: ${f(r.prefill.tokens_per_s, 0)} tokens/s (TTFT ${f(r.prefill.time_to_first_token_ms)} ms), ` +
        `${f(r.prefill.gflops)} GFLOP/s = ${f(r.prefill.fraction_of_peak_matmul, 2)} of peak MatMul`,
      `decode batch 1: ${f(r.decode_batch1.tokens_per_s)} tokens/s, ITL p50 ${f(r.decode_batch1.inter_token_latency_ms_p50)} ms ` +
        `p99 ${f(r.decode_batch1.inter_token_latency_ms_p99)} ms; tokens/s × weight bytes = ${f(r.decode_batch1.weight_bytes_per_s_fraction_of_bandwidth, 2)} of read bandwidth`,
      `decode ${r.decode_concurrent.sequences} concurrent: ${f(r.decode_concurrent.tokens_per_s)} tokens/s = ` +
        `${f(r.decode_concurrent.speedup_over_batch1, 2)}× batch 1; TTFT p50 ${f(r.decode_concurrent.time_to_first_token_ms_p50)} ms, ` +
        `ITL p50 ${f(r.decode_concurrent.inter_token_latency_ms_p50)} ms p99 ${f(r.decode_concurrent.inter_token_latency_ms_p99)} ms`,
      `memory: peak RSS ${f(r.memory.peak_rss_bytes / 2 ** 20)} MiB = ${f(r.memory.rss_over_2x_weights_plus_kv_budget, 2)} × (2 × weights + KV budget); ` +
        `KV ${r.memory.kv_bytes_per_token} B/token, ${f(r.memory.kv_bytes_per_sequence_at_max_context / 2 ** 20)} MiB per sequence at full context`,
    ].join('\n'),
  );
});

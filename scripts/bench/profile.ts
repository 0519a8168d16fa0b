import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { MessageChannel } from 'node:worker_threads';
import { ModelRunner } from '../../src/engine/runner.ts';
import { validateSamplingParams } from '../../src/engine/sampling/params.ts';
import { Sampler } from '../../src/engine/sampling/sampler.ts';
import { readManifest } from '../../src/export/export.ts';
import { headDim } from '../../src/model/config.ts';
import { type Feed, OrtSession } from '../../src/runtime/ort.ts';
import { completionChunk } from '../../src/server/openai.ts';
import { sseJson } from '../../src/server/sse.ts';

/**
 * Where a batch-1 decode step's time goes: onnxruntime's own profile of decoder.onnx (kernel
 * time by op type, nodes per step, after its graph optimizations, whose result is written to
 * `optimized.onnx` for inspection), the runner's step (feeds, run, cache writes), and the
 * per-token work around it: sampling, the worker→main message, the SSE chunk.
 */

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

function timeSync(n: number, fn: () => void): number {
  for (let i = 0; i < Math.min(50, n); i++) fn();
  const t = performance.now();
  for (let i = 0; i < n; i++) fn();
  return ((performance.now() - t) / n) * 1000; // µs
}

interface ProfileEvent {
  cat: string;
  name: string;
  dur: number;
  args?: { op_name?: string };
}

export async function profileDecode(o: {
  exportDir: string;
  context: number;
  steps: number;
  outDir: string;
  threads?: number;
}) {
  const m = readManifest(o.exportDir);
  const cfg = m.model;
  const [h, dh, layers, vocab] = [cfg.num_heads, headDim(cfg), cfg.num_layers, cfg.vocab_size];
  const decoder = m.graphs.find((g) => g.role === 'decoder')!;
  const out = resolve(o.outDir);
  mkdirSync(out, { recursive: true });
  const session = await OrtSession.create(join(o.exportDir, decoder.file), {
    device: 'cpu',
    optimizedModelPath: join(out, 'optimized.onnx'),
    profilePrefix: join(out, 'ort-profile'),
    ...(o.threads ? { intraOpThreads: o.threads } : {}),
  });
  const cap = o.context + 1;
  const feeds: Record<string, readonly [Feed, readonly number[]]> = {
    input_ids: [new BigInt64Array([1n]), [1, 1]],
    positions: [new BigInt64Array([BigInt(o.context)]), [1, 1]],
    past_lengths: [new BigInt64Array([BigInt(o.context)]), [1]],
  };
  for (let i = 0; i < layers; i++) {
    const fill = (n: number) => Float32Array.from({ length: n }, (_, j) => Math.sin(j * 0.37 + i));
    feeds[`past_key.${i}`] = [fill(h * dh * cap), [1, h, dh, cap]];
    feeds[`past_value.${i}`] = [fill(h * dh * cap), [1, h, cap, dh]];
  }
  const runMs: number[] = [];
  let logits: Float32Array = new Float32Array(vocab);
  for (let i = 0; i < o.steps + 10; i++) {
    const t = performance.now();
    const r = await session.run(feeds);
    if (i >= 10) runMs.push(performance.now() - t);
    logits = r.logits!.data as Float32Array;
  }
  session.endProfiling();
  await session.release();
  const file = readdirSync(out)
    .filter((f) => f.startsWith('ort-profile') && f.endsWith('.json'))
    .sort()
    .pop()!;
  const events = JSON.parse(readFileSync(join(out, file), 'utf8')) as ProfileEvent[];
  const runs = events.filter((e) => e.cat === 'Session' && e.name === 'model_run').length;
  const byOp = new Map<string, { nodes: number; us: number }>();
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time')) continue;
    const op = e.args?.op_name ?? '?';
    const r = byOp.get(op) ?? { nodes: 0, us: 0 };
    r.nodes++;
    r.us += e.dur;
    byOp.set(op, r);
  }
  const ops = [...byOp]
    .map(([op, r]) => ({ op, nodes_per_step: r.nodes / runs, us_per_step: r.us / runs }))
    .sort((a, b) => b.us_per_step - a.us_per_step);
  const kernelUs = ops.reduce((a, r) => a + r.us_per_step, 0);

  // The runner's whole step: feeds, run, the new keys/values written into the cache.
  const runner = await ModelRunner.create(o.exportDir, {
    device: 'cpu',
    maxSequences: 1,
    ...(o.threads ? { threads: o.threads } : {}),
  });
  const id = runner.addSequence();
  await runner.prefill(
    id,
    Array.from({ length: o.context }, (_, i) => (i * 7919) % vocab),
    512,
  );
  const stepMs: number[] = [];
  for (let i = 0; i < Math.min(o.steps, cfg.max_seq_len - o.context - 1); i++) {
    const t = performance.now();
    await runner.decode([id], [i % vocab]);
    stepMs.push(performance.now() - t);
  }
  await runner.close();

  // Per-token work outside onnxruntime.
  const greedy = new Sampler(validateSamplingParams({ temperature: 0 }), [], vocab);
  const nucleus = new Sampler(validateSamplingParams({ temperature: 0.8, top_p: 0.95, seed: 1 }), [], vocab);
  const topk = new Sampler(validateSamplingParams({ temperature: 0.8, top_k: 40, seed: 1 }), [], vocab);
  const ch = new MessageChannel();
  const message = {
    type: 'step',
    updates: [{ id: 1, tokens: [{ token: 42, logprob: -1.5 }] }],
    stats: { running: 1, waiting: 0, kvUsage: 0.1, kvBytes: 1e6, kvBytesPerToken: 1e3 },
  };
  const hops: number[] = [];
  for (let i = 0; i < 300; i++) {
    const t = performance.now();
    await new Promise<void>((r) => {
      ch.port2.once('message', () => r());
      ch.port1.postMessage(message);
    });
    hops.push((performance.now() - t) * 1000);
  }
  ch.port1.close();
  const meta = { id: 'cmpl-0123456789', created: 1, model: 'default', system_fingerprint: 'v1' };
  const chunk = () =>
    sseJson(completionChunk(meta, [{ index: 0, text: ' whale', logprobs: null, finish_reason: null }], null));
  return {
    export_dir: o.exportDir,
    quantization: m.quantization ?? null,
    context: o.context,
    onnxruntime: {
      run_ms_p50: median(runMs),
      kernel_us_per_step: kernelUs,
      nodes_per_step: ops.reduce((a, r) => a + r.nodes_per_step, 0),
      by_op: ops,
      profile_file: join(out, file),
      optimized_model: join(out, 'optimized.onnx'),
    },
    runner_step_ms_p50: median(stepMs),
    per_token_us: {
      sample_greedy: timeSync(2000, () => greedy.sample(logits)),
      sample_top_p: timeSync(2000, () => nucleus.sample(logits)),
      sample_top_k: timeSync(2000, () => topk.sample(logits)),
      worker_message_hop_p50: median(hops),
      sse_chunk_json: timeSync(20000, chunk),
    },
  };
}

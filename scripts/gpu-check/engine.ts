import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ModelRunner } from '../../src/engine/runner.ts';
import { DECODER_LOGIT_POSITIONS } from '../../src/export/decoder.ts';
import { DECODER_GRAPH_FILE, FULL_GRAPH_FILE, readManifest } from '../../src/export/export.ts';
import { GraphBuilder } from '../../src/graph/builder.ts';
import { serializeModel } from '../../src/graph/serialize.ts';
import { OrtSession, probeDeviceOutputs } from '../../src/runtime/ort.ts';
import { Rng } from '../../src/util/rng.ts';

/**
 * The engine-level figures of gpu-check: logits parity against the CPU, where each node kind ran
 * (onnxruntime's profile), prefill and batched decode through the real ModelRunner (host-owned KV
 * cache), and whether outputs can stay on the device. Every loop stops at `deadline`.
 */

export type Device = 'cpu' | 'cuda';

function tokens(n: number, vocab: number, seed: number): number[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => Math.floor(rng.nextFloat() * vocab));
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= m)) m = Number.isNaN(d) ? Number.POSITIVE_INFINITY : d;
  }
  return m;
}

async function fullLogits(
  exportDir: string,
  device: Device,
  ids: BigInt64Array,
  dims: number[],
): Promise<Float32Array> {
  const s = await OrtSession.create(join(exportDir, FULL_GRAPH_FILE), { device });
  try {
    return (await s.run({ input_ids: [ids, dims] })).logits!.data as Float32Array;
  } finally {
    await s.release();
  }
}

/** max |logits(device) − logits(CPU, float32)| of model.onnx for the float32 and float16 exports. */
export async function parity(
  exports: { fp32: string; fp16: string },
  device: Device,
  vocab: number,
  n: number,
): Promise<{ tokens: number; fp32_max_abs_diff: number; fp16_max_abs_diff: number; max_abs_logit: number }> {
  const ids = BigInt64Array.from(tokens(n, vocab, 11), BigInt);
  const dims = [1, n];
  const ref = await fullLogits(exports.fp32, 'cpu', ids, dims);
  const f32 = await fullLogits(exports.fp32, device, ids, dims);
  const f16 = await fullLogits(exports.fp16, device, ids, dims);
  let maxLogit = 0;
  for (const x of ref) maxLogit = Math.max(maxLogit, Math.abs(x));
  return {
    tokens: n,
    fp32_max_abs_diff: maxAbsDiff(f32, ref),
    fp16_max_abs_diff: maxAbsDiff(f16, ref),
    max_abs_logit: maxLogit,
  };
}

interface ProfileEvent {
  cat: string;
  name: string;
  args?: { op_name?: string; provider?: string };
}

/**
 * Which execution provider ran each node kind, from onnxruntime's profile of one prefill and one
 * decode step of the float16 decoder. Lists the nodes that did not run on `expected`.
 */
export async function placement(exportDir: string, device: Device, vocab: number, work: string) {
  const prefix = join(work, 'profile');
  const session = await OrtSession.create(join(exportDir, DECODER_GRAPH_FILE), {
    device,
    profilePrefix: prefix,
  });
  try {
    const layers = session.inputNames.filter((n) => n.startsWith('past_key.')).length;
    const meta = readManifest(exportDir);
    const h = meta.model.num_heads;
    const dh = meta.model.hidden_size / h;
    const cap = 8;
    const zeros = new Uint16Array(h * dh * cap);
    const feeds: Parameters<OrtSession['run']>[0] = {
      input_ids: [BigInt64Array.from(tokens(4, vocab, 3), BigInt), [1, 4]],
      positions: [BigInt64Array.from([0n, 1n, 2n, 3n]), [1, 4]],
      past_lengths: [BigInt64Array.from([0n]), [1]],
    };
    // The last new position's logits, as a plain decode step asks for them.
    if (session.inputNames.includes(DECODER_LOGIT_POSITIONS))
      feeds[DECODER_LOGIT_POSITIONS] = [BigInt64Array.from([3n]), [1, 1]];
    for (let i = 0; i < layers; i++) {
      feeds[`past_key.${i}`] = [zeros, [1, h, dh, cap], 'float16'];
      feeds[`past_value.${i}`] = [zeros, [1, h, cap, dh], 'float16'];
    }
    await session.run(feeds);
  } finally {
    await session.release();
  }
  const file = readdirSync(dirname(prefix))
    .filter((f) => f.startsWith('profile') && f.endsWith('.json'))
    .map((f) => join(dirname(prefix), f))
    .sort()
    .pop();
  if (!file) throw new Error('onnxruntime wrote no profile');
  const events = JSON.parse(readFileSync(file, 'utf8')) as ProfileEvent[];
  rmSync(file, { force: true });
  const byKind: Record<string, Record<string, number>> = {};
  const elsewhere: string[] = [];
  const expected = device === 'cuda' ? 'CUDAExecutionProvider' : 'CPUExecutionProvider';
  const seen = new Set<string>();
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time') || !e.args?.op_name) continue;
    const node = e.name.slice(0, -'_kernel_time'.length);
    if (seen.has(node)) continue;
    seen.add(node);
    const provider = e.args.provider ?? 'unknown';
    byKind[e.args.op_name] ??= {};
    const kind = byKind[e.args.op_name]!;
    kind[provider] = (kind[provider] ?? 0) + 1;
    if (provider !== expected) elsewhere.push(`${node} (${e.args.op_name} on ${provider})`);
  }
  return { expected, nodes: seen.size, by_op: byKind, not_on_expected: elsewhere };
}

export interface DecodeFigure {
  batch: number;
  prompt: number;
  new_tokens: number;
  prefill_s: number;
  decode_tok_s: number;
  ms_per_step: number;
  /** KV-cache bytes fed to the decoder at the last step (copied host → device on CUDA). */
  kv_bytes_fed_last_step: number;
  truncated?: boolean;
}

function argmaxRows(logits: Float32Array, rows: number, vocab: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < rows; r++) {
    let best = 0;
    let bestV = Number.NEGATIVE_INFINITY;
    for (let v = 0; v < vocab; v++) {
      const x = logits[r * vocab + v]!;
      if (x > bestV) {
        bestV = x;
        best = v;
      }
    }
    out.push(best);
  }
  return out;
}

/** Greedy decode through the ModelRunner: `batch` sequences of `prompt` tokens, then `newTokens` steps. */
export async function decode(
  exportDir: string,
  device: Device,
  o: { batch: number; prompt: number; newTokens: number; deadline: number },
): Promise<DecodeFigure> {
  const runner = await ModelRunner.create(exportDir, {
    device,
    maxSequences: o.batch,
    initialCapacity: o.prompt + o.newTokens,
  });
  try {
    const vocab = runner.vocabSize;
    const ids = Array.from({ length: o.batch }, () => runner.addSequence());
    const t0 = performance.now();
    let next: number[] = [];
    for (const [j, id] of ids.entries()) {
      const logits = await runner.prefill(id, tokens(o.prompt, vocab, 100 + j), o.prompt);
      next.push(argmaxRows(logits, 1, vocab)[0]!);
    }
    const prefillS = (performance.now() - t0) / 1000;
    // One untimed step warms the decode shapes; then `newTokens − 1` timed steps.
    next = argmaxRows(await runner.decode(ids, next), o.batch, vocab);
    const t1 = performance.now();
    let steps = 0;
    let truncated = false;
    for (; steps < o.newTokens - 2; steps++) {
      if (Date.now() > o.deadline) {
        truncated = true;
        break;
      }
      next = argmaxRows(await runner.decode(ids, next), o.batch, vocab);
    }
    const s = (performance.now() - t1) / 1000;
    const stats = runner.stats();
    return {
      batch: o.batch,
      prompt: o.prompt,
      new_tokens: steps + 2,
      prefill_s: prefillS,
      decode_tok_s: (o.batch * steps) / Math.max(s, 1e-9),
      ms_per_step: (1000 * s) / Math.max(steps, 1),
      kv_bytes_fed_last_step: stats.bytesPerToken * stats.capacity * o.batch,
      ...(truncated ? { truncated } : {}),
    };
  } finally {
    await runner.close();
  }
}

/** Prefill of one `n`-token prompt in one decoder run (batch 1), after one warm-up run. */
export async function prefill(exportDir: string, device: Device, n: number) {
  const runner = await ModelRunner.create(exportDir, { device, maxSequences: 1, initialCapacity: n });
  try {
    const prompt = tokens(n, runner.vocabSize, 5);
    const warm = runner.addSequence();
    await runner.prefill(warm, prompt.slice(0, Math.min(n, 64)), n);
    runner.release(warm);
    const id = runner.addSequence();
    const t0 = performance.now();
    await runner.prefill(id, prompt, n);
    const s = (performance.now() - t0) / 1000;
    return { tokens: n, prefill_s: s, tok_s: n / s };
  } finally {
    await runner.close();
  }
}

/** Can outputs stay on the device ('gpu-buffer') and be fed back? */
export async function deviceOutputs(device: Device) {
  const g = new GraphBuilder();
  const x = g.input('x', 'float32', ['n']);
  g.output(g.add(x, g.scalar(1)), 'y');
  return probeDeviceOutputs(serializeModel(g, { graphName: 'probe' }), device);
}

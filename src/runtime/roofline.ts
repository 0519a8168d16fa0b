import { GraphBuilder } from '../graph/builder.ts';
import { serializeModel } from '../graph/serialize.ts';
import { OrtSession } from './ort.ts';

/**
 * The machine's ceilings, measured with onnxruntime itself in the same run as a benchmark, so
 * every figure can be reported as a fraction of what this (shared, noisy) machine can do.
 */

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function timeRuns(
  session: OrtSession,
  feeds: Parameters<OrtSession['run']>[0],
  repeats: number,
): Promise<number[]> {
  await session.run(feeds); // warm-up
  const ms: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    await session.run(feeds);
    ms.push(performance.now() - t0);
  }
  return ms;
}

/** Peak MatMul throughput: best of several n×n·n×n products (GFLOP/s). */
export async function measurePeakMatmul(
  opts: { n?: number; repeats?: number; threads?: number } = {},
): Promise<number> {
  const n = opts.n ?? 1536;
  const g = new GraphBuilder();
  const a = g.input('a', 'float32', [n, n]);
  const b = g.input('b', 'float32', [n, n]);
  // Reduce to a scalar so the output copy (DESIGN.md §3) does not count against the MatMul.
  g.output(g.reduce('ReduceSum', g.matmul(a, b), [0, 1], false), 'sum');
  const s = await OrtSession.create(serializeModel(g, { graphName: 'peak_matmul' }), {
    device: 'cpu',
    ...(opts.threads ? { intraOpThreads: opts.threads } : {}),
  });
  const data = Float32Array.from({ length: n * n }, (_, i) => ((i * 7919) % 1000) / 1000 - 0.5);
  const ms = await timeRuns(s, { a: [data, [n, n]], b: [data, [n, n]] }, opts.repeats ?? 5);
  await s.release();
  return (2 * n ** 3) / (Math.min(...ms) / 1000) / 1e9;
}

/** Read bandwidth: ReduceSum over a buffer of `mib` MiB (GB/s, median of runs). */
export async function measureReadBandwidth(
  opts: { mib?: number; repeats?: number; threads?: number } = {},
): Promise<number> {
  const elems = ((opts.mib ?? 256) * 1024 * 1024) / 4;
  const g = new GraphBuilder();
  const x = g.input('x', 'float32', [elems]);
  g.output(g.reduce('ReduceSum', x, [0], false), 'sum');
  const s = await OrtSession.create(serializeModel(g, { graphName: 'read_bandwidth' }), {
    device: 'cpu',
    ...(opts.threads ? { intraOpThreads: opts.threads } : {}),
  });
  const data = new Float32Array(elems).fill(1);
  const ms = await timeRuns(s, { x: [data, [elems]] }, opts.repeats ?? 7);
  await s.release();
  return (elems * 4) / (median(ms) / 1000) / 1e9;
}

/** Cost of fetching an output of `mib` MiB from onnxruntime-node (graph Identity + binding copy), ms. */
export async function measureOutputCopy(opts: { mib: number; repeats?: number }): Promise<number> {
  const elems = Math.max(1, Math.round((opts.mib * 1024 * 1024) / 4));
  const g = new GraphBuilder();
  const x = g.input('x', 'float32', [elems]);
  g.output(g.mul(x, g.scalar(1)), 'y');
  const s = await OrtSession.create(serializeModel(g, { graphName: 'output_copy' }), { device: 'cpu' });
  const ms = await timeRuns(s, { x: [new Float32Array(elems), [elems]] }, opts.repeats ?? 5);
  await s.release();
  return median(ms);
}

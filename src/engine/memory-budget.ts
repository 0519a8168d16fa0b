import { statSync } from 'node:fs';
import { totalmem } from 'node:os';
import { join } from 'node:path';
import { type Manifest, manifestDType } from '../export/export.ts';
import { headDim } from '../model/config.ts';
import { fail } from '../util/errors.ts';

/**
 * What a loaded model is expected to take in memory, checked before a (second) model loads so
 * that a hot swap cannot take the process past its budget while both models are resident.
 * An estimate, not a measurement: the weights as onnxruntime holds them (the graph file, and its
 * external data, counted twice — the parsed initializers plus the kernels' pre-packed copies),
 * the KV cache at its largest (every slot at max_seq_len), and a fixed allowance for the worker
 * thread and session. `npm run soak` reports measured peak RSS against it.
 */

export interface MemoryEstimate {
  weightsBytes: number;
  kvBytes: number;
  overheadBytes: number;
  totalBytes: number;
}

/**
 * A worker thread's own share: its module graph, onnxruntime's session and arenas. Generous on
 * purpose (for models/default-grown the estimate is then 52 MiB weights + 64 MiB KV at 16 slots +
 * this); `npm run soak` reports measured peak RSS against the idle models.
 */
const WORKER_OVERHEAD_BYTES = 128 * 1024 * 1024;
const MIB = 1024 * 1024;

/** A graph's file and its external data, in bytes (0 when the manifest lists no such graph). */
function graphBytes(exportDir: string, graph: Manifest['graphs'][number] | undefined): number {
  if (!graph) return 0;
  let bytes = graph.bytes ?? statSync(join(exportDir, graph.file)).size;
  if (graph.external_data)
    bytes += graph.external_data_bytes ?? statSync(join(exportDir, graph.external_data)).size;
  return bytes;
}

export function estimateModelMemory(
  exportDir: string,
  manifest: Manifest,
  maxSequences: number,
): MemoryEstimate {
  const decoder = manifest.graphs.find((g) => g.role === 'decoder') ?? manifest.graphs[0];
  const m = manifest.model;
  const bytesPerToken =
    2 * m.num_layers * m.num_heads * headDim(m) * (manifestDType(manifest) === 'float16' ? 2 : 4);
  const weightsBytes = 2 * graphBytes(exportDir, decoder);
  const kvBytes = maxSequences * m.max_seq_len * bytesPerToken;
  const overheadBytes = WORKER_OVERHEAD_BYTES;
  return { weightsBytes, kvBytes, overheadBytes, totalBytes: weightsBytes + kvBytes + overheadBytes };
}

/**
 * Prompt scoring's session (the full-sequence graph, opened on the first scoring request in the
 * model's worker): its weights, counted like the decoder's.
 */
export function estimateScorerMemory(exportDir: string, manifest: Manifest): MemoryEstimate {
  const weightsBytes =
    2 *
    graphBytes(
      exportDir,
      manifest.graphs.find((g) => g.role === 'full'),
    );
  return { weightsBytes, kvBytes: 0, overheadBytes: 0, totalBytes: weightsBytes };
}

/** Two estimates together (a served model and its draft, which shares its worker). */
export function addMemory(a: MemoryEstimate, b: MemoryEstimate): MemoryEstimate {
  return {
    weightsBytes: a.weightsBytes + b.weightsBytes,
    kvBytes: a.kvBytes + b.kvBytes,
    overheadBytes: a.overheadBytes + b.overheadBytes,
    totalBytes: a.totalBytes + b.totalBytes,
  };
}

/**
 * The budget when none is configured: 80 % of the memory the process may use (its cgroup limit
 * in a container, else the machine's memory).
 */
export function defaultMemoryBudget(): number {
  const constrained = process.constrainedMemory?.() ?? 0;
  const limit = constrained > 0 && constrained < Number.MAX_SAFE_INTEGER ? constrained : totalmem();
  return Math.floor(0.8 * limit);
}

/** Refuses `next` (TF_ERR_NO_CAPACITY) when it and the models already loaded exceed `budget`. */
export function checkMemoryBudget(
  name: string,
  next: MemoryEstimate,
  loaded: readonly MemoryEstimate[],
  budget: number,
): void {
  const inUse = loaded.reduce((sum, e) => sum + e.totalBytes, 0);
  if (inUse + next.totalBytes <= budget) return;
  const mib = (n: number) => `${Math.ceil(n / MIB)} MiB`;
  fail(
    'TF_ERR_NO_CAPACITY',
    `model "${name}" needs about ${mib(next.totalBytes)} (weights ${mib(next.weightsBytes)}, KV cache ` +
      `${mib(next.kvBytes)}, worker ${mib(next.overheadBytes)}); with ${mib(inUse)} already loaded that ` +
      `exceeds the memory budget of ${mib(budget)} (--memory-budget-mb)`,
  );
}

import { closeSync, copyFileSync, existsSync, openSync, statSync, writeSync } from 'node:fs';
import { basename, isAbsolute, join, normalize } from 'node:path';
import type { GraphBuilder } from '../graph/builder.ts';
import { ONNX_OPSET, serializeModel } from '../graph/serialize.ts';
import type { Value } from '../graph/types.ts';
import {
  type Checkpoint,
  type Lineage,
  loadCheckpoint,
  type Provenance,
  TOKENIZER_CONFIG_FILE,
  TOKENIZER_FILE,
  weightsChecksum,
} from '../model/checkpoint.ts';
import { type TokenFormerConfig, validateModelConfig } from '../model/config.ts';
import { paramCount } from '../model/params.ts';
import { type GraphDType, PATTENTION_DOMAIN } from '../model/tokenformer.ts';
import {
  checkReplaceable,
  type OutputMarker,
  replaceDirAtomic,
  writeFileAtomic,
  writeJsonAtomic,
} from '../util/atomic.ts';
import { fail } from '../util/errors.ts';
import { fileSha256, fileSha256Async, readJsonFile } from '../util/files.ts';
import { buildDecoderGraph } from './decoder.ts';
import { buildFullSequenceGraph } from './full-sequence.ts';
import type { QuantBits, Quantization } from './quantize.ts';

/**
 * An export directory: manifest.json, model.onnx and decoder.onnx (each + `.data` when large),
 * tokenizer.json and, when the checkpoint has one, tokenizer_config.json.
 */

export const MANIFEST_FILE = 'manifest.json';
export const EXPORT_FORMAT = 'tokenformer-export';
export const FULL_GRAPH_FILE = 'model.onnx';
export const DECODER_GRAPH_FILE = 'decoder.onnx';
/** What an export may replace: only another export (never a checkpoint or a folder of the user's). */
export const EXPORT_MARKER: OutputMarker = {
  what: 'an export directory',
  file: MANIFEST_FILE,
  format: EXPORT_FORMAT,
};

/** Past this many initializer bytes the weights go to external data (protobuf caps at 2 GiB). */
export const EXTERNAL_DATA_THRESHOLD = 1536 * 1024 * 1024;

export interface GraphIO {
  name: string;
  dtype: string;
  shape: (number | string)[];
}

export interface GraphEntry {
  /**
   * What the graph is for: `full` (input_ids → logits, no cache) or `decoder` (the KV-cache
   * decoder of src/export/decoder.ts: cache as inputs, only new keys/values as outputs).
   */
  role: 'full' | 'decoder';
  file: string;
  external_data: string | null;
  sha256: string;
  /** Size of `file`; absent in manifests written before sizes were recorded. */
  bytes?: number;
  /** Checksum and size of `external_data` (absent in older manifests, null without one). */
  external_data_sha256?: string | null;
  external_data_bytes?: number | null;
  inputs: GraphIO[];
  outputs: GraphIO[];
}

export interface Manifest {
  format: typeof EXPORT_FORMAT;
  format_version: 1;
  model: TokenFormerConfig;
  parameters: number;
  tokenizer: { file: string; eos_token_id: number | null; sha256: string; bytes?: number } | null;
  /** Hugging Face tokenizer settings (the chat template), when the checkpoint has them. */
  tokenizer_config?: { file: string; sha256: string; bytes: number } | null;
  /** The checkpoint exported; `provenance` and `parent` (lineage) are copied from its config. */
  source: {
    checkpoint: string;
    weights_sha256: string;
    step: number;
    provenance?: Provenance;
    parent?: Lineage | null;
  };
  onnx: { opset: number; custom_ops: string[] };
  /**
   * Weight-only quantization of the serving graph (absent or null: float32). model.onnx is
   * always the full-precision graph.
   */
  quantization?: ManifestQuantization | null;
  /**
   * Weights, activations and the decoder's KV cache (`--dtype`); logits are float32 either way.
   * Absent in manifests written before float16 exports: float32.
   */
  dtype?: GraphDType;
  graphs: GraphEntry[];
  created: string;
}

export interface ManifestQuantization {
  /** com.microsoft.MatMulNBits, symmetric blocks (implicit zero point 2^(bits−1)). */
  method: 'MatMulNBits';
  bits: QuantBits;
  block_size: number;
  accuracy_level: number;
  /** What is quantized in decoder.onnx: every Pattention's keys and values, and the unembedding. */
  weights: 'pattention+unembedding';
}

/** The serving graphs' dtype of a manifest (older manifests: float32). */
export function manifestDType(m: Pick<Manifest, 'dtype'>): GraphDType {
  return m.dtype ?? 'float32';
}

/** How the serving graphs are written: one type, so every export option combines with the others. */
export interface ExportOptions {
  /** `auto` uses external data only past EXTERNAL_DATA_THRESHOLD. */
  externalData?: 'auto' | 'always' | 'never';
  /** Weight-only quantization of the serving graph (default: none, float32). */
  quantize?: Quantization;
  /** Weights and activations (float32 default; float16 for GPUs); logits stay float32. */
  dtype?: GraphDType;
  onProgress?: (message: string) => void;
}

function io(v: Value): GraphIO {
  return { name: v.name, dtype: v.dtype, shape: [...v.shape] };
}

function initializerBytes(g: GraphBuilder): number {
  return g.initializers.reduce((n, i) => n + i.data.data.byteLength, 0);
}

/** Serializes one graph into `dir/file`, with external data when asked or needed. */
function writeGraph(
  dir: string,
  file: string,
  role: GraphEntry['role'],
  g: GraphBuilder,
  cfg: TokenFormerConfig,
  mode: 'auto' | 'always' | 'never',
): GraphEntry {
  const external = mode === 'always' || (mode === 'auto' && initializerBytes(g) > EXTERNAL_DATA_THRESHOLD);
  const dataFile = `${file}.data`;
  const metadata = { 'tokenformer.config': JSON.stringify(cfg), 'tokenformer.role': role };
  if (external) {
    const fd = openSync(join(dir, dataFile), 'w');
    try {
      const bytes = serializeModel(g, {
        graphName: `tokenformer_${role}`,
        metadata,
        externalData: {
          location: dataFile,
          writeChunk: (chunk, offset) => {
            for (let done = 0; done < chunk.byteLength; ) {
              done += writeSync(fd, chunk, done, Math.min(chunk.byteLength - done, 1 << 30), offset + done);
            }
          },
        },
      });
      writeFileAtomic(join(dir, file), bytes);
    } finally {
      closeSync(fd);
    }
  } else {
    writeFileAtomic(join(dir, file), serializeModel(g, { graphName: `tokenformer_${role}`, metadata }));
  }
  return {
    role,
    file,
    external_data: external ? dataFile : null,
    sha256: fileSha256(join(dir, file)),
    bytes: statSync(join(dir, file)).size,
    external_data_sha256: external ? fileSha256(join(dir, dataFile)) : null,
    external_data_bytes: external ? statSync(join(dir, dataFile)).size : null,
    inputs: g.inputs.map(io),
    outputs: g.outputs.map(io),
  };
}

/** Exports a loaded checkpoint into `outDir` (replaced atomically). */
export async function exportModel(
  ckpt: Checkpoint,
  outDir: string,
  opts: ExportOptions = {},
): Promise<Manifest> {
  const cfg = ckpt.meta.model;
  const log = opts.onProgress ?? (() => {});
  let manifest: Manifest | undefined;
  await replaceDirAtomic(outDir, [EXPORT_MARKER], (tmp) => {
    const dtype = opts.dtype ?? 'float32';
    log(`building full-sequence graph (${dtype})`);
    const full = buildFullSequenceGraph(cfg, ckpt.params, dtype);
    log(`writing ${FULL_GRAPH_FILE}`);
    const mode = opts.externalData ?? 'auto';
    const graphs = [writeGraph(tmp, FULL_GRAPH_FILE, 'full', full, cfg, mode)];
    log('building KV-cache decoder graph');
    const decoder = buildDecoderGraph(cfg, ckpt.params, opts.quantize, { logitPositions: true, dtype });
    log(`writing ${DECODER_GRAPH_FILE}`);
    graphs.push(writeGraph(tmp, DECODER_GRAPH_FILE, 'decoder', decoder, cfg, mode));
    const tokSrc = join(ckpt.dir, TOKENIZER_FILE);
    const hasTok = ckpt.meta.tokenizer !== null && existsSync(tokSrc);
    if (hasTok) copyFileSync(tokSrc, join(tmp, TOKENIZER_FILE));
    const hasTokConfig = hasTok && existsSync(join(ckpt.dir, TOKENIZER_CONFIG_FILE));
    if (hasTokConfig) copyFileSync(join(ckpt.dir, TOKENIZER_CONFIG_FILE), join(tmp, TOKENIZER_CONFIG_FILE));
    manifest = {
      format: EXPORT_FORMAT,
      format_version: 1,
      model: cfg,
      parameters: paramCount(cfg),
      tokenizer: hasTok
        ? {
            file: TOKENIZER_FILE,
            eos_token_id: ckpt.meta.tokenizer?.eos_token_id ?? null,
            sha256: fileSha256(join(tmp, TOKENIZER_FILE)),
            bytes: statSync(join(tmp, TOKENIZER_FILE)).size,
          }
        : null,
      tokenizer_config: hasTokConfig
        ? {
            file: TOKENIZER_CONFIG_FILE,
            sha256: fileSha256(join(tmp, TOKENIZER_CONFIG_FILE)),
            bytes: statSync(join(tmp, TOKENIZER_CONFIG_FILE)).size,
          }
        : null,
      source: {
        checkpoint: ckpt.dir,
        // loadCheckpoint has checked the recorded checksum against the file: no second hash.
        weights_sha256: ckpt.meta.weights_sha256 ?? weightsChecksum(ckpt.dir),
        step: ckpt.meta.step,
        provenance: ckpt.meta.provenance,
        parent: ckpt.meta.parent,
      },
      onnx: { opset: ONNX_OPSET, custom_ops: [`${PATTENTION_DOMAIN}::Pattention`] },
      quantization: opts.quantize
        ? {
            method: 'MatMulNBits',
            bits: opts.quantize.bits,
            block_size: opts.quantize.blockSize,
            accuracy_level: opts.quantize.accuracyLevel,
            weights: 'pattention+unembedding',
          }
        : null,
      dtype,
      graphs,
      created: new Date().toISOString(),
    };
    writeJsonAtomic(join(tmp, MANIFEST_FILE), manifest);
  });
  return manifest!;
}

/** `npm run export`: checkpoint directory → export directory. */
export async function exportCheckpoint(
  checkpointDir: string,
  outDir: string,
  opts: ExportOptions = {},
): Promise<Manifest> {
  checkReplaceable(outDir, [EXPORT_MARKER]); // before minutes of work
  opts.onProgress?.(`loading ${checkpointDir}`);
  return exportModel(loadCheckpoint(checkpointDir), outDir, opts);
}

/**
 * Reads and checks an export directory's manifest.json (format, version, model config, graph
 * list); the model config is validated like a checkpoint's.
 */
export function readManifest(exportDir: string): Manifest {
  const path = join(exportDir, MANIFEST_FILE);
  const m = readJsonFile(path, 'TF_ERR_BAD_CHECKPOINT') as Partial<Manifest> | null;
  if (m?.format !== EXPORT_FORMAT || m.format_version !== 1) {
    fail('TF_ERR_BAD_CHECKPOINT', `${path}: not a ${EXPORT_FORMAT} manifest of format_version 1`);
  }
  if (!Array.isArray(m.graphs)) fail('TF_ERR_BAD_CHECKPOINT', `${path}: "graphs" must be an array`);
  if (m.dtype !== undefined && m.dtype !== 'float32' && m.dtype !== 'float16') {
    fail(
      'TF_ERR_BAD_CHECKPOINT',
      `${path}: "dtype" must be float32 or float16, got ${JSON.stringify(m.dtype)}`,
    );
  }
  return { ...(m as Manifest), model: validateModelConfig(m.model, `${path} (model)`) };
}

/** A file the manifest lists, with what it must be (`bytes`/`sha256` unknown in older manifests). */
interface ListedFile {
  file: string;
  bytes: number | undefined;
  sha256: string | undefined;
}

function listedFiles(m: Manifest): ListedFile[] {
  const files: ListedFile[] = [];
  for (const g of m.graphs) {
    files.push({ file: g.file, bytes: g.bytes, sha256: g.sha256 });
    if (g.external_data) {
      files.push({
        file: g.external_data,
        bytes: g.external_data_bytes ?? undefined,
        sha256: g.external_data_sha256 ?? undefined,
      });
    }
  }
  if (m.tokenizer)
    files.push({ file: m.tokenizer.file, bytes: m.tokenizer.bytes, sha256: m.tokenizer.sha256 });
  if (m.tokenizer_config) files.push({ ...m.tokenizer_config });
  return files;
}

/**
 * Reads the manifest and checks every file it lists — graphs, their external data, the tokenizer
 * and its config — exists with the recorded size and SHA-256, so a truncated, corrupted or mismatched model is
 * refused with the reason before onnxruntime sees it. Hashing streams, so the event loop keeps
 * serving while a swap verifies a large model. Errors name the model directory (not its full
 * path), the file and the problem.
 */
export async function verifyExport(exportDir: string): Promise<Manifest> {
  const manifest = readManifest(exportDir);
  const where = `model "${basename(exportDir)}"`;
  const bad = (message: string): never =>
    fail('TF_ERR_BAD_CHECKPOINT', `${where}: ${message}; re-export it from its checkpoint`);
  for (const f of listedFiles(manifest)) {
    if (typeof f.file !== 'string' || isAbsolute(f.file) || /^\.\.([/\\]|$)/.test(normalize(f.file))) {
      bad(`the manifest lists ${JSON.stringify(f.file)}, not a file inside the model directory`);
    }
    const path = join(exportDir, f.file);
    let size: number;
    try {
      const st = statSync(path);
      if (!st.isFile()) bad(`${f.file} is not a file`);
      size = st.size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') bad(`${f.file} is missing`);
      throw err;
    }
    if (f.bytes !== undefined && size < f.bytes) bad(`${f.file} is truncated: ${size} of ${f.bytes} bytes`);
    if (f.bytes !== undefined && size > f.bytes)
      bad(`${f.file} has ${size} bytes, the manifest lists ${f.bytes}`);
    if (f.sha256 !== undefined) {
      const actual = await fileSha256Async(path);
      if (actual !== f.sha256) {
        bad(
          `${f.file} checksum mismatch (sha256 ${actual.slice(0, 12)}…, the manifest lists ` +
            `${f.sha256.slice(0, 12)}…): the file is corrupted or belongs to another model`,
        );
      }
    }
  }
  return manifest;
}

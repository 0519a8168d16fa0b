import { closeSync, copyFileSync, existsSync, openSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { GraphBuilder } from '../graph/builder.ts';
import { ONNX_OPSET, serializeModel } from '../graph/serialize.ts';
import type { Value } from '../graph/types.ts';
import {
  type Checkpoint,
  fileSha256,
  loadCheckpoint,
  TOKENIZER_FILE,
  weightsChecksum,
} from '../model/checkpoint.ts';
import { type TokenFormerConfig, validateModelConfig } from '../model/config.ts';
import { paramCount } from '../model/params.ts';
import { PATTENTION_DOMAIN } from '../model/tokenformer.ts';
import { replaceDirAtomic, writeFileAtomic, writeJsonAtomic } from '../util/atomic.ts';
import { fail } from '../util/errors.ts';
import { buildDecoderGraph } from './decoder.ts';
import { buildFullSequenceGraph } from './full-sequence.ts';

/**
 * An export directory: manifest.json, model.onnx and decoder.onnx (each + `.data` when large),
 * tokenizer.json.
 */

export const MANIFEST_FILE = 'manifest.json';
export const EXPORT_FORMAT = 'tokenformer-export';
export const FULL_GRAPH_FILE = 'model.onnx';
export const DECODER_GRAPH_FILE = 'decoder.onnx';

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
  inputs: GraphIO[];
  outputs: GraphIO[];
}

export interface Manifest {
  format: typeof EXPORT_FORMAT;
  format_version: 1;
  model: TokenFormerConfig;
  parameters: number;
  tokenizer: { file: string; eos_token_id: number | null; sha256: string } | null;
  source: { checkpoint: string; weights_sha256: string; step: number };
  onnx: { opset: number; custom_ops: string[] };
  graphs: GraphEntry[];
  created: string;
}

export interface ExportOptions {
  /** `auto` uses external data only past EXTERNAL_DATA_THRESHOLD. */
  externalData?: 'auto' | 'always' | 'never';
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
  await replaceDirAtomic(outDir, (tmp) => {
    log('building full-sequence graph');
    const full = buildFullSequenceGraph(cfg, ckpt.params);
    log(`writing ${FULL_GRAPH_FILE}`);
    const mode = opts.externalData ?? 'auto';
    const graphs = [writeGraph(tmp, FULL_GRAPH_FILE, 'full', full, cfg, mode)];
    log('building KV-cache decoder graph');
    const decoder = buildDecoderGraph(cfg, ckpt.params);
    log(`writing ${DECODER_GRAPH_FILE}`);
    graphs.push(writeGraph(tmp, DECODER_GRAPH_FILE, 'decoder', decoder, cfg, mode));
    const tokSrc = join(ckpt.dir, TOKENIZER_FILE);
    const hasTok = ckpt.meta.tokenizer !== null && existsSync(tokSrc);
    if (hasTok) copyFileSync(tokSrc, join(tmp, TOKENIZER_FILE));
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
          }
        : null,
      source: { checkpoint: ckpt.dir, weights_sha256: weightsChecksum(ckpt.dir), step: ckpt.meta.step },
      onnx: { opset: ONNX_OPSET, custom_ops: [`${PATTENTION_DOMAIN}::Pattention`] },
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
  opts.onProgress?.(`loading ${checkpointDir}`);
  return exportModel(loadCheckpoint(checkpointDir), outDir, opts);
}

/**
 * Reads and checks an export directory's manifest.json (format, version, model config, graph
 * list); the model config is validated like a checkpoint's.
 */
export function readManifest(exportDir: string): Manifest {
  const path = join(exportDir, MANIFEST_FILE);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    fail('TF_ERR_NOT_FOUND', `cannot read ${path}: ${(err as Error).message}`, err);
  }
  const m = raw as Partial<Manifest> | null;
  if (m?.format !== EXPORT_FORMAT || m.format_version !== 1) {
    fail('TF_ERR_BAD_CHECKPOINT', `${path}: not a ${EXPORT_FORMAT} manifest of format_version 1`);
  }
  if (!Array.isArray(m.graphs)) fail('TF_ERR_BAD_CHECKPOINT', `${path}: "graphs" must be an array`);
  return { ...(m as Manifest), model: validateModelConfig(m.model, `${path} (model)`) };
}

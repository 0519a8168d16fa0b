import { existsSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { basename, isAbsolute, join, relative, resolve, sep } from 'node:path';
import {
  FULL_GRAPH_FILE,
  MANIFEST_FILE,
  type Manifest,
  type ManifestQuantization,
  readManifest,
} from '../export/export.ts';
import { CONFIG_FILE, WEIGHTS_FILE } from '../model/checkpoint.ts';
import { fail } from '../util/errors.ts';
import { DRAFT_AUTO, type DraftOptions, resolveDraft } from './draft.ts';
import { Engine, type EngineOptions } from './engine.ts';
import {
  addMemory,
  checkMemoryBudget,
  defaultMemoryBudget,
  estimateModelMemory,
  estimateScorerMemory,
  type MemoryEstimate,
} from './memory-budget.ts';
import { resolveExport } from './model-dir.ts';
import type { ModelRef } from './text-stream.ts';

/**
 * The model store: what lives under the models root and how one of its directories becomes a
 * running model. Names are confined to the root; a checkpoint is exported once (cached); the
 * memory budget is checked before a worker starts; a version id names the weights.
 */

export interface StoreOptions {
  modelsRoot: string;
  cacheDir: string;
  engine: Omit<EngineOptions, 'exportDir'>;
  /** Bytes every loaded model together may take (estimated); default: 80 % of the memory limit. */
  memoryBudgetBytes?: number;
  /** The draft model for speculative decoding (`--draft-model`); default `auto`. */
  draft?: DraftOptions;
  onProgress?: (message: string) => void;
}

export interface LoadedModel {
  /** Its directory's name under the models root (what /admin/swap takes). */
  name: string;
  /** The directory it was loaded from (checkpoint or export). */
  dir: string;
  /** Its files' fingerprint when loaded (see `fingerprintOf`). */
  fingerprint: string;
  /** Model version: the weights' checksum prefix and training step; clients may pin it. */
  version: string;
  /** Name and version, as responses report them. */
  ref: ModelRef;
  exportDir: string;
  engine: Engine;
  loadedAt: string;
  memory: MemoryEstimate;
  /** What prompt scoring adds once its session is open (see `inUse`). */
  scorerMemory: MemoryEstimate;
  /** The draft model speculative decoding uses for it (src/engine/draft.ts), if any. */
  draft?: string;
}

/** Where a model's weights came from, as /v1/models shows it (no server paths). */
export interface ModelLineage {
  /** How the weights came to be: `train`, `grow`, `import`, … */
  source: string | null;
  /** The checkpoint this one was grown from: its directory name and version. */
  parent: { name: string; version: string } | null;
  /** For growth: how the new parameter tokens were initialised, and τ. */
  growth: { init: 'zero' | 'random'; tau: 'keep' | 'recompute' } | null;
}

/**
 * The version id of a set of weights: `<sha256 prefix>-step<N>`, stable across restarts, with the
 * precision when quantized (`-int8`, `-int4`; `-int4b64` for another block size than 32), so a
 * quantized export of the same checkpoint is a version of its own.
 */
export function versionId(
  weightsSha256: string,
  step: number,
  quantization?: ManifestQuantization | null,
): string {
  const q = quantization
    ? `-int${quantization.bits}${quantization.block_size === 32 ? '' : `b${quantization.block_size}`}`
    : '';
  return `${weightsSha256.slice(0, 12)}-step${step}${q}`;
}

export function lineageOf(manifest: Manifest): ModelLineage {
  const s = manifest.source;
  return {
    source: s.provenance?.source ?? null,
    parent: s.parent
      ? { name: basename(s.parent.path), version: versionId(s.parent.sha256, s.parent.step) }
      : null,
    growth: s.provenance?.growth ?? null,
  };
}

/**
 * Resolves a model name under the models root: no absolute paths outside it, no `..`, no symlink
 * escapes (the real path must stay inside the root's real path).
 */
export function confineModelPath(modelsRoot: string, name: string): string {
  if (typeof name !== 'string' || name.trim() === '')
    fail('TF_ERR_BAD_ARGS', 'model name must be a non-empty string');
  const root = realpathSync(resolve(modelsRoot));
  const candidate = isAbsolute(name) ? resolve(name) : resolve(root, name);
  const rel = relative(root, candidate);
  if (rel === '' || rel.startsWith('..') || isAbsolute(rel) || rel.split(sep).includes('..')) {
    fail('TF_ERR_BAD_ARGS', `model "${name}" is not inside the models root`);
  }
  if (!existsSync(candidate))
    fail('TF_ERR_NOT_FOUND', `model "${name}" does not exist under the models root`);
  const real = realpathSync(candidate);
  const realRel = relative(root, real);
  if (realRel === '' || realRel.startsWith('..') || isAbsolute(realRel)) {
    fail('TF_ERR_BAD_ARGS', `model "${name}" resolves outside the models root`);
  }
  return real;
}

/**
 * What identifies a model directory's files on disk (sizes and modification times of its
 * manifest or config and weights): a change means a new version was written there.
 */
export function fingerprintOf(dir: string): string {
  return [MANIFEST_FILE, CONFIG_FILE, WEIGHTS_FILE, FULL_GRAPH_FILE]
    .map((f) => {
      const p = join(dir, f);
      if (!existsSync(p)) return '-';
      const st = statSync(p);
      return `${st.size}:${st.mtimeMs}`;
    })
    .join('|');
}

/** Models under the root (checkpoint or export directories). */
export function listModels(modelsRoot: string): { name: string; kind: 'checkpoint' | 'export' }[] {
  const root = resolve(modelsRoot);
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .filter((n) => statSync(join(root, n)).isDirectory())
    .flatMap((n) => {
      const kind = existsSync(join(root, n, MANIFEST_FILE))
        ? 'export'
        : existsSync(join(root, n, CONFIG_FILE))
          ? 'checkpoint'
          : null;
      return kind ? [{ name: n, kind }] : [];
    });
}

/** What a loaded model takes now: its estimate, plus prompt scoring's session once it opened. */
export function memoryOf(m: LoadedModel): MemoryEstimate {
  return m.engine.scorerOpened ? addMemory(m.memory, m.scorerMemory) : m.memory;
}

/**
 * Exports `dir` if it is a checkpoint (once, cached), checks the memory budget against the
 * models already loaded (`inUse`), picks its draft model (derived per load, so a swap or a
 * restart picks the draft for the model it loads; `strictDraft`: a named draft that cannot serve
 * is an error rather than dropped), and starts its worker.
 */
export async function loadModel(
  name: string,
  dir: string,
  opts: StoreOptions,
  inUse: readonly MemoryEstimate[],
  strictDraft = false,
): Promise<LoadedModel> {
  const fingerprint = fingerprintOf(dir);
  const { exportDir, verified } = await resolveExport(dir, opts.cacheDir, opts.onProgress);
  const manifest = verified ?? readManifest(exportDir);
  let memory = estimateModelMemory(exportDir, manifest, opts.engine.maxSequences);
  const budget = opts.memoryBudgetBytes ?? defaultMemoryBudget();
  checkMemoryBudget(name, memory, inUse, budget);
  const draftOpts = opts.draft ?? { model: DRAFT_AUTO };
  const { draft, reason } = await resolveDraft(
    { name, dir, manifest },
    draftOpts,
    {
      modelsRoot: opts.modelsRoot,
      cacheDir: opts.cacheDir,
      maxSequences: opts.engine.maxSequences,
      bytesLeft: budget - memory.totalBytes - inUse.reduce((n, m) => n + m.totalBytes, 0),
      resolveName: (n) => confineModelPath(opts.modelsRoot, n),
      ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
    },
    strictDraft,
  );
  opts.onProgress?.(
    draft
      ? `${name}: speculative decoding with draft model ${draft.name}`
      : `${name}: no draft model (${reason})`,
  );
  if (draft) memory = addMemory(memory, draft.memory);
  const engine = await Engine.start({
    ...opts.engine,
    exportDir,
    ...(verified ? { verified } : {}),
    ...(draft
      ? {
          draft: {
            exportDir: draft.exportDir,
            ...(draftOpts.maxDraft !== undefined ? { maxDraft: draftOpts.maxDraft } : {}),
            ...(draftOpts.maxBatch !== undefined ? { maxBatch: draftOpts.maxBatch } : {}),
          },
        }
      : {}),
  });
  if (engine.draft && !engine.draft.used)
    opts.onProgress?.(`${name}: the draft model is not used: ${engine.draft.reason}`);
  const m = engine.manifest;
  const version = versionId(m.source.weights_sha256, m.source.step, m.quantization);
  return {
    name,
    dir,
    fingerprint,
    version,
    ref: { name, version },
    exportDir,
    engine,
    loadedAt: new Date().toISOString(),
    memory,
    scorerMemory: estimateScorerMemory(exportDir, m),
    ...(draft && engine.draft?.used ? { draft: draft.name } : {}),
  };
}

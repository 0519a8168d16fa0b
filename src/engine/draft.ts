import { existsSync, readdirSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { MANIFEST_FILE, type Manifest, readManifest } from '../export/export.ts';
import { CONFIG_FILE, readCheckpointMeta } from '../model/checkpoint.ts';
import { fail, TokenFormerError } from '../util/errors.ts';
import { estimateModelMemory, type MemoryEstimate } from './memory-budget.ts';
import { resolveExport } from './model-dir.ts';

/**
 * Which draft model speculative decoding uses for a served model (`--draft-model`):
 *   `auto` (default) — the served model's parent from its lineage (the checkpoint it was grown
 *     from: it predicts much like it, exactly like it after a zero/keep growth), when that
 *     checkpoint is under the models root with the recorded weights and fits the memory budget;
 *     otherwise none;
 *   `none` — no draft;
 *   NAME — that model under the models root.
 * The draft must share the tokenizer and vocabulary and have at least the served context.
 */

export interface DraftOptions {
  /** `auto`, `none`, or a model name under the models root. */
  model: string;
  /** Most tokens drafted per step (k adapts in 1..maxDraft). */
  maxDraft?: number;
  /** Decode batches larger than this run without the draft. */
  maxBatch?: number;
}

export interface ResolvedDraft {
  name: string;
  dir: string;
  exportDir: string;
  /** What the draft adds to the served model's memory (it runs in the same worker). */
  memory: MemoryEstimate;
}

export interface DraftContext {
  modelsRoot: string;
  cacheDir: string;
  maxSequences: number;
  /** Bytes the draft may take (what the memory budget leaves after the served model). */
  bytesLeft: number;
  /** A name under the models root → its real directory (refusing escapes); throws when absent. */
  resolveName: (name: string) => string;
  onProgress?: (message: string) => void;
}

/** The served model as draft resolution sees it. */
export interface DraftTarget {
  name: string;
  dir: string;
  manifest: Manifest;
}

export const DRAFT_AUTO = 'auto';
export const DRAFT_NONE = 'none';

/**
 * Resolves the draft for `target`: the draft, or undefined with the reason. A named draft that
 * cannot serve fails (TF_ERR_BAD_ARGS or the load's error) when `strict`, else is dropped with
 * the reason, like `auto`.
 */
export async function resolveDraft(
  target: DraftTarget,
  opts: DraftOptions,
  ctx: DraftContext,
  strict: boolean,
): Promise<{ draft?: ResolvedDraft; reason?: string }> {
  if (opts.model === DRAFT_NONE) return { reason: '--draft-model none' };
  const named = opts.model !== DRAFT_AUTO;
  try {
    const found = named ? { name: opts.model, dir: ctx.resolveName(opts.model) } : findParent(target, ctx);
    if (typeof found === 'string') return { reason: found };
    const { exportDir, verified } = await resolveExport(found.dir, ctx.cacheDir, ctx.onProgress);
    const manifest = verified ?? readManifest(exportDir);
    const why = mismatch(target.manifest, manifest);
    if (why) fail('TF_ERR_BAD_ARGS', `draft model "${found.name}" cannot serve "${target.name}": ${why}`);
    const full = estimateModelMemory(exportDir, manifest, ctx.maxSequences);
    // The draft runs in the served model's worker: no second worker allowance.
    const memory = { ...full, overheadBytes: 0, totalBytes: full.weightsBytes + full.kvBytes };
    if (memory.totalBytes > ctx.bytesLeft) {
      fail(
        'TF_ERR_NO_CAPACITY',
        `draft model "${found.name}" needs about ${mib(memory.totalBytes)}; the memory budget leaves ` +
          `${mib(Math.max(0, ctx.bytesLeft))} (--memory-budget-mb)`,
      );
    }
    return { draft: { name: found.name, dir: found.dir, exportDir, memory } };
  } catch (err) {
    if ((named && strict) || !(err instanceof TokenFormerError)) throw err;
    return { reason: err.message };
  }
}

const mib = (n: number) => `${Math.ceil(n / (1024 * 1024))} MiB`;

/** Why `draft` cannot draft for `target`, or undefined. */
function mismatch(target: Manifest, draft: Manifest): string | undefined {
  if (target.tokenizer?.sha256 !== draft.tokenizer?.sha256) return 'the tokenizers differ';
  if (draft.model.vocab_size !== target.model.vocab_size)
    return `the vocabulary sizes differ (${draft.model.vocab_size} vs ${target.model.vocab_size})`;
  if (draft.model.max_seq_len < target.model.max_seq_len)
    return `its context (${draft.model.max_seq_len}) is shorter than the served model's (${target.model.max_seq_len})`;
  return undefined;
}

/** The weights checksum a model directory records (checkpoint config or export manifest). */
function recordedWeights(dir: string): string | undefined {
  try {
    if (existsSync(join(dir, MANIFEST_FILE))) return readManifest(dir).source.weights_sha256;
    if (existsSync(join(dir, CONFIG_FILE))) return readCheckpointMeta(dir).weights_sha256;
  } catch {
    // not a readable model: not the parent
  }
  return undefined;
}

/**
 * The served model's parent under the models root: by the name its lineage records, else any
 * model there whose recorded weights checksum is the lineage's. A string says why there is none.
 */
function findParent(target: DraftTarget, ctx: DraftContext): { name: string; dir: string } | string {
  const parent = target.manifest.source.parent;
  if (!parent) return `"${target.name}" records no parent in its lineage`;
  const candidates: string[] = [];
  if (parent.name) candidates.push(parent.name);
  if (existsSync(ctx.modelsRoot)) {
    for (const n of readdirSync(ctx.modelsRoot).sort()) {
      if (n !== parent.name && statSync(join(ctx.modelsRoot, n)).isDirectory()) candidates.push(n);
    }
  }
  for (const name of candidates) {
    let dir: string;
    try {
      dir = ctx.resolveName(name);
    } catch {
      continue;
    }
    if (dir === target.dir) continue;
    if (recordedWeights(dir) === parent.sha256) return { name: basename(dir), dir };
  }
  return (
    `the parent of "${target.name}" (${parent.name ?? parent.path}, weights ${parent.sha256.slice(0, 12)}…) ` +
    'is not under the models root'
  );
}

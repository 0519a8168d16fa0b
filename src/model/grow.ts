import { existsSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { SafeTensorsFile } from '../formats/safetensors.ts';
import { checkReplaceable } from '../util/atomic.ts';
import { fail } from '../util/errors.ts';
import { fillNormal, Rng } from '../util/rng.ts';
import {
  CHECKPOINT_MARKER,
  type Checkpoint,
  type CheckpointMeta,
  CONFIG_FILE,
  type Lineage,
  loadCheckpoint,
  readCheckpointMeta,
  type StorageDType,
  saveCheckpoint,
  TOKENIZER_FILE,
  WEIGHTS_FILE,
  weightsChecksum,
} from './checkpoint.ts';
import { defaultTau, PATTENTION_KINDS, type PattentionKind, type TokenFormerConfig } from './config.ts';
import { KEY_INIT_STD, valueInitStd } from './init.ts';
import { type AdamMoments, readAdamMoments, writeAdamMoments } from './optimizer-state.ts';
import { paramCount, paramSpecs, pattentionSites } from './params.ts';

/**
 * Progressive scaling (DESIGN.md §2 "Growth"): every Pattention gets more key/value parameter
 * tokens, appended after the old ones (rows 0..n_old−1 stay bit-for-bit). Depth, width, heads and
 * vocabulary never change, so a grown model has the KV-cache shapes of its parent.
 *
 * With `init: 'zero'` and `tau: 'keep'` the function is exactly preserved: zero keys give zero
 * scores, which leave ‖A‖₂ unchanged and give GELU(0) = 0, so the new values (random, so that
 * gradients reach the new keys) are multiplied by zero. `init: 'random'` + `tau: 'recompute'` is
 * what the official code does (its output changes at growth).
 */

/** New token count per kind; an omitted kind keeps its count. */
export type GrowTarget = Partial<Record<PattentionKind, number>>;

export interface GrowOptions {
  /** New keys: zeros (function-preserving) or N(0, 0.02²) (official). */
  init: 'zero' | 'random';
  /** `keep`: τ unchanged; `recompute`: τ = √n_new for each grown kind (official). */
  tau: 'keep' | 'recompute';
  /** Seeds the new rows' random draws. */
  seed: number;
  /** `carry`: Adam moments of old rows copied, zeros for new rows; `reset`: no optimizer state. */
  optimizer: 'carry' | 'reset';
}

export const DEFAULT_GROW_OPTIONS: GrowOptions = { init: 'zero', tau: 'keep', seed: 0, optimizer: 'carry' };

export type TokenCounts = Record<PattentionKind, number>;

export interface GrowResult {
  meta: CheckpointMeta;
  params: Map<string, Float32Array>;
  /** Grown Adam moments (`carry` with moments in the source); null: training starts fresh. */
  moments: AdamMoments | null;
  /** What happened to the optimizer state. */
  optimizer: 'carried' | 'reset' | 'none-in-source';
  options: GrowOptions;
  from: TokenCounts;
  to: TokenCounts;
}

function counts(cfg: TokenFormerConfig): TokenCounts {
  return { qkv: cfg.qkv.tokens, proj: cfg.proj.tokens, ffn: cfg.ffn.tokens };
}

function formatCounts(c: TokenCounts): string {
  return PATTENTION_KINDS.map((k) => `${k} ${c[k]}`).join(', ');
}

function checkOptions(o: GrowOptions): void {
  if (o.init !== 'zero' && o.init !== 'random') {
    fail('TF_ERR_BAD_ARGS', `init must be zero or random, got ${String(o.init)}`);
  }
  if (o.tau !== 'keep' && o.tau !== 'recompute') {
    fail('TF_ERR_BAD_ARGS', `tau must be keep or recompute, got ${String(o.tau)}`);
  }
  if (o.optimizer !== 'carry' && o.optimizer !== 'reset') {
    fail('TF_ERR_BAD_ARGS', `optimizer must be carry or reset, got ${String(o.optimizer)}`);
  }
  if (!Number.isSafeInteger(o.seed)) fail('TF_ERR_BAD_ARGS', `seed must be an integer, got ${o.seed}`);
}

/**
 * Resolves the target against the current counts and refuses what growth cannot do: a count
 * that is not a positive integer, a shrink, or a target equal to the current counts.
 */
export function planGrowth(
  cfg: TokenFormerConfig,
  target: GrowTarget,
): { from: TokenCounts; to: TokenCounts } {
  const from = counts(cfg);
  const to = { ...from };
  for (const key of Object.keys(target)) {
    if (!(PATTENTION_KINDS as readonly string[]).includes(key)) {
      fail(
        'TF_ERR_BAD_ARGS',
        `cannot grow "${key}": only the token counts qkv, proj and ffn can grow (depth, width, heads ` +
          'and vocabulary stay as they are)',
      );
    }
  }
  for (const k of PATTENTION_KINDS) {
    const n = target[k];
    if (n === undefined) continue;
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n <= 0) {
      fail('TF_ERR_BAD_ARGS', `${k} token count must be a positive integer, got ${String(n)}`);
    }
    if (n < from[k]) {
      fail(
        'TF_ERR_BAD_ARGS',
        `cannot shrink ${k} from ${from[k]} to ${n} tokens: growth only appends parameter tokens ` +
          `(give ${k} ≥ ${from[k]})`,
      );
    }
    to[k] = n;
  }
  if (PATTENTION_KINDS.every((k) => to[k] === from[k])) {
    fail(
      'TF_ERR_BAD_ARGS',
      `nothing to grow: the target equals the current token counts (${formatCounts(from)}); ` +
        'give a larger qkv, proj or ffn count',
    );
  }
  return { from, to };
}

/** A copy of `old` with `rows` more rows of `width` appended, filled by `fill` (zeros if none). */
function appendRows(old: Float32Array, rows: number, width: number, fill?: (tail: Float32Array) => void) {
  const out = new Float32Array(old.length + rows * width);
  out.set(old);
  fill?.(out.subarray(old.length));
  return out;
}

function lineageOf(dir: string, step: number): Lineage {
  return { path: resolve(dir), sha256: weightsChecksum(dir), step };
}

/**
 * Grows a loaded checkpoint to `target` token counts. Returns the new meta (step and tokenizer of
 * the parent, provenance `grow`, lineage to `ck.dir`), the grown parameters and, for
 * `optimizer: 'carry'`, the grown Adam moments read from `ck.dir` when it has any.
 */
export function growCheckpoint(
  ck: Checkpoint,
  target: GrowTarget,
  options: Partial<GrowOptions> = {},
  parent: Lineage = lineageOf(ck.dir, ck.meta.step),
): GrowResult {
  const opts = { ...DEFAULT_GROW_OPTIONS, ...options };
  checkOptions(opts);
  const old = ck.meta.model;
  const { from, to } = planGrowth(old, target);
  const d = old.hidden_size;

  const model: TokenFormerConfig = { ...old };
  for (const k of PATTENTION_KINDS) {
    const grown = to[k] !== from[k];
    model[k] = { tokens: to[k], tau: grown && opts.tau === 'recompute' ? defaultTau(to[k]) : old[k].tau };
  }

  // Values and keys draw from separate streams, so the new values of a seed do not depend on --init.
  const valueRng = new Rng(opts.seed);
  const keyRng = new Rng(new Rng(opts.seed).nextUint32());
  const valueStd = valueInitStd(old);
  const params = new Map<string, Float32Array>();
  for (const s of paramSpecs(model)) params.set(s.name, ck.params.get(s.name)!);
  for (const site of pattentionSites(model)) {
    const rows = to[site.kind] - from[site.kind];
    if (rows === 0) continue;
    const keys = `${site.prefix}.keys`;
    const values = `${site.prefix}.values`;
    params.set(
      keys,
      appendRows(
        ck.params.get(keys)!,
        rows,
        d,
        opts.init === 'random' ? (t) => fillNormal(keyRng, t, KEY_INIT_STD) : undefined,
      ),
    );
    params.set(
      values,
      appendRows(ck.params.get(values)!, rows, d, (t) => fillNormal(valueRng, t, valueStd)),
    );
  }

  let moments: AdamMoments | null = null;
  let optimizer: GrowResult['optimizer'] = 'reset';
  if (opts.optimizer === 'carry') {
    const src = readAdamMoments(ck.dir, old);
    optimizer = src ? 'carried' : 'none-in-source';
    if (src) {
      const grow = (map: Map<string, Float32Array>) =>
        new Map(
          paramSpecs(model).map((s) => {
            const have = map.get(s.name)!;
            const want = s.shape.reduce((a, b) => a * b, 1);
            return [
              s.name,
              want === have.length ? have : appendRows(have, (want - have.length) / d, d),
            ] as const;
          }),
        );
      moments = { m: grow(src.m), v: grow(src.v) };
    }
  }

  const grew = PATTENTION_KINDS.filter((k) => to[k] !== from[k])
    .map((k) => `${k} ${from[k]}→${to[k]}`)
    .join(', ');
  const { weights_sha256: _parentSum, ...parentMeta } = ck.meta; // the new file gets its own at save
  const meta: CheckpointMeta = {
    ...parentMeta,
    model,
    provenance: {
      source: 'grow',
      detail:
        `grew parameter tokens ${grew} from ${parent.path} (step ${parent.step}); new keys ${opts.init}, ` +
        `new values N(0, ${valueStd.toPrecision(4)}²), tau ${opts.tau}, optimizer ${optimizer}, seed ${opts.seed}`,
      growth: { init: opts.init, tau: opts.tau },
      created: new Date().toISOString(),
    },
    step: ck.meta.step,
    parent,
  };
  return { meta, params, moments, optimizer, options: opts, from, to };
}

/** F32 unless every stored weight is F16 or every one BF16 (a shipped model stays compact). */
function storageDType(dir: string): StorageDType {
  const file = SafeTensorsFile.open(join(dir, WEIGHTS_FILE));
  try {
    const dtypes = new Set([...file.tensors.values()].map((t) => t.dtype));
    const only = dtypes.size === 1 ? [...dtypes][0] : undefined;
    return only === 'F16' || only === 'BF16' ? only : 'F32';
  } finally {
    file.close();
  }
}

/** Refuses an --out that would replace the source or an unrelated non-empty directory. */
function checkOutDir(srcDir: string, outDir: string): void {
  const src = resolve(srcDir);
  const out = resolve(outDir);
  const rel = relative(out, src);
  if (rel === '' || !rel.startsWith('..')) {
    fail('TF_ERR_BAD_ARGS', `--out ${out} would replace the checkpoint being grown (${src}); choose another`);
  }
  checkReplaceable(out, [CHECKPOINT_MARKER]);
}

export interface GrowDirectoryOptions extends Partial<GrowOptions> {
  target: GrowTarget;
  onProgress?: (message: string) => void;
}

export interface GrowDirectoryResult extends Omit<GrowResult, 'params' | 'moments'> {
  parametersBefore: number;
  parametersAfter: number;
}

/**
 * `npm run grow`: checkpoint directory → new grown checkpoint directory, written atomically.
 * Every refusal happens before anything is written. The new directory holds config.json,
 * model.safetensors, tokenizer.json (copied) and, when moments are carried, optimizer.safetensors;
 * never trainer-state.json, so training from it is a new run starting at the parent's step.
 */
export async function growDirectory(
  srcDir: string,
  outDir: string,
  options: GrowDirectoryOptions,
): Promise<GrowDirectoryResult> {
  const log = options.onProgress ?? (() => {});
  const { target, onProgress: _p, ...rest } = options;
  const opts = { ...DEFAULT_GROW_OPTIONS, ...rest };
  checkOptions(opts);
  checkOutDir(srcDir, outDir);
  const srcMeta = readCheckpointMeta(srcDir);
  planGrowth(srcMeta.model, target); // refuse before reading any weights
  const parent = lineageOf(srcDir, srcMeta.step);
  log(`loading ${resolve(srcDir)}`);
  const ck = loadCheckpoint(srcDir);
  const result = growCheckpoint(ck, target, opts, parent);
  const tokenizerFrom = ck.meta.tokenizer ? join(srcDir, ck.meta.tokenizer.file) : undefined;
  if (tokenizerFrom && !existsSync(tokenizerFrom)) {
    fail(
      'TF_ERR_NOT_FOUND',
      `${tokenizerFrom}: the tokenizer named in ${join(srcDir, CONFIG_FILE)} is missing`,
    );
  }
  const meta: CheckpointMeta = {
    ...result.meta,
    tokenizer: ck.meta.tokenizer ? { ...ck.meta.tokenizer, file: TOKENIZER_FILE } : null,
  };
  log(`writing ${resolve(outDir)}`);
  const moments = result.moments;
  await saveCheckpoint(outDir, meta, result.params, {
    dtype: storageDType(srcDir),
    ...(tokenizerFrom ? { tokenizerFrom } : {}),
    ...(moments ? { extra: (tmp: string) => writeAdamMoments(tmp, meta.model, moments) } : {}),
  });
  const { params: _params, moments: _moments, ...info } = result;
  return {
    ...info,
    meta,
    parametersBefore: paramCount(ck.meta.model),
    parametersAfter: paramCount(meta.model),
  };
}

/** The one-line summary `npm run grow` prints. */
export function growSummary(outDir: string, r: GrowDirectoryResult): string {
  const tokens = PATTENTION_KINDS.map((k) => `${k} ${r.from[k]}→${r.to[k]}`).join(', ');
  const taus = PATTENTION_KINDS.map((k) => `${k} ${r.meta.model[k].tau.toFixed(3)}`).join(', ');
  const optimizer = {
    carried: 'Adam moments carried (new rows zero)',
    reset: 'optimizer reset',
    'none-in-source': 'no optimizer state in source (training starts fresh)',
  }[r.optimizer];
  return (
    `grew → ${resolve(outDir)}: tokens ${tokens}; parameters ${r.parametersBefore.toLocaleString('en-US')} → ` +
    `${r.parametersAfter.toLocaleString('en-US')}; τ ${r.options.tau} (${taus}); new keys ${r.options.init}; ${optimizer}; ` +
    `step ${r.meta.step}`
  );
}

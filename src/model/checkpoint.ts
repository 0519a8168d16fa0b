import { copyFileSync, existsSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { SafeTensorsFile, writeSafeTensors } from '../formats/safetensors.ts';
import { type OutputMarker, replaceDirAtomic, writeFileAtomic, writeJsonAtomic } from '../util/atomic.ts';
import { fail } from '../util/errors.ts';
import { fileSha256, readJsonFile } from '../util/files.ts';
import { type TokenFormerConfig, validateModelConfig } from './config.ts';
import { type ParamSpec, paramSpecs } from './params.ts';

/**
 * Our checkpoint directory: `config.json` (CheckpointMeta), `model.safetensors` (parameters by
 * the names of params.ts) and `tokenizer.json` when there is one.
 */

export const CONFIG_FILE = 'config.json';
export const WEIGHTS_FILE = 'model.safetensors';
export const TOKENIZER_FILE = 'tokenizer.json';
/** Hugging Face's tokenizer settings beside tokenizer.json; carried for its `chat_template`. */
export const TOKENIZER_CONFIG_FILE = 'tokenizer_config.json';
export const CHECKPOINT_FORMAT = 'tokenformer-checkpoint';
/** What replaceDirAtomic may replace when it saves a checkpoint (a training run is one too). */
export const CHECKPOINT_MARKER: OutputMarker = {
  what: 'a checkpoint',
  file: CONFIG_FILE,
  format: CHECKPOINT_FORMAT,
};

export interface Provenance {
  /** How the weights came to be: `import`, `train`, `grow`, … */
  source: string;
  /** Free-form details (the imported path, the training command, …). */
  detail?: string;
  /**
   * For `grow`: how new tokens were initialised. `zero` + `keep` preserves the parent's function
   * exactly (and its keys/values, so a hot swap can move KV caches as they are).
   */
  growth?: { init: 'zero' | 'random'; tau: 'keep' | 'recompute' };
  created: string;
}

export interface Lineage {
  path: string;
  sha256: string;
  step: number;
  /**
   * The parent's model name under the models root, for shipped models (`npm run pipeline --
   * --ship`): how `--draft-model auto` finds it wherever the models root lives.
   */
  name?: string;
}

export interface CheckpointMeta {
  format: typeof CHECKPOINT_FORMAT;
  format_version: 1;
  model: TokenFormerConfig;
  /**
   * Tokenizer file in the directory, its end-of-text id and SHA-256 (recorded by saveCheckpoint,
   * checked on load: another tokenizer of the same size would decode gibberish), or null when none
   * ships. Checkpoints written before the checksum existed lack `sha256`.
   */
  tokenizer: { file: string; eos_token_id: number | null; sha256?: string } | null;
  provenance: Provenance;
  /** Optimizer steps the weights have seen. */
  step: number;
  /** The checkpoint this one was grown from, if any. */
  parent: Lineage | null;
  /**
   * SHA-256 of model.safetensors, recorded by saveCheckpoint and checked on load: a flipped byte
   * inside tensor data passes every structural check of the file, not this. Absent in older
   * checkpoints (then nothing is checked).
   */
  weights_sha256?: string;
}

export interface Checkpoint {
  dir: string;
  meta: CheckpointMeta;
  params: Map<string, Float32Array>;
}

export type StorageDType = 'F32' | 'F16' | 'BF16';

/** Reads and validates a checkpoint's config.json. */
export function readCheckpointMeta(dir: string): CheckpointMeta {
  const path = join(dir, CONFIG_FILE);
  const raw = readJsonFile(path);
  if (typeof raw !== 'object' || raw === null || (raw as { format?: unknown }).format !== CHECKPOINT_FORMAT) {
    fail(
      'TF_ERR_BAD_CHECKPOINT',
      `${path}: not a tokenformer checkpoint (format must be "${CHECKPOINT_FORMAT}"; ` +
        'official releases are converted with `npm run import`)',
    );
  }
  const r = raw as Record<string, unknown>;
  if (r.format_version !== 1)
    fail('TF_ERR_BAD_CHECKPOINT', `${path}: unsupported format_version ${String(r.format_version)}`);
  const tok = r.tokenizer as CheckpointMeta['tokenizer'] | undefined;
  return {
    format: CHECKPOINT_FORMAT,
    format_version: 1,
    model: validateModelConfig(r.model, `${path} (model)`),
    tokenizer: tok ?? null,
    provenance: (r.provenance as Provenance | undefined) ?? { source: 'unknown', created: '' },
    step: typeof r.step === 'number' ? r.step : 0,
    parent: (r.parent as Lineage | null | undefined) ?? null,
    ...(typeof r.weights_sha256 === 'string' ? { weights_sha256: r.weights_sha256 } : {}),
  };
}

/** Fails when the weights' actual SHA-256 is not the one the checkpoint's config recorded. */
export function checkWeightsChecksum(dir: string, meta: CheckpointMeta, actual: string): void {
  if (meta.weights_sha256 === undefined || meta.weights_sha256 === actual) return;
  fail(
    'TF_ERR_BAD_CHECKPOINT',
    `${join(dir, WEIGHTS_FILE)} does not match the checksum ${CONFIG_FILE} records: the file is corrupted ` +
      `or was replaced (expected ${meta.weights_sha256.slice(0, 12)}…, found ${actual.slice(0, 12)}…)`,
  );
}

/**
 * Checks the checkpoint's tokenizer file against the SHA-256 its config records (`actual`: its
 * hash when the caller has it). Returns a one-line warning for a checkpoint written before the
 * checksum was recorded, which loads unchecked.
 */
export function checkTokenizerChecksum(
  dir: string,
  meta: CheckpointMeta,
  actual?: string,
): string | undefined {
  const tok = meta.tokenizer;
  if (tok === null) return undefined;
  const path = join(dir, tok.file);
  const config = join(dir, CONFIG_FILE);
  if (tok.sha256 === undefined) {
    return existsSync(path)
      ? `${config} records no tokenizer checksum (written before checkpoints recorded one): ` +
          `${path} is used unchecked; saving the checkpoint again (train --init, grow) records it`
      : undefined;
  }
  if (!existsSync(path)) fail('TF_ERR_NOT_FOUND', `${path}: the tokenizer named in ${config} is missing`);
  const found = actual ?? fileSha256(path);
  if (found !== tok.sha256) {
    fail(
      'TF_ERR_BAD_CHECKPOINT',
      `${path} is not the tokenizer ${config} was saved with (expected sha256 ` +
        `${tok.sha256.slice(0, 12)}…, found ${found.slice(0, 12)}…): another tokenizer would turn the ` +
        "model's tokens into other text; restore the original file",
    );
  }
  return undefined;
}

/**
 * Checks a set of named shapes against what the config needs; lists every missing,
 * unexpected and mis-shaped tensor in one error.
 */
export function checkParamNames(
  where: string,
  specs: readonly ParamSpec[],
  have: ReadonlyMap<string, readonly number[]>,
  nameOf: (s: ParamSpec) => string = (s) => s.name,
): void {
  const wanted = new Set(specs.map(nameOf));
  const missing = specs.map(nameOf).filter((n) => !have.has(n));
  const unexpected = [...have.keys()].filter((n) => !wanted.has(n));
  const misShaped = specs
    .filter((s) => have.has(nameOf(s)) && have.get(nameOf(s))!.join(',') !== s.shape.join(','))
    .map((s) => `${nameOf(s)} is [${have.get(nameOf(s))!.join(', ')}], expected [${s.shape.join(', ')}]`);
  const problems = [
    missing.length ? `missing tensors: ${missing.join(', ')}` : '',
    unexpected.length ? `unexpected tensors: ${unexpected.join(', ')}` : '',
    misShaped.length ? `wrong shapes: ${misShaped.join('; ')}` : '',
  ].filter(Boolean);
  if (problems.length) fail('TF_ERR_BAD_CHECKPOINT', `${where}: ${problems.join('; ')}`);
}

/** Where library code reports something worth a line that does not stop it. */
export type WarningSink = (message: string) => void;

const stderrWarning: WarningSink = (message) => process.stderr.write(`warning: ${message}\n`);

/**
 * Loads a checkpoint directory: config validated, every tensor present with the right shape,
 * weights and tokenizer matching their recorded checksums.
 */
export function loadCheckpoint(dir: string, opts: { onWarning?: WarningSink } = {}): Checkpoint {
  const meta = readCheckpointMeta(dir);
  const warning = checkTokenizerChecksum(dir, meta);
  if (warning) (opts.onWarning ?? stderrWarning)(warning);
  const path = join(dir, WEIGHTS_FILE);
  if (!existsSync(path)) fail('TF_ERR_NOT_FOUND', `${path}: weights file is missing`);
  const file = SafeTensorsFile.open(path);
  try {
    const specs = paramSpecs(meta.model);
    checkParamNames(path, specs, new Map([...file.tensors].map(([k, v]) => [k, v.shape])));
    // After the structural checks, whose messages say more; this catches what they cannot.
    if (meta.weights_sha256 !== undefined) checkWeightsChecksum(dir, meta, fileSha256(path));
    const params = new Map(specs.map((s) => [s.name, file.readF32(s.name)] as const));
    return { dir, meta, params };
  } finally {
    file.close();
  }
}

/** A tensor source for saving: either in memory or produced on demand (large imports). */
export type ParamSource = (spec: ParamSpec) => Float32Array;

/**
 * Writes a checkpoint directory atomically (built beside, then swapped in). Parameters are
 * stored as `dtype` (F16/BF16 halve the size; the shipped models use it).
 */
export async function saveCheckpoint(
  dir: string,
  meta: CheckpointMeta,
  params: ReadonlyMap<string, Float32Array> | ParamSource,
  opts: {
    dtype?: StorageDType;
    tokenizerFrom?: string;
    /** The tokenizer's JSON text, for one not on disk yet (trained in memory). */
    tokenizerText?: string;
    /** Writes further files (optimizer state, logs) into the directory before it is swapped in. */
    extra?: (tmpDir: string) => void;
  } = {},
): Promise<void> {
  const get: ParamSource =
    typeof params === 'function'
      ? params
      : (s) => params.get(s.name) ?? fail('TF_ERR_BAD_CHECKPOINT', `parameter ${s.name} is missing`);
  await replaceDirAtomic(dir, [CHECKPOINT_MARKER], (tmp) => {
    const specs = paramSpecs(meta.model);
    writeSafeTensors(
      join(tmp, WEIGHTS_FILE),
      specs.map((s) => ({ name: s.name, dtype: opts.dtype ?? 'F32', shape: s.shape, data: () => get(s) })),
      { format: 'pt' },
    );
    const tokPath = join(tmp, TOKENIZER_FILE);
    if (opts.tokenizerFrom) {
      copyFileSync(opts.tokenizerFrom, tokPath);
      // A model directory's tokenizer_config.json (chat template) travels with its tokenizer.
      const config = join(dirname(opts.tokenizerFrom), TOKENIZER_CONFIG_FILE);
      if (basename(opts.tokenizerFrom) === TOKENIZER_FILE && existsSync(config))
        copyFileSync(config, join(tmp, TOKENIZER_CONFIG_FILE));
    } else if (opts.tokenizerText !== undefined) writeFileAtomic(tokPath, opts.tokenizerText);
    opts.extra?.(tmp);
    const tokenizer =
      meta.tokenizer && existsSync(tokPath)
        ? { ...meta.tokenizer, sha256: fileSha256(tokPath) }
        : meta.tokenizer;
    writeJsonAtomic(join(tmp, CONFIG_FILE), {
      ...meta,
      tokenizer,
      weights_sha256: fileSha256(join(tmp, WEIGHTS_FILE)),
    });
  });
}

/** SHA-256 of a checkpoint's weights file (lineage records and export manifests). */
export function weightsChecksum(dir: string): string {
  return fileSha256(join(dir, WEIGHTS_FILE));
}

import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { exportInBackground } from '../export/background.ts';
import { MANIFEST_FILE, type Manifest, verifyExport } from '../export/export.ts';
import type { Quantization } from '../export/quantize.ts';
import {
  CONFIG_FILE,
  checkTokenizerChecksum,
  checkWeightsChecksum,
  readCheckpointMeta,
  TOKENIZER_CONFIG_FILE,
  WEIGHTS_FILE,
} from '../model/checkpoint.ts';
import { fail, TokenFormerError } from '../util/errors.ts';
import { fileSha256Async } from '../util/files.ts';

/**
 * Part of the cache key: bumped when exports gain something older cached ones lack (v2: the
 * checkpoint's provenance and lineage in the manifest, which lossless hot swaps read; v3: fused
 * serving kernels in decoder.onnx; v4: the tokenizer_config.json, whose contents are part of the key;
 * v5: the decoder's `logit_positions` input, which speculative decoding needs).
 */
const EXPORT_CACHE_VERSION = 'export-cache-v5';

/** `--model` is a directory, or a name under the models root (`--model default` → models/default). */
export function findModelDir(model: string, modelsDir: string): string {
  if (existsSync(model)) return model;
  const named = join(modelsDir, model);
  if (existsSync(named)) return named;
  return fail('TF_ERR_NOT_FOUND', `no model ${model}: it is neither a directory nor ${named}`);
}

/**
 * `--model DIR` takes an export directory (manifest.json) or a checkpoint directory; a
 * checkpoint is exported once into the cache, keyed by its config and weights, and reused; a
 * cached export that fails verification (damaged on disk) is exported again. Hashing and
 * exporting never block the event loop (a hot swap resolves its model while streams run).
 * `verified` is the export's manifest when this call already checked its checksums (a cached
 * export), so the engine does not hash the same files again (`EngineOptions.verified`).
 */
export async function resolveExport(
  dir: string,
  cacheRoot: string,
  onProgress?: (message: string) => void,
  quantize?: Quantization,
): Promise<{ exportDir: string; verified?: Manifest }> {
  if (existsSync(join(dir, MANIFEST_FILE))) return { exportDir: resolve(dir) };
  if (!existsSync(join(dir, CONFIG_FILE))) {
    fail(
      'TF_ERR_NOT_FOUND',
      `${dir} is neither an export directory (manifest.json) nor a checkpoint (config.json)`,
    );
  }
  const meta = readCheckpointMeta(dir); // a clear error for a broken config before anything else
  if (!existsSync(join(dir, WEIGHTS_FILE)))
    fail('TF_ERR_NOT_FOUND', `${join(dir, WEIGHTS_FILE)}: weights file is missing`);
  const weights = await fileSha256Async(join(dir, WEIGHTS_FILE));
  checkWeightsChecksum(dir, meta, weights); // a damaged checkpoint is refused before exporting
  const warning = checkTokenizerChecksum(dir, meta); // another model's tokenizer, likewise
  if (warning) onProgress?.(`warning: ${warning}`);
  const key = createHash('sha256')
    .update(EXPORT_CACHE_VERSION)
    .update(readFileSync(join(dir, CONFIG_FILE)))
    .update(weights)
    .update(quantize ? JSON.stringify(quantize) : '')
    .update(
      existsSync(join(dir, TOKENIZER_CONFIG_FILE)) ? readFileSync(join(dir, TOKENIZER_CONFIG_FILE)) : '',
    )
    .digest('hex')
    .slice(0, 24);
  const out = resolve(cacheRoot, 'exports', key);
  if (!existsSync(join(out, MANIFEST_FILE))) {
    onProgress?.(`exporting ${dir} → ${out} (first use)`);
  } else {
    try {
      return { exportDir: out, verified: await verifyExport(out) };
    } catch (err) {
      if (!(err instanceof TokenFormerError)) throw err;
      // The checkpoint is the source of truth; the cache is only derived from it.
      onProgress?.(`the cached export failed verification (${err.message}); re-exporting ${dir} → ${out}`);
    }
  }
  await exportInBackground(dir, out, quantize);
  return { exportDir: out };
}

import { cpSync, existsSync, mkdirSync, readdirSync, statSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { MANIFEST_FILE } from '../../src/export/export.ts';
import { CONFIG_FILE, WEIGHTS_FILE } from '../../src/model/checkpoint.ts';
import { fail } from '../../src/util/errors.ts';

/** The model names the soak serves from its own models root. */
export interface SoakModels {
  root: string;
  from: string;
  to: string;
  corrupt: string;
}

export const CORRUPT_NAME = 'corrupt';

function modelDir(root: string, name: string): string {
  const dir = join(root, name);
  if (!existsSync(dir) || !statSync(dir).isDirectory())
    fail('TF_ERR_NOT_FOUND', `no model "${name}" under ${root}`);
  if (!existsSync(join(dir, CONFIG_FILE)) && !existsSync(join(dir, MANIFEST_FILE)))
    fail('TF_ERR_NOT_FOUND', `${dir} is neither a checkpoint (config.json) nor an export (manifest.json)`);
  return dir;
}

/**
 * A models root of its own in `dir`: copies of `from` and `to` (copies, not symlinks: the server
 * refuses links that leave its root) and `corrupt`, a copy of `corruptFrom` whose weights are cut
 * in half, which the strict safetensors reader (or onnxruntime, for an export) refuses at load.
 */
export function prepareModelsRoot(
  sourceRoot: string,
  names: { from: string; to: string; corruptFrom: string },
  dir: string,
): SoakModels {
  if (names.from === names.to) fail('TF_ERR_BAD_ARGS', '--from and --to must name different models');
  if ([names.from, names.to].includes(CORRUPT_NAME))
    fail('TF_ERR_BAD_ARGS', `"${CORRUPT_NAME}" is the soak's own name for the broken model`);
  const root = join(dir, 'models');
  mkdirSync(root, { recursive: true });
  for (const name of [names.from, names.to])
    cpSync(modelDir(sourceRoot, name), join(root, name), { recursive: true, dereference: true });
  const corrupt = join(root, CORRUPT_NAME);
  cpSync(modelDir(sourceRoot, names.corruptFrom), corrupt, { recursive: true, dereference: true });
  const weights = existsSync(join(corrupt, WEIGHTS_FILE))
    ? [WEIGHTS_FILE]
    : readdirSync(corrupt).filter((f) => f.endsWith('.onnx') || f.endsWith('.onnx.data'));
  if (weights.length === 0) fail('TF_ERR_NOT_FOUND', `${corrupt} has no weights file to corrupt`);
  for (const f of weights) truncateSync(join(corrupt, f), Math.floor(statSync(join(corrupt, f)).size / 2));
  return { root, from: names.from, to: names.to, corrupt: CORRUPT_NAME };
}

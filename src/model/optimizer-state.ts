import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { SafeTensorsFile, writeSafeTensors } from '../formats/safetensors.ts';
import { fail } from '../util/errors.ts';
import type { TokenFormerConfig } from './config.ts';
import { paramSpecs } from './params.ts';

/**
 * Adam moments saved beside a checkpoint (`optimizer.safetensors`: `m.{name}` / `v.{name}`, F32,
 * each parameter's shape). Written by the trainer, carried over (old rows) by growth, read back
 * to resume or continue training exactly.
 */

export const OPTIMIZER_FILE = 'optimizer.safetensors';

export interface AdamMoments {
  m: Map<string, Float32Array>;
  v: Map<string, Float32Array>;
}

export function momentName(kind: 'm' | 'v', param: string): string {
  return `${kind}.${param}`;
}

/** Reads the moments beside a checkpoint; null when it has none. */
export function readAdamMoments(dir: string, cfg: TokenFormerConfig): AdamMoments | null {
  const path = join(dir, OPTIMIZER_FILE);
  if (!existsSync(path)) return null;
  const file = SafeTensorsFile.open(path);
  try {
    const read = (kind: 'm' | 'v') =>
      new Map(
        paramSpecs(cfg).map((s) => {
          const name = momentName(kind, s.name);
          const info = file.tensors.get(name);
          if (!info) fail('TF_ERR_BAD_CHECKPOINT', `${path}: missing tensor ${name}`);
          if (info.shape.join(',') !== s.shape.join(',')) {
            fail(
              'TF_ERR_BAD_CHECKPOINT',
              `${path}: ${name} is [${info.shape.join(', ')}], expected [${s.shape.join(', ')}]`,
            );
          }
          return [s.name, file.readF32(name)] as const;
        }),
      );
    return { m: read('m'), v: read('v') };
  } finally {
    file.close();
  }
}

/** Writes the moments into `dir` (a checkpoint directory being built). */
export function writeAdamMoments(dir: string, cfg: TokenFormerConfig, moments: AdamMoments): void {
  writeSafeTensors(
    join(dir, OPTIMIZER_FILE),
    (['m', 'v'] as const).flatMap((kind) =>
      paramSpecs(cfg).map((s) => ({
        name: momentName(kind, s.name),
        dtype: 'F32' as const,
        shape: s.shape,
        data: moments[kind].get(s.name)!,
      })),
    ),
  );
}

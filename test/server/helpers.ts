import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Engine } from '../../src/engine/engine.ts';
import { ModelRegistry } from '../../src/engine/registry.ts';
import { buildApp } from '../../src/server/app.ts';
import type { ServerLimits } from '../../src/server/context.ts';
import { servedModel } from '../engine/served-model.ts';

export const MODEL = 'test-model';

export interface TestApp {
  app: FastifyInstance;
  registry: ModelRegistry;
  /** The serving model's engine. */
  engine: Engine;
  /** The serving model's version id (system_fingerprint, x-model-version). */
  version: string;
  exportDir: string;
  close(): Promise<void>;
}

/** Engine settings of the test apps: small, one thread. */
export const TEST_ENGINE = { device: 'cpu', threads: 1, prefillChunk: 64 } as const;

/**
 * A real app over a real registry on the small served model (test/engine/served-model.ts),
 * served as MODEL.
 */
export async function testApp(
  opts: { limits?: Partial<ServerLimits>; maxSequences?: number; maxQueue?: number } = {},
): Promise<TestApp> {
  const dir = mkdtempSync(join(tmpdir(), 'tf-server-'));
  try {
    const { exportDir } = await servedModel(dir);
    const registry = await ModelRegistry.open(exportDir, {
      modelsRoot: dir,
      cacheDir: join(dir, 'cache'),
      engine: { ...TEST_ENGINE, maxSequences: opts.maxSequences ?? 4, maxQueue: opts.maxQueue ?? 8 },
    });
    const app = buildApp({ registry, servedNames: [MODEL], limits: opts.limits ?? {} });
    await app.ready();
    await app.tokenformer.loaded;
    return {
      app,
      registry,
      engine: registry.model.engine,
      version: registry.model.version,
      exportDir,
      close: async () => {
        await app.close();
        await registry.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

/** The OpenAI error shape, checked strictly: no stack, no file paths. */
export function assertErrorShape(
  body: unknown,
  code: string,
): { message: string; type: string; code: string } {
  const b = body as { error?: { message?: unknown; type?: unknown; code?: unknown } };
  if (!b.error || typeof b.error.message !== 'string' || typeof b.error.type !== 'string')
    throw new Error(`not an OpenAI error body: ${JSON.stringify(body)}`);
  if (b.error.code !== code) throw new Error(`expected code ${code}, got ${JSON.stringify(body)}`);
  const keys = Object.keys(b.error).sort().join();
  if (Object.keys(b).length !== 1 || (keys !== 'code,message,type' && keys !== 'code,message,param,type'))
    throw new Error(`unexpected fields in ${JSON.stringify(body)}`);
  if (/\n\s+at |\/work\/|\.ts:\d+|node_modules/.test(b.error.message))
    throw new Error(`error message leaks internals: ${b.error.message}`);
  return b.error as { message: string; type: string; code: string };
}

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Engine } from '../../src/engine/engine.ts';
import { buildApp } from '../../src/server/app.ts';
import type { ServerLimits } from '../../src/server/context.ts';
import { servedModel } from '../engine/served-model.ts';

export const MODEL = 'test-model';
export const VERSION = 'v-test';

export interface TestApp {
  app: FastifyInstance;
  engine: Engine;
  exportDir: string;
  close(): Promise<void>;
}

/** A real app over a real engine on the small served model (test/engine/served-model.ts). */
export async function testApp(
  opts: { limits?: Partial<ServerLimits>; maxSequences?: number; maxQueue?: number } = {},
): Promise<TestApp> {
  const dir = mkdtempSync(join(tmpdir(), 'tf-server-'));
  try {
    const { exportDir } = await servedModel(dir);
    const engine = await Engine.start({
      exportDir,
      device: 'cpu',
      threads: 1,
      maxSequences: opts.maxSequences ?? 4,
      maxQueue: opts.maxQueue ?? 8,
      prefillChunk: 64,
    });
    const app = buildApp({ engine, modelName: MODEL, modelVersion: VERSION, limits: opts.limits ?? {} });
    await app.ready();
    return {
      app,
      engine,
      exportDir,
      close: async () => {
        await app.close();
        await engine.close();
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
  if (Object.keys(b).length !== 1 || Object.keys(b.error).sort().join() !== 'code,message,type')
    throw new Error(`unexpected fields in ${JSON.stringify(body)}`);
  if (/\n\s+at |\/work\/|\.ts:\d+|node_modules/.test(b.error.message))
    throw new Error(`error message leaks internals: ${b.error.message}`);
  return b.error as { message: string; type: string; code: string };
}

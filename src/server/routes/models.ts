import type { FastifyPluginAsync } from 'fastify';
import { lineageOf } from '../../engine/model-store.ts';
import type { LoadedModel } from '../../engine/registry.ts';
import type { ServerContext } from '../context.ts';

/**
 * GET /v1/models, in the OpenAI list shape with vLLM's `max_model_len`, `root` and `parent`: one
 * entry per served name (whichever version serves; the names survive swaps), then one per loaded
 * version (`parent`: the served name), which a request may name to pin that version while it is
 * loaded. Each says its version, parameter count and lineage. The models under the models root
 * are listed at GET /admin/models.
 */
export const modelsRoute: FastifyPluginAsync<{ ctx: ServerContext }> = async (app, { ctx }) => {
  const created = Math.floor(Date.now() / 1000);
  const entry = (id: string, m: LoadedModel, parent: string | null) => ({
    id,
    object: 'model',
    created,
    owned_by: 'tokenformer',
    root: m.name,
    parent,
    max_model_len: m.engine.manifest.model.max_seq_len,
    version: m.version,
    parameters: m.engine.manifest.parameters,
    lineage: lineageOf(m.engine.manifest),
  });
  app.get('/v1/models', async () => {
    const registry = ctx.requireRegistry();
    const serving = registry.model;
    return {
      object: 'list',
      data: [
        ...ctx.servedNames.map((name) => entry(name, serving, null)),
        ...registry.loaded.map((m) => ({
          ...entry(m.version, m, ctx.modelName),
          state: m === serving ? 'serving' : 'draining',
        })),
      ],
    };
  });
};

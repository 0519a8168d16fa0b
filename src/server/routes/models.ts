import type { FastifyPluginAsync } from 'fastify';
import type { ServerContext } from '../context.ts';

/** GET /v1/models: the one served model, in the OpenAI list shape (plus vLLM's max_model_len). */
export const modelsRoute: FastifyPluginAsync<{ ctx: ServerContext }> = async (app, { ctx }) => {
  const created = Math.floor(Date.now() / 1000);
  app.get('/v1/models', async () => ({
    object: 'list',
    data: [
      {
        id: ctx.modelName,
        object: 'model',
        created,
        owned_by: 'tokenformer',
        version: ctx.modelVersion,
        max_model_len: ctx.engine?.manifest.model.max_seq_len ?? null,
      },
    ],
  }));
};

import type { FastifyPluginAsync } from 'fastify';
import type { ServerContext } from '../context.ts';
import { ApiError, quoted } from '../errors.ts';

const tokenizeBodySchema = {
  type: 'object',
  required: ['prompt'],
  properties: { model: { type: ['string', 'null'] }, prompt: { type: 'string' } },
} as const;

const detokenizeBodySchema = {
  type: 'object',
  required: ['tokens'],
  properties: {
    model: { type: ['string', 'null'] },
    tokens: { type: 'array', items: { type: 'integer', minimum: 0 } },
  },
} as const;

/** POST /tokenize and POST /detokenize (vLLM's shapes): the served model's tokenizer, no specials added. */
export const tokenizeRoute: FastifyPluginAsync<{ ctx: ServerContext }> = async (app, { ctx }) => {
  const checkModel = (model: string | null | undefined) => {
    if (model && model !== ctx.modelName)
      throw new ApiError(
        'TF_ERR_MODEL_NOT_FOUND',
        `the model ${quoted(model)} does not exist; this server serves ${JSON.stringify(ctx.modelName)}`,
      );
  };
  app.post<{ Body: { model?: string | null; prompt: string } }>(
    '/tokenize',
    { schema: { body: tokenizeBodySchema } },
    async (request) => {
      checkModel(request.body.model);
      const engine = ctx.requireEngine();
      const tokens = engine.tokenizer.encode(request.body.prompt);
      return {
        tokens,
        count: tokens.length,
        max_model_len: engine.manifest.model.max_seq_len,
        // Evaluation clients rebuild the trainer's token stream, which ends documents with it.
        eos_token_id: engine.eosTokenId,
      };
    },
  );
  app.post<{ Body: { model?: string | null; tokens: number[] } }>(
    '/detokenize',
    { schema: { body: detokenizeBodySchema } },
    async (request) => {
      checkModel(request.body.model);
      // An id outside the vocabulary is TF_ERR_BAD_ARGS (400) from the tokenizer.
      return { prompt: ctx.requireEngine().tokenizer.decode(request.body.tokens) };
    },
  );
};

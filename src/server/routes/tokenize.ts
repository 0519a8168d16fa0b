import type { FastifyPluginAsync } from 'fastify';
import type { ServerContext } from '../context.ts';

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

/**
 * POST /tokenize and POST /detokenize (vLLM's shapes): the tokenizer of the model `model` names
 * (the serving one for a served name or none, else a loaded version), no specials added.
 */
export const tokenizeRoute: FastifyPluginAsync<{ ctx: ServerContext }> = async (app, { ctx }) => {
  app.post<{ Body: { model?: string | null; prompt: string } }>(
    '/tokenize',
    { schema: { body: tokenizeBodySchema } },
    async (request) => {
      const { engine } = ctx.lookup(request.body.model).model;
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
      const { engine } = ctx.lookup(request.body.model).model;
      // An id outside the vocabulary is TF_ERR_BAD_ARGS (400) from the tokenizer.
      return { prompt: engine.tokenizer.decode(request.body.tokens) };
    },
  );
};

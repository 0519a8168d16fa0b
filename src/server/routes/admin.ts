import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import type { SwapPolicy } from '../../engine/registry.ts';
import { TokenFormerError } from '../../util/errors.ts';
import { bearerToken, sameSecret } from '../auth.ts';
import type { ServerContext } from '../context.ts';
import { ApiError, withoutPaths } from '../errors.ts';

const swapSchema = {
  body: {
    type: 'object',
    required: ['model'],
    additionalProperties: false,
    properties: {
      model: { type: 'string', minLength: 1, maxLength: 256 },
      policy: { type: 'string', enum: ['drain', 'migrate'] },
    },
  },
} as const;

interface SwapBody {
  model: string;
  policy?: SwapPolicy;
}

/**
 * Admin routes: POST /admin/swap {"model", "policy"} and GET /admin/models, behind
 * `Authorization: Bearer $TOKENFORMER_ADMIN_TOKEN` (403 when no token is configured, 401 when
 * the token is missing or wrong).
 */
export const adminRoute: FastifyPluginAsync<{ ctx: ServerContext; adminToken: string | undefined }> = async (
  app,
  { ctx, adminToken },
) => {
  // Also after the supervisor gave up (swaps then refuse on their own): the listing helps diagnose.
  const loadedRegistry = () => ctx.registry ?? ctx.requireRegistry();
  const authorize = (request: FastifyRequest) => {
    if (!adminToken)
      throw new ApiError('TF_ERR_FORBIDDEN', 'admin routes are disabled: set TOKENFORMER_ADMIN_TOKEN');
    if (!sameSecret(bearerToken(request.headers.authorization) ?? '', adminToken))
      throw new ApiError('TF_ERR_UNAUTHORIZED', 'a valid admin bearer token is required');
  };

  app.post<{ Body: SwapBody }>(
    '/admin/swap',
    { schema: swapSchema, preValidation: async (r) => authorize(r) },
    async (request) => {
      const registry = loadedRegistry();
      try {
        const result = await registry.swap(request.body.model, request.body.policy);
        request.log.info({ swap: result }, `swapped to ${result.to.name} (${result.policy})`);
        return { object: 'swap', ...result };
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        // The log keeps the paths; the answer names only the model the client asked for.
        request.log.warn(
          { model: request.body.model, reason: message },
          'swap failed; the old model keeps serving',
        );
        const reason = withoutPaths(message, request.body.model);
        if (err instanceof TokenFormerError && err.code === 'TF_ERR_SWAP_IN_PROGRESS') throw err;
        if (err instanceof TokenFormerError && err.code === 'TF_ERR_BAD_ARGS')
          throw new ApiError('TF_ERR_BAD_ARGS', reason);
        if (err instanceof TokenFormerError && err.code === 'TF_ERR_NOT_FOUND')
          throw new ApiError('TF_ERR_NOT_FOUND', reason);
        throw new ApiError(
          'TF_ERR_SWAP_FAILED',
          `swap to ${request.body.model} failed, the current model keeps serving: ${reason}`,
        );
      }
    },
  );

  app.get('/admin/models', { preValidation: async (r) => authorize(r) }, async () => {
    const registry = loadedRegistry();
    return {
      served_names: ctx.servedNames,
      active: {
        name: registry.model.name,
        version: registry.model.version,
        loaded_at: registry.model.loadedAt,
      },
      models: registry.list(),
      // Models with a live worker: the serving one and any still draining after a swap.
      loaded: registry.loaded.map((m) => ({
        name: m.name,
        version: m.version,
        open_streams: m.engine.openStreams,
        memory_estimate_bytes: m.memory.totalBytes,
      })),
    };
  });
};

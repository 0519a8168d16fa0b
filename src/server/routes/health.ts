import type { FastifyPluginAsync } from 'fastify';
import type { ServerContext } from '../context.ts';
import { SERVE_DEFAULTS } from '../defaults.ts';
import { ApiError, withoutPaths } from '../errors.ts';

/**
 * GET /health: liveness. 200 while loading, serving or draining; 503 once the server can never
 * serve again without a restart (the worker supervisor gave up, or the model failed to load), so
 * a liveness probe restarts it.
 * GET /ready: the server takes completions (readiness; 503 while loading, draining or failed).
 */
export const healthRoute: FastifyPluginAsync<{ ctx: ServerContext }> = async (app, { ctx }) => {
  app.get(SERVE_DEFAULTS.healthPath, async () => {
    if (ctx.state === 'failed') throw new ApiError('TF_ERR_NOT_READY', ctx.notReadyReason());
    return { status: 'ok', state: ctx.state };
  });
  app.get(SERVE_DEFAULTS.readyPath, async () => {
    if (ctx.state === 'draining') throw new ApiError('TF_ERR_SHUTTING_DOWN', 'the server is shutting down');
    const engine = ctx.requireRegistry().model.engine;
    return {
      status: 'ready',
      model: ctx.modelName,
      version: ctx.modelVersion,
      device: engine.device,
      // onnxruntime's reason may name library paths; /ready is open to anyone who can reach it.
      ...(engine.fallbackReason ? { fallback_reason: withoutPaths(engine.fallbackReason) } : {}),
    };
  });
};

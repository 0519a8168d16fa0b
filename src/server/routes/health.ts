import type { FastifyPluginAsync } from 'fastify';
import type { ServerContext } from '../context.ts';
import { SERVE_DEFAULTS } from '../defaults.ts';
import { ApiError, withoutPaths } from '../errors.ts';

/**
 * GET /health: the process is alive (liveness; 200 even while loading or draining).
 * GET /ready: the server takes completions (readiness; 503 while loading, draining or failed).
 */
export const healthRoute: FastifyPluginAsync<{ ctx: ServerContext }> = async (app, { ctx }) => {
  app.get(SERVE_DEFAULTS.healthPath, async () => ({ status: 'ok', state: ctx.state }));
  app.get(SERVE_DEFAULTS.readyPath, async () => {
    if (ctx.state === 'draining') throw new ApiError('TF_ERR_SHUTTING_DOWN', 'the server is shutting down');
    const engine = ctx.requireEngine();
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

import type { FastifyPluginAsync } from 'fastify';
import type { ServerContext } from '../context.ts';
import { SERVE_DEFAULTS } from '../defaults.ts';

/** GET /metrics: Prometheus text exposition of the app's own registry. */
export const metricsRoute: FastifyPluginAsync<{ ctx: ServerContext }> = async (app, { ctx }) => {
  app.get(SERVE_DEFAULTS.metricsPath, async (_request, reply) => {
    const text = await ctx.metrics.text();
    return reply.type(ctx.metrics.contentType).send(text);
  });
};

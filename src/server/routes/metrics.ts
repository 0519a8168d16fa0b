import type { FastifyPluginAsync } from 'fastify';
import type { ServerContext } from '../context.ts';

/** GET /metrics: Prometheus text exposition of the app's own registry. */
export const metricsRoute: FastifyPluginAsync<{ ctx: ServerContext }> = async (app, { ctx }) => {
  app.get('/metrics', async (_request, reply) => {
    const text = await ctx.metrics.text();
    return reply.type(ctx.metrics.contentType).send(text);
  });
};

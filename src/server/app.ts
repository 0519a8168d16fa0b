import { randomUUID } from 'node:crypto';
import websocket from '@fastify/websocket';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import type { Engine } from '../engine/engine.ts';
import { DEFAULT_LIMITS, ServerContext, type ServerLimits } from './context.ts';
import { ApiError, toApiError } from './errors.ts';
import { ServerMetrics } from './metrics.ts';
import { onResponseClose } from './response.ts';
import { adminRoute } from './routes/admin.ts';
import { completionsRoute } from './routes/completions.ts';
import { healthRoute } from './routes/health.ts';
import { metricsRoute } from './routes/metrics.ts';
import { modelsRoute } from './routes/models.ts';
import { playgroundRoute } from './routes/playground.ts';
import { streamRoute } from './routes/stream.ts';
import { tokenizeRoute } from './routes/tokenize.ts';
import { formatSchemaErrors } from './schema-errors.ts';

/**
 * Builds the HTTP/WebSocket server over one engine; it never listens (scripts/serve.ts does).
 * The engine may still be loading (a promise): /health answers at once, /ready and the model
 * routes answer 503 until it is ready.
 */

export interface AppOptions {
  engine: Engine | Promise<Engine>;
  /** The id clients pass as `model` (and /v1/models lists). */
  modelName: string;
  /** Shown as `system_fingerprint` and in tokenformer_model_info; default: the weights' sha256 prefix. */
  modelVersion?: string;
  limits?: Partial<ServerLimits>;
  /** fastify/pino logger options; off unless given. */
  logger?: FastifyServerOptions['logger'];
  /** Bearer token of the admin routes; they answer 403 without one. */
  adminToken?: string;
}

declare module 'fastify' {
  interface FastifyInstance {
    tokenformer: ServerContext;
  }
}

export function buildApp(opts: AppOptions): FastifyInstance {
  const limits: ServerLimits = { ...DEFAULT_LIMITS, ...opts.limits };
  const app = Fastify({
    logger: opts.logger ?? false,
    bodyLimit: limits.bodyLimitBytes,
    requestIdHeader: 'x-request-id',
    genReqId: () => randomUUID(),
    // Our own handlers answer during a drain (in the OpenAI error shape, /health still 200).
    return503OnClosing: false,
    // Types are checked, not coerced: "5" is not a max_tokens.
    ajv: { customOptions: { coerceTypes: false, allowUnionTypes: true } },
    schemaErrorFormatter: (errors, dataVar) => new Error(formatSchemaErrors(errors, dataVar)),
  });
  const metrics = new ServerMetrics();
  const ctx = new ServerContext(opts.engine, opts.modelName, opts.modelVersion, limits, metrics, app.log);
  app.decorate('tokenformer', ctx);

  app.setErrorHandler((err, request, reply) => {
    const mapped = toApiError(err, { requestId: request.id, bodyLimit: limits.bodyLimitBytes });
    if (mapped.internal) request.log.error({ err }, 'request failed');
    else request.log.info({ code: mapped.code, message: mapped.body.error.message }, 'request refused');
    return reply.code(mapped.status).headers(mapped.headers).send(mapped.body);
  });
  app.setNotFoundHandler((request) => {
    throw new ApiError('TF_ERR_NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0]}`);
  });

  // One place counts HTTP requests: when the response closes, finished (its status) or not (499).
  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
    // WebSocket completions are counted one by one in routes/stream.ts.
    if (request.headers.upgrade?.toLowerCase() === 'websocket') return;
    onResponseClose(reply.raw, (finished) => {
      const status = finished ? reply.raw.statusCode : 499;
      metrics.requests.inc({ route: request.routeOptions.url ?? 'unmatched', status: String(status) });
    });
  });

  app.register(websocket, {
    options: { maxPayload: limits.wsMaxMessageBytes },
    // Streams in flight end first (ctx.drain); then sockets close with 1001 "going away".
    preClose: (done) => {
      ctx.abortAll(new ApiError('TF_ERR_SHUTTING_DOWN', 'the server is shutting down'));
      for (const client of app.websocketServer.clients) client.close(1001, 'server shutting down');
      // Not waiting for the close handshakes: the HTTP server's close waits for the sockets.
      app.websocketServer.close();
      done();
    },
  });
  app.register(async (scope) => {
    scope.register(completionsRoute, { ctx });
    scope.register(streamRoute, { ctx });
    scope.register(modelsRoute, { ctx });
    scope.register(tokenizeRoute, { ctx });
    scope.register(healthRoute, { ctx });
    scope.register(metricsRoute, { ctx });
    scope.register(playgroundRoute, { ctx });
    scope.register(adminRoute, { ctx, adminToken: opts.adminToken });
  });
  return app;
}

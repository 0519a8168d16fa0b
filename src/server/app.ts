import { randomUUID } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import cors from '@fastify/cors';
import websocket from '@fastify/websocket';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyServerOptions } from 'fastify';
import type { ModelRegistry } from '../engine/registry.ts';
import { fail } from '../util/errors.ts';
import { bearerToken, matchesAny, selectWsProtocol, wsProtocolKey } from './auth.ts';
import { ChatTemplates } from './chat.ts';
import type { ChatTemplate } from './chat-template.ts';
import { DEFAULT_LIMITS, ServerContext, type ServerLimits } from './context.ts';
import { SERVE_DEFAULTS } from './defaults.ts';
import { API_ERRORS, ApiError, type ApiErrorCode, toApiError } from './errors.ts';
import { ServerMetrics } from './metrics.ts';
import { onResponseClose, outcomeStatus } from './response.ts';
import { adminRoute } from './routes/admin.ts';
import { chatRoute } from './routes/chat.ts';
import { completionsRoute } from './routes/completions.ts';
import { healthRoute } from './routes/health.ts';
import { metricsRoute } from './routes/metrics.ts';
import { modelsRoute } from './routes/models.ts';
import { playgroundRoute } from './routes/playground.ts';
import { streamRoute } from './routes/stream.ts';
import { tokenizeRoute } from './routes/tokenize.ts';
import { formatSchemaErrors } from './schema-errors.ts';

/**
 * Builds the HTTP/WebSocket server over a model registry, the only way it reaches a model; it
 * never listens (lifecycle.ts does). The registry may still be loading its first model (a
 * promise): /health answers at once, /ready and the model routes answer 503 until it is ready.
 */

export interface AppOptions {
  registry: ModelRegistry | Promise<ModelRegistry>;
  /**
   * The names clients pass as `model` for whichever model serves (vLLM's --served-model-name):
   * the first is reported in responses and labels the metrics; they survive swaps.
   */
  servedNames: readonly string[];
  limits?: Partial<ServerLimits>;
  /** fastify/pino logger options; off unless given. */
  logger?: FastifyServerOptions['logger'];
  /** Bearer token of the admin routes; they answer 403 without one. */
  adminToken?: string;
  /**
   * API keys of the public routes (several, so a key can be rotated): every route but /health,
   * /ready, /metrics, the playground page and the admin routes then needs `Authorization: Bearer KEY` (a WebSocket may
   * offer the subprotocol `bearer.KEY` instead). Off unless given.
   */
  apiKeys?: readonly string[];
  /** Origins allowed by CORS (`*` for any); no CORS headers at all unless given. */
  corsOrigins?: readonly string[];
  /** Overrides every model's chat template (`--chat-template FILE`). */
  chatTemplate?: ChatTemplate;
}

/**
 * Probes and Prometheus scrape without credentials; the admin routes check their own token; the
 * playground page holds nothing secret (it asks the user for a key and sends it itself).
 */
const OPEN_ROUTES = new Set<string>([
  SERVE_DEFAULTS.healthPath,
  SERVE_DEFAULTS.readyPath,
  SERVE_DEFAULTS.metricsPath,
  '/',
]);
const isOpen = (route: string | undefined) =>
  route !== undefined && (OPEN_ROUTES.has(route) || route.startsWith('/admin/'));

declare module 'fastify' {
  interface FastifyInstance {
    tokenformer: ServerContext;
  }
}

export function buildApp(opts: AppOptions): FastifyInstance {
  const limits: ServerLimits = { ...DEFAULT_LIMITS, ...opts.limits };
  const apiKeys = opts.apiKeys;
  const corsOrigins = opts.corsOrigins?.length ? opts.corsOrigins : undefined;
  if (apiKeys?.length === 0) fail('TF_ERR_BAD_ARGS', 'apiKeys is empty: leave it out to serve without keys');
  const app = Fastify({
    logger: opts.logger ?? false,
    bodyLimit: limits.bodyLimitBytes,
    // Node's own HTTP limits: oversized heads get 431, slow heads (slowloris) and slow bodies 408.
    http: {
      maxHeaderSize: limits.maxHeaderBytes,
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.receiveTimeoutMs,
      // How often Node looks for timed-out requests (its default, 30 s, would outlast the limits).
      connectionsCheckingInterval: 1_000,
    },
    requestTimeout: limits.receiveTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    clientErrorHandler: (err, socket) => answerClientError(err, socket, limits),
    requestIdHeader: 'x-request-id',
    genReqId: () => randomUUID(),
    // Our own handlers answer during a drain (in the OpenAI error shape, /health still 200).
    return503OnClosing: false,
    // Types are checked, not coerced: "5" is not a max_tokens.
    ajv: { customOptions: { coerceTypes: false, allowUnionTypes: true } },
    schemaErrorFormatter: (errors, dataVar) => new Error(formatSchemaErrors(errors, dataVar)),
    // Errors fastify raises before routing (an undecodable URL such as /%FF) get our error shape
    // and request id too, instead of fastify's own body.
    frameworkErrors: (err, request, res) => {
      const mapped = toApiError(err, { requestId: request.id });
      const reply = res as FastifyReply; // the route-generic reply type knows no statuses here
      void reply
        .code(mapped.status)
        .header('x-request-id', request.id)
        .headers(mapped.headers)
        .send(mapped.body);
    },
  });
  const metrics = new ServerMetrics();
  const ctx = new ServerContext(opts.registry, opts.servedNames, limits, metrics, app.log);
  const templates = new ChatTemplates(opts.chatTemplate);
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
    // WebSocket completions are counted one by one in ws-connection.ts.
    if (request.headers.upgrade?.toLowerCase() === 'websocket') return;
    onResponseClose(reply.raw, (finished) => {
      const status = finished ? outcomeStatus(reply.raw) : 499;
      metrics.requests.inc({
        route: request.routeOptions.url ?? 'unmatched',
        status: String(status),
        ...metrics.labels,
      });
    });
  });

  // After the counting hook, so refused requests are counted too.
  if (apiKeys) {
    app.addHook('onRequest', async (request) => {
      if (isOpen(request.routeOptions.url)) return;
      // CORS preflights carry no credentials; @fastify/cors answers them.
      if (corsOrigins && request.method === 'OPTIONS') return;
      const given =
        bearerToken(request.headers.authorization) ??
        wsProtocolKey(request.headers['sec-websocket-protocol']);
      if (given === undefined)
        throw new ApiError('TF_ERR_UNAUTHORIZED', 'an API key is required: send Authorization: Bearer KEY');
      if (!matchesAny(given, apiKeys)) throw new ApiError('TF_ERR_UNAUTHORIZED', 'the API key is not valid');
    });
  }
  // Browsers apply no CORS to WebSockets: another site's page could open one and read the answers.
  app.addHook('onRequest', async (request) => {
    if (request.headers.upgrade?.toLowerCase() !== 'websocket') return;
    const origin = request.headers.origin;
    if (origin === undefined || sameOrigin(origin, request.headers.host) || corsOrigins?.includes('*'))
      return;
    if (corsOrigins?.includes(origin)) return;
    throw new ApiError(
      'TF_ERR_FORBIDDEN',
      `WebSocket connections from ${JSON.stringify(origin)} are not allowed (see --cors-origin)`,
    );
  });
  if (corsOrigins) {
    app.register(cors, {
      origin: corsOrigins.includes('*') ? '*' : [...corsOrigins],
      methods: ['GET', 'HEAD', 'POST'],
      allowedHeaders: ['authorization', 'content-type', 'x-request-id'],
      exposedHeaders: ['x-request-id', 'retry-after'],
      maxAge: 600,
    });
  }

  app.register(websocket, {
    options: {
      maxPayload: limits.wsMaxMessageBytes,
      // Selects `tokenformer` when a browser offers it next to `bearer.KEY`; never echoes the key.
      handleProtocols: selectWsProtocol,
    },
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
    scope.register(chatRoute, { ctx, templates });
    scope.register(streamRoute, { ctx, templates });
    scope.register(modelsRoute, { ctx });
    scope.register(tokenizeRoute, { ctx });
    scope.register(healthRoute, { ctx });
    scope.register(metricsRoute, { ctx });
    scope.register(playgroundRoute, { ctx });
    scope.register(adminRoute, { ctx, adminToken: opts.adminToken });
  });
  return app;
}

/**
 * Node's HTTP parser refusals (before fastify sees a request), in the OpenAI error shape; the
 * connection is closed after the answer.
 */
function answerClientError(err: Error & { code?: string }, socket: Socket, limits: ServerLimits): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  let code: ApiErrorCode = 'TF_ERR_BAD_ARGS';
  let message = 'the request is not valid HTTP';
  if (err.code === 'HPE_HEADER_OVERFLOW') {
    code = 'TF_ERR_HEADERS_TOO_LARGE';
    message = `the request headers are larger than the server's limit of ${limits.maxHeaderBytes} bytes`;
  } else if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
    code = 'TF_ERR_REQUEST_TIMEOUT';
    message = "the request did not arrive within the server's time limit";
  }
  const { status, type } = API_ERRORS[code];
  const body = JSON.stringify({ error: { message, type, code } });
  if (socket.writable)
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  socket.destroy();
}

/** A browser page served by this server itself (the Origin's host is the Host asked for). */
function sameOrigin(origin: string, host: string | undefined): boolean {
  try {
    return host !== undefined && new URL(origin).host === host;
  } catch {
    return false;
  }
}

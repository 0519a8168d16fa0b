import { randomUUID } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { CompletionRequest } from './completion.ts';
import type { ServerContext, ServingEngine } from './context.ts';
import { ApiError } from './errors.ts';
import { type CompletionEvent, runCompletion } from './generate.ts';
import type { CompletionMeta } from './openai.ts';
import { onResponseClose } from './response.ts';
import { pipeSse } from './sse-stream.ts';

export type CompletionEvents = AsyncGenerator<CompletionEvent, void, undefined>;

/** How one completion route shapes the shared completion stream on the wire. */
export interface CompletionShape {
  /** `cmpl` or `chatcmpl`: the response id's prefix. */
  idPrefix: string;
  /** The whole answer, once every event is in. */
  collect(events: CompletionEvents, meta: CompletionMeta): Promise<{ system_fingerprint: string }>;
  /** The SSE chunks, one JSON object each. */
  chunks(events: CompletionEvents, meta: CompletionMeta): AsyncIterator<object, void, undefined>;
}

/**
 * Runs a parsed completion request and answers it, JSON or SSE, for both completion routes: a
 * client that goes away cancels its generations (and frees their KV-cache slots); admission
 * (every choice queued) comes first, so a full queue or a refused prompt still gets its own HTTP
 * status, and after it SSE headers go out at once, before the first token.
 */
export async function replyCompletion(
  ctx: ServerContext,
  request: FastifyRequest,
  reply: FastifyReply,
  engine: ServingEngine,
  req: CompletionRequest,
  shape: CompletionShape,
): Promise<FastifyReply> {
  const job = ctx.startJob();
  const unwatch = onResponseClose(reply.raw, (finished) => {
    if (!finished) job.abort(new ApiError('TF_ERR_CLIENT_CLOSED', 'the client closed the connection'));
  });
  const meta: CompletionMeta = {
    id: `${shape.idPrefix}-${randomUUID().replaceAll('-', '')}`,
    created: Math.floor(Date.now() / 1000),
    model: engine.name,
    system_fingerprint: engine.version,
  };
  const events = runCompletion(engine, req, job, ctx.metrics);
  try {
    await events.next();
    if (!req.stream) {
      const response = await shape.collect(events, meta);
      return reply.header('x-model-version', response.system_fingerprint).send(response);
    }
    reply.hijack();
    await pipeSse(reply.raw, shape.chunks(events, meta), {
      requestId: request.id,
      log: request.log,
      modelVersion: engine.version,
      keepAliveMs: ctx.limits.sseKeepAliveMs,
    });
    return reply;
  } catch (err) {
    if (err instanceof ApiError && err.code === 'TF_ERR_CLIENT_CLOSED') {
      reply.hijack(); // nobody to answer
      return reply;
    }
    throw err;
  } finally {
    unwatch();
    job.end();
  }
}

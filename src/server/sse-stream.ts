import type { ServerResponse } from 'node:http';
import type { FastifyBaseLogger } from 'fastify';
import { ApiError, toApiError } from './errors.ts';
import { setOutcomeStatus } from './response.ts';
import { SSE_DONE, SSE_HEADERS, sseComment, sseJson } from './sse.ts';

/** Waits until `res` can take more, or is closed. */
function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done).off('close', done);
      resolve();
    };
    res.once('drain', done).once('close', done);
  });
}

export interface SseStreamOptions {
  requestId: string;
  log: FastifyBaseLogger;
  /** The version that took the request (`x-model-version`). */
  modelVersion: string;
  /** A `: keep-alive` comment goes out whenever nothing was sent for this long. */
  keepAliveMs: number;
}

/**
 * The SSE adapter shared by the completion routes: headers at once (the request is queued), one
 * `data: {json}` event per chunk (waiting while the client reads slowly), `data: [DONE]` at the
 * end, and a `: keep-alive` comment whenever nothing was sent for `keepAliveMs` (queued or
 * prefilling), so proxies keep the connection open. An error after the headers (timeout,
 * shutdown, engine failure) is sent as a `data: {"error": …}` event, which OpenAI clients raise,
 * the stream ends without [DONE], and metrics count its real status; a client that went away
 * ends it quietly.
 */
export async function pipeSse(
  res: ServerResponse,
  chunks: AsyncIterator<object, void, undefined>,
  o: SseStreamOptions,
): Promise<void> {
  res.writeHead(200, { ...SSE_HEADERS, 'x-request-id': o.requestId, 'x-model-version': o.modelVersion });
  res.flushHeaders();
  let lastWrite = performance.now();
  const write = async (s: string) => {
    if (res.destroyed) throw new ApiError('TF_ERR_CLIENT_CLOSED', 'the client closed the connection');
    lastWrite = performance.now();
    if (!res.write(s)) await drained(res);
  };
  const keepAlive = setInterval(
    () => {
      if (performance.now() - lastWrite >= o.keepAliveMs && !res.destroyed && res.writableLength === 0) {
        lastWrite = performance.now();
        res.write(sseComment('keep-alive'));
      }
    },
    Math.max(1, Math.floor(o.keepAliveMs / 3)),
  );
  keepAlive.unref();
  try {
    for (let r = await chunks.next(); !r.done; r = await chunks.next()) await write(sseJson(r.value));
    await write(SSE_DONE);
  } catch (err) {
    if (err instanceof ApiError && err.code === 'TF_ERR_CLIENT_CLOSED') return;
    const mapped = toApiError(err, { requestId: o.requestId });
    if (mapped.internal) o.log.error({ err }, 'stream failed');
    else o.log.info({ code: mapped.code }, 'stream ended with an error');
    setOutcomeStatus(res, mapped.status);
    if (!res.destroyed) res.write(sseJson(mapped.body));
  } finally {
    clearInterval(keepAlive);
    void chunks.return?.();
    res.end();
  }
}

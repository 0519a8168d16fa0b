import type { ServerResponse } from 'node:http';
import type { FastifyBaseLogger } from 'fastify';
import { ApiError, toApiError } from './errors.ts';
import { SSE_DONE, SSE_HEADERS, sseJson } from './sse.ts';

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

/**
 * Streams `chunks` as OpenAI SSE: one `data: {json}` event each (waiting while the client reads
 * slowly), then `data: [DONE]`. An error after the headers (timeout, shutdown, engine failure)
 * is sent as a `data: {"error": …}` event, which OpenAI clients raise, and the stream ends
 * without [DONE]; a client that went away ends it quietly.
 */
export async function pipeSse(
  res: ServerResponse,
  requestId: string,
  log: FastifyBaseLogger,
  chunks: AsyncIterator<object, void, undefined>,
): Promise<void> {
  if (!res.headersSent) res.writeHead(200, { ...SSE_HEADERS, 'x-request-id': requestId });
  const write = async (s: string) => {
    if (res.destroyed) throw new ApiError('TF_ERR_CLIENT_CLOSED', 'the client closed the connection');
    if (!res.write(s)) await drained(res);
  };
  try {
    for (let r = await chunks.next(); !r.done; r = await chunks.next()) await write(sseJson(r.value));
    await write(SSE_DONE);
  } catch (err) {
    if (err instanceof ApiError && err.code === 'TF_ERR_CLIENT_CLOSED') return;
    const mapped = toApiError(err, { requestId });
    if (mapped.internal) log.error({ err }, 'stream failed');
    else log.info({ code: mapped.code }, 'stream ended with an error');
    if (!res.destroyed) res.write(sseJson(mapped.body));
  } finally {
    void chunks.return?.();
    res.end();
  }
}

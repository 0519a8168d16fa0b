import { randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import type { FastifyBaseLogger, FastifyPluginAsync } from 'fastify';
import type { ModelRef } from '../../engine/text-stream.ts';
import { type CompletionBody, parseCompletionRequest } from '../completion.ts';
import type { ServerContext } from '../context.ts';
import { ApiError, toApiError } from '../errors.ts';
import { type CompletionEvent, runCompletion } from '../generate.ts';
import {
  type CompletionChoice,
  type CompletionLogprobs,
  type CompletionMeta,
  completionChunk,
  completionResponse,
  mergeLogprobs,
  type Usage,
} from '../openai.ts';
import { onResponseClose } from '../response.ts';
import { samplingFieldsSchema } from '../sampling-fields.ts';
import { SSE_DONE, SSE_HEADERS, sseJson } from '../sse.ts';

const tokenIds = { type: 'array', minItems: 1, items: { type: 'integer', minimum: 0 } } as const;
const optional = (type: string) => ({ type: [type, 'null'] }) as const;

/**
 * POST /v1/completions, the OpenAI Completions API: types are checked here by fastify (400 on a
 * mismatch), values and ranges by parseCompletionRequest. The fields it shares with chat
 * completions come from sampling-fields.ts. Unknown fields are ignored, as OpenAI clients send
 * fields that no server uses. The WebSocket route validates its messages with it too.
 */
export const completionsBodySchema = {
  type: 'object',
  required: ['prompt'],
  properties: {
    ...samplingFieldsSchema,
    prompt: {
      anyOf: [
        { type: 'string' },
        { type: 'array', minItems: 1, items: { type: 'string' } },
        tokenIds,
        { type: 'array', minItems: 1, items: tokenIds },
      ],
    },
    // 0 scores the prompt without generating (with echo); the other routes need at least 1.
    max_tokens: { type: ['integer', 'null'], minimum: 0 },
    logprobs: { type: ['integer', 'null'], minimum: 0 },
    echo: optional('boolean'),
    best_of: optional('integer'),
    suffix: optional('string'),
  },
} as const;

type Events = AsyncGenerator<CompletionEvent, void, undefined>;

export const completionsRoute: FastifyPluginAsync<{ ctx: ServerContext }> = async (app, { ctx }) => {
  app.post<{ Body: CompletionBody }>(
    '/v1/completions',
    { schema: { body: completionsBodySchema } },
    async (request, reply) => {
      const engine = ctx.acceptGeneration();
      const req = parseCompletionRequest(request.body, engine, {
        modelName: ctx.modelName,
        maxChoices: ctx.limits.maxChoices,
      });
      const job = ctx.startJob();
      // A client that goes away cancels its generations (and frees their KV-cache slots).
      const unwatch = onResponseClose(reply.raw, (finished) => {
        if (!finished) job.abort(new ApiError('TF_ERR_CLIENT_CLOSED', 'the client closed the connection'));
      });
      const meta: CompletionMeta = {
        id: `cmpl-${randomUUID().replaceAll('-', '')}`,
        created: Math.floor(Date.now() / 1000),
        model: ctx.modelName,
        system_fingerprint: ctx.modelVersion,
      };
      const events = runCompletion(engine, req, job, ctx.metrics);
      try {
        // Admission: a full queue or a refused prompt still gets its own HTTP status.
        const first = await events.next();
        if (!req.stream) return await collect(first, events, meta, req.prompts.length * req.n);
        reply.hijack();
        await streamSse(reply.raw, request.id, request.log, first, events, meta, req.includeUsage);
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
    },
  );
};

async function collect(
  first: IteratorResult<CompletionEvent>,
  events: Events,
  meta: CompletionMeta,
  count: number,
) {
  const choices: CompletionChoice[] = Array.from({ length: count }, (_, index) => ({
    index,
    text: '',
    logprobs: null,
    finish_reason: null,
  }));
  const logprobs: CompletionLogprobs[][] = choices.map(() => []);
  let total: Usage | undefined;
  let answeredBy = meta;
  for (let r = first; !r.done; r = await events.next()) {
    const e = r.value;
    if (e.type !== 'usage') answeredBy = producedBy(answeredBy, e);
    if (e.type === 'text') {
      choices[e.index]!.text += e.text;
      if (e.logprobs) logprobs[e.index]!.push(e.logprobs);
    } else if (e.type === 'finish') choices[e.index]!.finish_reason = e.finishReason;
    else total = e.usage;
  }
  for (const c of choices) if (logprobs[c.index]!.length > 0) c.logprobs = mergeLogprobs(logprobs[c.index]!);
  // A stream migrated by a swap ends on the new model: the response names the last one.
  return completionResponse(answeredBy, choices, total!);
}

/** The meta of a chunk: `model` and `system_fingerprint` name the model that produced it. */
function producedBy(meta: CompletionMeta, e: { model?: ModelRef }): CompletionMeta {
  return e.model ? { ...meta, model: e.model.name, system_fingerprint: e.model.version } : meta;
}

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
 * The SSE adapter: one OpenAI chunk per event, `data: [DONE]` at the end. An error after the
 * headers (timeout, shutdown, engine failure) is sent as a `data: {"error": …}` event, which
 * OpenAI clients raise, and the stream ends without [DONE].
 */
async function streamSse(
  res: ServerResponse,
  requestId: string,
  log: FastifyBaseLogger,
  first: IteratorResult<CompletionEvent>,
  events: Events,
  meta: CompletionMeta,
  includeUsage: boolean,
): Promise<void> {
  res.writeHead(200, { ...SSE_HEADERS, 'x-request-id': requestId });
  const usageField = includeUsage ? null : undefined;
  const write = async (s: string) => {
    if (res.destroyed) throw new ApiError('TF_ERR_CLIENT_CLOSED', 'the client closed the connection');
    if (!res.write(s)) await drained(res);
  };
  const choice = (e: Exclude<CompletionEvent, { type: 'usage' }>): CompletionChoice =>
    e.type === 'text'
      ? { index: e.index, text: e.text, logprobs: e.logprobs, finish_reason: null }
      : { index: e.index, text: '', logprobs: null, finish_reason: e.finishReason };
  try {
    for (let r = first; !r.done; r = await events.next()) {
      const e = r.value;
      if (e.type === 'text' && e.text === '' && !e.logprobs) continue;
      if (e.type !== 'usage')
        await write(sseJson(completionChunk(producedBy(meta, e), [choice(e)], usageField)));
      else if (includeUsage) await write(sseJson(completionChunk(meta, [], e.usage)));
    }
    await write(SSE_DONE);
  } catch (err) {
    if (err instanceof ApiError && err.code === 'TF_ERR_CLIENT_CLOSED') return;
    const mapped = toApiError(err, { requestId });
    if (mapped.internal) log.error({ err }, 'stream failed');
    else log.info({ code: mapped.code }, 'stream ended with an error');
    if (!res.destroyed) res.write(sseJson(mapped.body));
  } finally {
    void events.return();
    res.end();
  }
}

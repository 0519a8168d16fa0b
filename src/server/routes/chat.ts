import { randomUUID } from 'node:crypto';
import type { FastifyPluginAsync } from 'fastify';
import type { Tokenizer } from '../../tokenizer/tokenizer.ts';
import { type ChatBody, type ChatTemplates, chatBodySchema, parseChatRequest } from '../chat.ts';
import {
  type ChatChoice,
  type ChatChunk,
  type ChatTokenLogprob,
  chatChunk,
  chatCompletion,
  chatTokenLogprobs,
} from '../chat-openai.ts';
import type { ServerContext } from '../context.ts';
import { ApiError } from '../errors.ts';
import { type CompletionEvent, runCompletion } from '../generate.ts';
import { type CompletionMeta, producedBy, type Usage } from '../openai.ts';
import { onResponseClose } from '../response.ts';
import { pipeSse } from '../sse-stream.ts';

type Events = AsyncGenerator<CompletionEvent, void, undefined>;

/**
 * POST /v1/chat/completions, the OpenAI Chat Completions API over the same completion stream as
 * /v1/completions: messages → chat template → prompt; answers as `chat.completion` or, streamed,
 * `chat.completion.chunk`s (`delta.role` first, then `delta.content`, then `finish_reason`).
 */
export const chatRoute: FastifyPluginAsync<{ ctx: ServerContext; templates: ChatTemplates }> = async (
  app,
  { ctx, templates },
) => {
  app.post<{ Body: ChatBody }>(
    '/v1/chat/completions',
    { schema: { body: chatBodySchema } },
    async (request, reply) => {
      const engine = ctx.acceptGeneration(request.body.model);
      const req = parseChatRequest(request.body, engine, { maxChoices: ctx.limits.maxChoices }, templates);
      const job = ctx.startJob();
      const unwatch = onResponseClose(reply.raw, (finished) => {
        if (!finished) job.abort(new ApiError('TF_ERR_CLIENT_CLOSED', 'the client closed the connection'));
      });
      const meta: CompletionMeta = {
        id: `chatcmpl-${randomUUID().replaceAll('-', '')}`,
        created: Math.floor(Date.now() / 1000),
        model: engine.name,
        system_fingerprint: engine.version,
      };
      const events = runCompletion(engine, req, job, ctx.metrics);
      const count = req.prompts.length * req.n;
      try {
        // Admission: a full queue or a refused prompt still gets its own HTTP status.
        await events.next();
        if (!req.stream) {
          const withLogprobs = req.params.logprobs !== undefined;
          const response = await collect(events, meta, count, engine.tokenizer, withLogprobs);
          return reply.header('x-model-version', response.system_fingerprint).send(response);
        }
        reply.hijack();
        await pipeSse(reply.raw, chatChunks(events, meta, count, req.includeUsage, engine.tokenizer), {
          requestId: request.id,
          log: request.log,
          modelVersion: engine.version,
          keepAliveMs: ctx.limits.sseKeepAliveMs,
        });
        return reply;
      } catch (err) {
        if (err instanceof ApiError && err.code === 'TF_ERR_CLIENT_CLOSED') {
          reply.hijack();
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
  events: Events,
  meta: CompletionMeta,
  count: number,
  tokenizer: Tokenizer,
  withLogprobs: boolean,
) {
  const choices: ChatChoice[] = Array.from({ length: count }, (_, index) => ({
    index,
    message: { role: 'assistant', content: '' },
    logprobs: null,
    finish_reason: null,
  }));
  const logprobs: ChatTokenLogprob[][] = choices.map(() => []);
  let total: Usage | undefined;
  let answeredBy = meta;
  for (let r = await events.next(); !r.done; r = await events.next()) {
    const e = r.value;
    if (e.type === 'accepted') continue;
    if (e.type !== 'usage') answeredBy = producedBy(answeredBy, e);
    if (e.type === 'text') {
      choices[e.index]!.message.content += e.text;
      if (e.reported) logprobs[e.index]!.push(...chatTokenLogprobs(tokenizer, e.reported).content);
    } else if (e.type === 'finish') choices[e.index]!.finish_reason = e.finishReason;
    else total = e.usage;
  }
  if (withLogprobs) for (const c of choices) c.logprobs = { content: logprobs[c.index]! };
  return chatCompletion(answeredBy, choices, total!);
}

/**
 * The completion stream as chat chunks: each choice's `delta.role` first, then its text deltas
 * (with logprobs when asked), a chunk with its `finish_reason`, and the usage chunk when asked.
 */
export async function* chatChunks(
  events: Events,
  meta: CompletionMeta,
  count: number,
  includeUsage: boolean,
  tokenizer: Tokenizer,
): AsyncGenerator<ChatChunk, void, undefined> {
  const usageField = includeUsage ? null : undefined;
  for (let index = 0; index < count; index++)
    yield chatChunk(
      meta,
      [{ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }],
      usageField,
    );
  try {
    for (let r = await events.next(); !r.done; r = await events.next()) {
      const e = r.value;
      if (e.type === 'accepted') continue;
      if (e.type === 'text') {
        if (e.text === '' && !e.reported?.length) continue;
        const logprobs = e.reported ? chatTokenLogprobs(tokenizer, e.reported) : null;
        yield chatChunk(
          producedBy(meta, e),
          [{ index: e.index, delta: { content: e.text }, logprobs, finish_reason: null }],
          usageField,
        );
      } else if (e.type === 'finish') {
        yield chatChunk(
          producedBy(meta, e),
          [{ index: e.index, delta: {}, logprobs: null, finish_reason: e.finishReason }],
          usageField,
        );
      } else if (includeUsage) yield chatChunk(meta, [], e.usage);
    }
  } finally {
    void events.return();
  }
}

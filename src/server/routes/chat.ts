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
import { type CompletionEvents, replyCompletion } from '../completion-reply.ts';
import type { ServerContext } from '../context.ts';
import { type CompletionMeta, producedBy, type Usage } from '../openai.ts';

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
      const count = req.prompts.length * req.n;
      const withLogprobs = req.params.logprobs !== undefined;
      return replyCompletion(ctx, request, reply, engine, req, {
        idPrefix: 'chatcmpl',
        collect: (events, meta) => collect(events, meta, count, engine.tokenizer, withLogprobs),
        chunks: (events, meta) => chatChunks(events, meta, count, req.includeUsage, engine.tokenizer),
      });
    },
  );
};

async function collect(
  events: CompletionEvents,
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
  events: CompletionEvents,
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

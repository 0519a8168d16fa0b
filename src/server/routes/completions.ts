import type { FastifyPluginAsync } from 'fastify';
import { type CompletionBody, parseCompletionRequest } from '../completion.ts';
import { type CompletionEvents, replyCompletion } from '../completion-reply.ts';
import type { ServerContext } from '../context.ts';
import type { CompletionEvent } from '../generate.ts';
import {
  type CompletionChoice,
  type CompletionLogprobs,
  type CompletionMeta,
  completionChunk,
  completionResponse,
  mergeLogprobs,
  producedBy,
  type Usage,
} from '../openai.ts';
import { samplingFieldsSchema } from '../sampling-fields.ts';

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

export const completionsRoute: FastifyPluginAsync<{ ctx: ServerContext }> = async (app, { ctx }) => {
  app.post<{ Body: CompletionBody }>(
    '/v1/completions',
    { schema: { body: completionsBodySchema } },
    async (request, reply) => {
      const engine = ctx.acceptGeneration(request.body.model);
      const req = parseCompletionRequest(request.body, engine, { maxChoices: ctx.limits.maxChoices });
      return replyCompletion(ctx, request, reply, engine, req, {
        idPrefix: 'cmpl',
        collect: (events, meta) => collect(events, meta, req.prompts.length * req.n),
        chunks: (events, meta) => completionChunks(events, meta, req.includeUsage),
      });
    },
  );
};

async function collect(events: CompletionEvents, meta: CompletionMeta, count: number) {
  const choices: CompletionChoice[] = Array.from({ length: count }, (_, index) => ({
    index,
    text: '',
    logprobs: null,
    finish_reason: null,
  }));
  const logprobs: CompletionLogprobs[][] = choices.map(() => []);
  let total: Usage | undefined;
  let answeredBy = meta;
  for (let r = await events.next(); !r.done; r = await events.next()) {
    const e = r.value;
    if (e.type === 'accepted') continue;
    if (e.type !== 'usage') answeredBy = producedBy(answeredBy, e);
    if (e.type === 'text') {
      choices[e.index]!.text += e.text;
      if (e.logprobs) logprobs[e.index]!.push(e.logprobs);
    } else if (e.type === 'finish') choices[e.index]!.finish_reason = e.finishReason;
    else total = e.usage;
  }
  for (const c of choices) if (logprobs[c.index]!.length > 0) c.logprobs = mergeLogprobs(logprobs[c.index]!);
  // A stream migrated by a swap ends on the new model: the response names the last version.
  return completionResponse(answeredBy, choices, total!);
}

/** The completion stream as OpenAI chunks; the usage chunk names the version that produced the last text. */
async function* completionChunks(
  events: CompletionEvents,
  meta: CompletionMeta,
  includeUsage: boolean,
): AsyncGenerator<object, void, undefined> {
  const usageField = includeUsage ? null : undefined;
  let latest = meta;
  const choice = (e: Extract<CompletionEvent, { type: 'text' | 'finish' }>): CompletionChoice =>
    e.type === 'text'
      ? { index: e.index, text: e.text, logprobs: e.logprobs, finish_reason: null }
      : { index: e.index, text: '', logprobs: null, finish_reason: e.finishReason };
  try {
    for (let r = await events.next(); !r.done; r = await events.next()) {
      const e = r.value;
      if (e.type === 'accepted') continue;
      if (e.type === 'text' && e.text === '' && !e.logprobs) continue;
      if (e.type !== 'usage') {
        latest = producedBy(latest, e);
        yield completionChunk(latest, [choice(e)], usageField);
      } else if (includeUsage) yield completionChunk(latest, [], e.usage);
    }
  } finally {
    void events.return();
  }
}

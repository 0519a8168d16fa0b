import { TOKENIZER_CONFIG_FILE } from '../model/checkpoint.ts';
import { type ChatMessage, ChatTemplate, type TokenizerConfig } from './chat-template.ts';
import {
  type CompletionBody,
  type CompletionRequest,
  type ParseContext,
  parseCompletionRequest,
} from './completion.ts';
import type { ServingEngine } from './context.ts';
import { ApiError } from './errors.ts';
import { chatLogprobs, samplingFieldsSchema } from './sampling-fields.ts';

/**
 * A chat completion request as the HTTP route and the WebSocket receive it (after the JSON
 * schema below), and its checked form: the messages rendered through the model's chat template
 * into a prompt, then the completions checks (model, context, sampling) applied to it.
 */

const optional = (type: string) => ({ type: [type, 'null'] }) as const;

const contentPart = {
  type: 'object',
  required: ['type'],
  properties: { type: { type: 'string' }, text: { type: 'string' } },
} as const;

/** The chat body: messages, the chat form of logprobs, and the fields shared with completions. */
export const chatBodySchema = {
  type: 'object',
  required: ['messages'],
  properties: {
    ...samplingFieldsSchema,
    messages: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        required: ['role'],
        properties: {
          role: { type: 'string' },
          content: { anyOf: [{ type: 'string' }, { type: 'array', items: contentPart }, { type: 'null' }] },
          name: optional('string'),
        },
      },
    },
    max_completion_tokens: { type: ['integer', 'null'], minimum: 1 },
    logprobs: optional('boolean'),
    top_logprobs: { type: ['integer', 'null'], minimum: 0 },
  },
} as const;

type Maybe<T> = T | null | undefined;

export interface ChatBody
  extends Omit<CompletionBody, 'prompt' | 'logprobs' | 'echo' | 'suffix' | 'best_of'> {
  messages: {
    role: string;
    content?: Maybe<string | { type: string; text?: string }[]>;
    name?: Maybe<string>;
  }[];
  max_completion_tokens?: Maybe<number>;
  logprobs?: Maybe<boolean>;
  top_logprobs?: Maybe<number>;
}

const bad = (message: string): never => {
  throw new ApiError('TF_ERR_BAD_ARGS', message);
};

function messagesOf(body: ChatBody): ChatMessage[] {
  return body.messages.map((m, i) => {
    let content = '';
    if (typeof m.content === 'string') content = m.content;
    else if (Array.isArray(m.content)) {
      content = m.content
        .map((p) =>
          p.type === 'text' && typeof p.text === 'string'
            ? p.text
            : bad(
                `messages[${i}]: content parts of type ${JSON.stringify(p.type)} are not supported (text only)`,
              ),
        )
        .join('');
    }
    return { role: m.role, content, ...(m.name ? { name: m.name } : {}) };
  });
}

/** The template for a serving model: the server's --chat-template, its own, or the plain default. */
export class ChatTemplates {
  private readonly byConfig = new WeakMap<object, ChatTemplate>();
  private readonly plain = ChatTemplate.plain();

  constructor(private readonly override?: ChatTemplate) {}

  for(config: TokenizerConfig | null): ChatTemplate {
    if (this.override) return this.override;
    if (!config) return this.plain;
    let t = this.byConfig.get(config);
    if (!t) {
      t = ChatTemplate.fromTokenizerConfig(config, TOKENIZER_CONFIG_FILE) ?? this.plain;
      this.byConfig.set(config, t);
    }
    return t;
  }
}

/** Checks a chat body against the served model; every failure is a 4xx ApiError. */
export function parseChatRequest(
  body: ChatBody,
  engine: ServingEngine,
  ctx: ParseContext,
  templates: ChatTemplates,
): CompletionRequest {
  const { messages: _m, max_completion_tokens, logprobs: _l, top_logprobs: _t, ...rest } = body;
  const logprobs = chatLogprobs(body);
  const template = templates.for(engine.tokenizerConfig);
  const prompt = template.render(messagesOf(body), { modelSpecials: engine.tokenizerConfig });
  const req = parseCompletionRequest(
    {
      ...rest,
      prompt,
      // Without a bound, a chat reply may run to the end of the context (the scheduler stops there).
      max_tokens: max_completion_tokens ?? body.max_tokens ?? engine.manifest.model.max_seq_len,
      logprobs: logprobs ?? null,
      echo: false,
    },
    engine,
    ctx,
  );
  if (template.stop.length) req.params = { ...req.params, stop: [...req.params.stop, ...template.stop] };
  return req;
}

import { readFileSync } from 'node:fs';
import { extname } from 'node:path';
import { Template } from '@huggingface/jinja';
import { fail } from '../util/errors.ts';
import { ApiError } from './errors.ts';

/**
 * Chat templates as Hugging Face writes them: a Jinja `chat_template` in `tokenizer_config.json`,
 * rendered with @huggingface/jinja (made to match transformers' `apply_chat_template`: the same
 * trim_blocks/lstrip_blocks whitespace rules, `raise_exception`, `tojson`) with `messages`,
 * `add_generation_prompt` and the config's special tokens (`bos_token`, `eos_token`, …).
 * Base models without a template get PLAIN_TEMPLATE.
 */

export interface ChatMessage {
  role: string;
  content: string;
  name?: string;
}

/**
 * The default for models without a template (base models, such as the shipped ones): a plain
 * transcript that a model trained on prose can continue. Generation stops where the model starts
 * the next user turn (PLAIN_STOP).
 */
export const PLAIN_TEMPLATE =
  "{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}" +
  "{% else %}{{ message['role'] | capitalize }}: {{ message['content'] + '\\n' }}{% endif %}{% endfor %}" +
  "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}";
export const PLAIN_STOP = ['\nUser:'];

type SpecialToken = string | { content?: unknown } | null | undefined;

/** The parts of a tokenizer_config.json a chat template reads. */
export interface TokenizerConfig {
  chat_template?: string | { name?: unknown; template?: unknown }[] | null;
  bos_token?: SpecialToken;
  eos_token?: SpecialToken;
  unk_token?: SpecialToken;
  pad_token?: SpecialToken;
  [key: string]: unknown;
}

const SPECIAL_TOKENS = ['bos_token', 'eos_token', 'unk_token', 'pad_token'] as const;

function tokenText(t: SpecialToken): string | undefined {
  if (typeof t === 'string') return t;
  if (t && typeof t === 'object' && typeof t.content === 'string') return t.content;
  return undefined;
}

function specialTokens(config: TokenizerConfig | null | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of SPECIAL_TOKENS) {
    const text = tokenText(config?.[k] as SpecialToken);
    if (text !== undefined) out[k] = text;
  }
  return out;
}

export class ChatTemplate {
  private readonly template: Template;

  private constructor(
    readonly source: string,
    /** Where it came from, for logs: a file, `tokenizer_config.json` or `default`. */
    readonly origin: string,
    private readonly specials: Record<string, string>,
    /** Stop strings the template implies (the plain default's next user turn). */
    readonly stop: readonly string[],
  ) {
    try {
      this.template = new Template(source);
    } catch (err) {
      fail('TF_ERR_BAD_CONFIG', `${origin}: the chat template does not parse: ${(err as Error).message}`);
    }
  }

  static plain(): ChatTemplate {
    return new ChatTemplate(PLAIN_TEMPLATE, 'default', {}, PLAIN_STOP);
  }

  /** The template of a tokenizer_config.json object, or null when it has none. */
  static fromTokenizerConfig(config: TokenizerConfig, origin: string): ChatTemplate | null {
    let source = config.chat_template;
    // Several named templates: transformers uses the one named "default".
    if (Array.isArray(source)) {
      const named = source.find((t) => t?.name === 'default') ?? source[0];
      source = typeof named?.template === 'string' ? named.template : undefined;
    }
    if (typeof source !== 'string' || source === '') return null;
    return new ChatTemplate(source, origin, specialTokens(config), []);
  }

  /**
   * `--chat-template FILE`: a tokenizer_config.json (its `chat_template` and special tokens) or a
   * file holding the Jinja template itself.
   */
  static fromFile(path: string): ChatTemplate {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      fail('TF_ERR_NOT_FOUND', `--chat-template ${path}: ${(err as Error).message}`);
    }
    if (extname(path).toLowerCase() === '.json') {
      let config: TokenizerConfig;
      try {
        config = JSON.parse(text) as TokenizerConfig;
      } catch (err) {
        fail('TF_ERR_BAD_CONFIG', `--chat-template ${path}: not valid JSON (${(err as Error).message})`);
      }
      return (
        ChatTemplate.fromTokenizerConfig(config, path) ??
        fail('TF_ERR_BAD_CONFIG', `--chat-template ${path}: the file has no "chat_template"`)
      );
    }
    // A bare template sees the served model's special tokens at render time.
    const bare = ChatTemplate.fromTokenizerConfig({ chat_template: text }, path);
    return bare ?? fail('TF_ERR_BAD_CONFIG', `--chat-template ${path}: the file is empty`);
  }

  /**
   * The prompt for `messages`; a template that raises (e.g. roles out of order) is a 400.
   * `modelSpecials` (the served model's tokenizer_config) fill special tokens this template's
   * own source did not define (a bare `--chat-template` file).
   */
  render(
    messages: readonly ChatMessage[],
    opts: { addGenerationPrompt?: boolean; modelSpecials?: TokenizerConfig | null } = {},
  ): string {
    const addGenerationPrompt = opts.addGenerationPrompt ?? true;
    try {
      return this.template.render({
        ...specialTokens(opts.modelSpecials),
        ...this.specials,
        messages,
        add_generation_prompt: addGenerationPrompt,
      });
    } catch (err) {
      throw new ApiError(
        'TF_ERR_BAD_ARGS',
        `the model's chat template refused the messages: ${(err as Error).message}`,
      );
    }
  }
}

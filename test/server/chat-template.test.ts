import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { ChatTemplate, PLAIN_STOP, type TokenizerConfig } from '../../src/server/chat-template.ts';
import { ApiError } from '../../src/server/errors.ts';
import { TokenFormerError } from '../../src/util/errors.ts';
import { tempDir } from '../helpers.ts';

/**
 * Chat templates from tokenizer_config.json fixtures, rendered as Hugging Face transformers'
 * `apply_chat_template(messages, tokenize=False, add_generation_prompt=…)` renders them.
 *
 * How the expected strings were established (no Python transformers here):
 * - zephyr-tokenizer_config.json holds the chat_template of HuggingFaceH4/zephyr-7b-beta, whose
 *   rendering for the system + user messages below is the worked example of the transformers
 *   chat-templating guide ("<|system|>\nYou are a friendly chatbot… pirate</s>\n<|user|>\n…</s>\n
 *   <|assistant|>\n"; the guide prints it decoded from tokens, which adds a space before each
 *   newline, the string form has none), and the same string is the target that
 *   @huggingface/jinja's template tests record for this template, produced with transformers.
 *   The template relies on transformers' trim_blocks/lstrip_blocks (no blank lines between
 *   turns), so it also checks those whitespace rules.
 * - chatml-tokenizer_config.json holds HuggingFaceH4/zephyr-7b-gemma-v0.1's ChatML template (as
 *   a named-template list, bos_token as an AddedToken object, as tokenizer_config files write
 *   them); its string concatenations give the expected text directly, and the three-turn target
 *   without a generation prompt is again the one recorded from transformers in those tests.
 */

const FIXTURES = join(import.meta.dirname, 'fixtures');
const config = (name: string) => JSON.parse(readFileSync(join(FIXTURES, name), 'utf8')) as TokenizerConfig;

const PIRATE = [
  { role: 'system', content: 'You are a friendly chatbot who always responds in the style of a pirate' },
  { role: 'user', content: 'How many helicopters can a human eat in one sitting?' },
];
const CHAT = [
  { role: 'user', content: 'Hello, how are you?' },
  { role: 'assistant', content: "I'm doing great. How can I help you today?" },
  { role: 'user', content: "I'd like to show off how chat templating works!" },
];

test('zephyr-7b-beta template: the transformers reference rendering', () => {
  const t = ChatTemplate.fromTokenizerConfig(config('zephyr-tokenizer_config.json'), 'zephyr')!;
  assert.equal(
    t.render(PIRATE),
    '<|system|>\nYou are a friendly chatbot who always responds in the style of a pirate</s>\n' +
      '<|user|>\nHow many helicopters can a human eat in one sitting?</s>\n<|assistant|>\n',
  );
  assert.equal(
    t.render(
      [
        {
          role: 'system',
          content: 'You are a friendly chatbot who always responds in the style of a pirate',
        },
        ...CHAT,
      ],
      { addGenerationPrompt: false },
    ),
    '<|system|>\nYou are a friendly chatbot who always responds in the style of a pirate</s>\n' +
      "<|user|>\nHello, how are you?</s>\n<|assistant|>\nI'm doing great. How can I help you today?</s>\n" +
      "<|user|>\nI'd like to show off how chat templating works!</s>\n",
  );
  assert.deepEqual(t.stop, []);
});

test('ChatML (zephyr-7b-gemma) template: named templates, bos_token as an AddedToken object', () => {
  const t = ChatTemplate.fromTokenizerConfig(config('chatml-tokenizer_config.json'), 'chatml')!;
  const body =
    '<bos><|im_start|>user\nHello, how are you?<|im_end|>\n' +
    "<|im_start|>assistant\nI'm doing great. How can I help you today?<|im_end|>\n" +
    "<|im_start|>user\nI'd like to show off how chat templating works!<|im_end|>\n";
  assert.equal(t.render(CHAT, { addGenerationPrompt: false }), body);
  assert.equal(t.render(CHAT), `${body}<|im_start|>assistant\n`);
});

test('the plain default template for base models, and its stop string', () => {
  const t = ChatTemplate.plain();
  assert.equal(
    t.render([{ role: 'system', content: 'Be brief.' }, ...CHAT]),
    "Be brief.\n\nUser: Hello, how are you?\nAssistant: I'm doing great. How can I help you today?\n" +
      "User: I'd like to show off how chat templating works!\nAssistant:",
  );
  assert.deepEqual(t.stop, PLAIN_STOP);
});

test('a config without chat_template has none; --chat-template reads JSON or bare Jinja files', (t) => {
  assert.equal(ChatTemplate.fromTokenizerConfig({ eos_token: '</s>' }, 'x'), null);
  const dir = tempDir(t);
  const jinja = join(dir, 'template.jinja');
  writeFileSync(
    jinja,
    "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{{ eos_token }}{% endfor %}",
  );
  // A bare template takes the served model's special tokens.
  assert.equal(
    ChatTemplate.fromFile(jinja).render(CHAT.slice(0, 1), { modelSpecials: { eos_token: '<|end|>' } }),
    '[user] Hello, how are you?<|end|>',
  );
  const fromJson = ChatTemplate.fromFile(join(FIXTURES, 'zephyr-tokenizer_config.json'));
  assert.ok(fromJson.render(PIRATE).endsWith('</s>\n<|assistant|>\n'));

  const broken = join(dir, 'broken.jinja');
  writeFileSync(broken, '{% for m in messages %}');
  assert.throws(
    () => ChatTemplate.fromFile(broken),
    (e: unknown) => e instanceof TokenFormerError,
  );
  assert.throws(() => ChatTemplate.fromFile(join(dir, 'missing.jinja')), /missing\.jinja/);
  const noTemplate = join(dir, 'tokenizer_config.json');
  writeFileSync(noTemplate, '{"eos_token": "</s>"}');
  assert.throws(() => ChatTemplate.fromFile(noTemplate), /has no "chat_template"/);
});

test('a template that raises (roles out of order) is a 400 naming the reason', () => {
  const t = ChatTemplate.fromTokenizerConfig(
    {
      chat_template:
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('roles must start with user') }}{% endif %}",
    },
    'strict',
  )!;
  assert.throws(
    () => t.render([{ role: 'assistant', content: 'x' }]),
    (e: unknown) =>
      e instanceof ApiError && e.code === 'TF_ERR_BAD_ARGS' && /roles must start with user/.test(e.message),
  );
});

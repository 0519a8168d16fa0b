import assert from 'node:assert/strict';
import { join } from 'node:path';
import test from 'node:test';
import type { GeneratedToken } from '../../src/engine/protocol.ts';
import { validateSamplingParams } from '../../src/engine/sampling/params.ts';
import { type GenerationEvent, type TokenUpdate, textStream } from '../../src/engine/text-stream.ts';
import { Tokenizer } from '../../src/tokenizer/tokenizer.ts';

const tokenizer = Tokenizer.fromFile(join(import.meta.dirname, '../../models/default/tokenizer.json'));

async function run(updates: TokenUpdate[], stop: string[]) {
  async function* source() {
    yield* updates;
  }
  const events: GenerationEvent[] = [];
  for await (const e of textStream(source(), {
    tokenizer,
    eosTokenId: null,
    params: validateSamplingParams({ stop, max_tokens: 100 }),
    promptTokens: 3,
  })) {
    events.push(e);
  }
  const text = events.map((e) => (e.type === 'delta' ? e.text : '')).join('');
  const tokens = events.flatMap((e) => (e.type === 'delta' ? e.tokens.map((t) => t.token) : []));
  const done = events.at(-1);
  assert.equal(done?.type, 'done');
  return { text, tokens, done };
}

test('several tokens per update (speculative decoding) stop and count exactly as one per update', async () => {
  const ids = tokenizer.encode(' the sea was calm and the whale was near the ship');
  const toks: GeneratedToken[] = ids.map((token) => ({ token, logprob: -1 }));
  const one = toks.map((t, i) => ({
    tokens: [t],
    ...(i === toks.length - 1 ? { finish: 'length' as const } : {}),
  }));
  const chunked: TokenUpdate[] = [];
  for (let i = 0; i < toks.length; i += 4) {
    chunked.push({
      tokens: toks.slice(i, i + 4),
      ...(i + 4 >= toks.length ? { finish: 'length' as const } : {}),
    });
  }
  for (const stop of [['whale'], ['calm and'], ['not there'], []]) {
    const a = await run(one, stop);
    const b = await run(chunked, stop);
    assert.equal(b.text, a.text, `stop ${stop}`);
    assert.deepEqual(b.tokens, a.tokens, `stop ${stop}`);
    assert.deepEqual(b.done, a.done, `stop ${stop}`);
    if (stop[0] === 'whale') assert.ok(a.tokens.length < toks.length && !a.text.includes('whale'));
  }
});

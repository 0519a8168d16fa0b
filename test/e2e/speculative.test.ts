import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { ServerProcess } from '../../scripts/harness/server.ts';
import { readSse } from '../../scripts/harness/sse.ts';
import { swapModelsRoot } from '../engine/served-model.ts';
import { tempDir } from '../helpers.ts';

/**
 * `--draft-model`, served: "b" was grown from "a" under the same models root, so the default
 * (`auto`) drafts with "a"; `none` serves alone. Both answer the same greedy stream, and only the
 * first counts speculative tokens in /metrics.
 */

const servers: ServerProcess[] = [];
const cleanups: (() => void)[] = [];
let auto: ServerProcess;
let none: ServerProcess;
let root: string;

before(async () => {
  const dir = tempDir({ after: (fn) => cleanups.push(fn) });
  root = await swapModelsRoot(dir);
  const start = (extra: string[]) =>
    ServerProcess.start(
      ['--models-dir', root, '--model', 'b', '--device', 'cpu', '--threads', '1', ...extra],
      {
        cwd: dir,
      },
    );
  auto = await start([]);
  servers.push(auto);
  none = await start(['--draft-model', 'none']);
  servers.push(none);
});
after(async () => {
  await Promise.all(servers.map((s) => s.stop()));
  for (const c of cleanups) c();
});

async function stream(server: ServerProcess): Promise<{ text: string; completion: number }> {
  const res = await fetch(`${server.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      prompt: 'Call me Ishmael.',
      max_tokens: 48,
      temperature: 0,
      ignore_eos: true,
      stream: true,
      stream_options: { include_usage: true },
    }),
  });
  assert.equal(res.status, 200);
  const raw = await readSse(res);
  let text = '';
  let completion = -1;
  for (const line of raw.split('\n')) {
    if (!line.startsWith('data: {')) continue;
    const c = JSON.parse(line.slice(6)) as {
      choices: { text?: string }[];
      usage?: { completion_tokens: number } | null;
    };
    text += c.choices[0]?.text ?? '';
    if (c.usage) completion = c.usage.completion_tokens;
  }
  return { text, completion };
}

test('--draft-model auto drafts with the parent: the same greedy stream, speculative tokens counted', async () => {
  assert.match(auto.output, /speculative decoding with draft model a/);
  assert.match(none.output, /no draft model \(--draft-model none\)/);
  const [x, y] = [await stream(auto), await stream(none)];
  assert.deepEqual(x, y);
  assert.equal(x.completion, 48);
  const drafted = await auto.metric('tokenformer_spec_draft_tokens_total');
  const accepted = await auto.metric('tokenformer_spec_accepted_tokens_total');
  assert.ok(drafted > 0 && accepted > 0 && accepted <= drafted, `${accepted}/${drafted}`);
  assert.equal(await none.metric('tokenformer_spec_draft_tokens_total'), 0);
  assert.match(await none.metricsText(), /^tokenformer_spec_draft_tokens_total 0$/m);
});

test('a named draft that does not exist stops the server with a one-line reason', async () => {
  await assert.rejects(
    ServerProcess.start(['--models-dir', root, '--model', 'b', '--device', 'cpu', '--draft-model', 'nope']),
    /nope.{0,4} does not exist under the models root/,
  );
});

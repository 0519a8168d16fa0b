import { Rng } from '../../src/util/rng.ts';
import { ServerProcess } from '../harness/server.ts';
import { readSse, sseJson } from '../harness/sse.ts';

/**
 * The served figure: the real server (`scripts/serve.ts`, its own process) on a loopback port,
 * `streams` concurrent SSE completions of `prompt` token ids and `newTokens` tokens each, greedy;
 * tokens/s = completion tokens over the wall time from the first request to the last [DONE].
 */

async function stream(
  url: string,
  prompt: number[],
  maxTokens: number,
  signal: AbortSignal,
): Promise<number> {
  const r = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      prompt,
      max_tokens: maxTokens,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    }),
    signal,
  });
  if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${(await r.text()).slice(0, 200)}`);
  const chunks = sseJson<{ usage?: { completion_tokens: number } | null }>(await readSse(r));
  return chunks.findLast((c) => c.usage)?.usage?.completion_tokens ?? 0;
}

export async function served(
  exportDir: string,
  device: 'cpu' | 'cuda',
  o: { streams: number; prompt: number; newTokens: number; vocab: number; deadline: number },
) {
  const server = await ServerProcess.start(
    [
      ...['--model', exportDir, '--device', device],
      ...['--max-sequences', String(o.streams), '--max-queue', String(o.streams)],
      ...['--prefill-chunk', String(o.prompt)],
    ],
    { readyMs: Math.max(1000, o.deadline - Date.now()) },
  );
  const url = server.url;
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), Math.max(1000, o.deadline - Date.now()));
  try {
    // Warm-up: one short request compiles the shapes before the clock starts.
    await stream(url, [1, 2, 3], 2, abort.signal);
    const rng = new Rng(9);
    const prompts = Array.from({ length: o.streams }, () =>
      Array.from({ length: o.prompt }, () => Math.floor(rng.nextFloat() * (o.vocab - 1))),
    );
    const t0 = performance.now();
    const counts = await Promise.all(prompts.map((p) => stream(url, p, o.newTokens, abort.signal)));
    const s = (performance.now() - t0) / 1000;
    const total = counts.reduce((a, b) => a + b, 0);
    return {
      streams: o.streams,
      prompt: o.prompt,
      new_tokens: o.newTokens,
      completion_tokens: total,
      wall_s: s,
      tok_s: total / s,
    };
  } finally {
    clearTimeout(timer);
    await server.stop(10_000);
  }
}

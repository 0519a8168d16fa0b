import { dirname } from 'node:path';
import { SseParser } from '../harness/sse.ts';
import { startSoakServer } from '../soak/server.ts';

/**
 * Served decode speed: `scripts/serve.ts` on a loopback port, streamed completions over HTTP/SSE
 * (`ignore_eos`, usage in the last chunk). Generated tokens are counted from `usage`, not from
 * chunks, so a server that puts several tokens in one chunk is counted right.
 */

export interface ServedOptions {
  exportDir: string;
  streams: number[];
  maxTokens: number;
  threads?: number;
}

interface StreamTiming {
  tokens: number;
  startMs: number;
  firstMs: number;
  endMs: number;
}

async function streamOnce(url: string, prompt: string, maxTokens: number): Promise<StreamTiming> {
  const startMs = performance.now();
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      prompt,
      max_tokens: maxTokens,
      temperature: 0,
      ignore_eos: true,
      stream: true,
      stream_options: { include_usage: true },
    }),
  });
  if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${(await res.text()).slice(0, 300)}`);
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  const parser = new SseParser();
  let firstMs = 0;
  let tokens = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    if (firstMs === 0) firstMs = performance.now();
    for (const data of parser.push(decoder.decode(value, { stream: true }))) {
      if (data === '[DONE]' || !data.includes('"usage"')) continue;
      const usage = (JSON.parse(data) as { usage?: { completion_tokens?: number } | null }).usage;
      if (usage?.completion_tokens) tokens = usage.completion_tokens;
    }
  }
  return { tokens, startMs, firstMs, endMs: performance.now() };
}

/** Aggregate generated tokens per second with `n` concurrent streams, from the first request to the last end. */
async function concurrent(url: string, n: number, maxTokens: number) {
  const runs = await Promise.all(
    Array.from({ length: n }, (_, i) => streamOnce(url, `Call me Ishmael, ${i}. Some years ago`, maxTokens)),
  );
  const start = Math.min(...runs.map((r) => r.startMs));
  const end = Math.max(...runs.map((r) => r.endMs));
  const tokens = runs.reduce((a, r) => a + r.tokens, 0);
  const one = runs[0]!;
  return {
    streams: n,
    generated_tokens: tokens,
    tokens_per_s: tokens / ((end - start) / 1000),
    // One stream: the decode rate after the first token (what llama-server reports as predicted/s).
    ...(n === 1 ? { decode_tokens_per_s: (one.tokens - 1) / ((one.endMs - one.firstMs) / 1000) } : {}),
  };
}

export async function benchServed(o: ServedOptions) {
  const server = await startSoakServer({
    modelsRoot: dirname(o.exportDir),
    model: o.exportDir,
    cwd: process.cwd(),
    adminToken: 'bench',
    maxSequences: Math.max(16, ...o.streams),
    maxQueue: 64,
    device: 'cpu',
    ...(o.threads ? { threads: o.threads } : {}),
  });
  try {
    await concurrent(server.url, 1, 8); // warm-up
    const out = [];
    for (const n of o.streams) out.push(await concurrent(server.url, n, o.maxTokens));
    return out;
  } finally {
    await server.stop(60_000);
  }
}

import { spawn } from 'node:child_process';
import { resolve } from 'node:path';
import { Rng } from '../../src/util/rng.ts';

/**
 * The served figure: the real server (`scripts/serve.ts`, its own process) on a loopback port,
 * `streams` concurrent SSE completions of `prompt` token ids and `newTokens` tokens each, greedy;
 * tokens/s = completion tokens over the wall time from the first request to the last [DONE].
 */

const ROOT = resolve(import.meta.dirname, '../..');

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
  const reader = r.body!.pipeThrough(new TextDecoderStream()).getReader();
  let text = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
  }
  const usage = [...text.matchAll(/"completion_tokens":(\d+)/g)].pop();
  return usage ? Number(usage[1]) : 0;
}

export async function served(
  exportDir: string,
  device: 'cpu' | 'cuda',
  o: { streams: number; prompt: number; newTokens: number; vocab: number; deadline: number },
) {
  const proc = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      'scripts/serve.ts',
      '--model',
      exportDir,
      '--device',
      device,
      '--host',
      '127.0.0.1',
      '--port',
      '0',
      '--max-sequences',
      String(o.streams),
      '--max-queue',
      String(o.streams),
      '--prefill-chunk',
      String(o.prompt),
    ],
    {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, MODEL: '', PORT: '', HOST: '', DEVICE: '' },
    },
  );
  let out = '';
  proc.stdout.setEncoding('utf8').on('data', (s: string) => {
    out = (out + s).slice(-100_000);
  });
  proc.stderr.setEncoding('utf8').on('data', (s: string) => {
    out = (out + s).slice(-100_000);
  });
  const exited = new Promise<number | null>((r) => proc.once('exit', r));
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), Math.max(1000, o.deadline - Date.now()));
  try {
    let url: string | undefined;
    while (!url) {
      if (proc.exitCode !== null) throw new Error(`the server exited (${proc.exitCode}): ${out.slice(-500)}`);
      if (Date.now() > o.deadline) throw new Error('the server did not start within the time budget');
      url = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(out)?.[1];
      await new Promise((r) => setTimeout(r, 50));
    }
    for (;;) {
      if (Date.now() > o.deadline) throw new Error('the model did not load within the time budget');
      const ready = await fetch(`${url}/ready`).then(
        (r) => r.status,
        () => 0,
      );
      if (ready === 200) break;
      if (proc.exitCode !== null) throw new Error(`the server exited (${proc.exitCode}): ${out.slice(-500)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    // Warm-up: one short request compiles the shapes before the clock starts.
    await stream(url, [1, 2, 3], 2, abort.signal);
    const rng = new Rng(9);
    const prompts = Array.from({ length: o.streams }, () =>
      Array.from({ length: o.prompt }, () => Math.floor(rng.nextFloat() * (o.vocab - 1))),
    );
    const t0 = performance.now();
    const counts = await Promise.all(prompts.map((p) => stream(url!, p, o.newTokens, abort.signal)));
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
    proc.kill('SIGTERM');
    const killer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(killer);
  }
}

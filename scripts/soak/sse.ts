import { SseParser } from '../harness/sse.ts';
import { Stream, type Tally } from './streams.ts';

const message = (err: unknown) => (err instanceof Error ? err.message : String(err));

/** What a client sends, and after how many deltas it cancels (undefined: let it finish). */
export interface Plan {
  body: Record<string, unknown>;
  cancelAfter: number | undefined;
}

/** One SSE stream of the soak (POST /v1/completions, stream: true), from the POST to the end of the body. */
export async function sseOnce(url: string, tally: Tally, p: Plan, usage: boolean): Promise<Stream> {
  const s = new Stream(tally, 'sse');
  const ac = new AbortController();
  s.abort = () => ac.abort();
  let res: Response;
  try {
    res = await fetch(`${url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        ...p.body,
        stream: true,
        ...(usage ? { stream_options: { include_usage: true } } : {}),
      }),
      signal: ac.signal,
    });
  } catch (err) {
    s.end('dropped', undefined, `no response: ${message(err)}`);
    return s;
  }
  s.lastActivity = performance.now();
  if (res.status !== 200) {
    const text = await res.text().catch(() => '');
    const code = /"code":"([A-Z_]+)"/.exec(text)?.[1];
    const refused = res.status === 429 && code === 'TF_ERR_QUEUE_FULL';
    s.end(refused ? 'refused' : 'error', undefined, `HTTP ${res.status}: ${text.slice(0, 300)}`);
    return s;
  }
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  const parser = new SseParser();
  let finish: string | undefined;
  let done = false;
  let failure: string | undefined;
  try {
    for (;;) {
      const { value, done: eof } = await reader.read();
      if (eof) break;
      const at = performance.now();
      s.lastActivity = at;
      for (const data of parser.push(decoder.decode(value, { stream: true }))) {
        if (data === '') continue;
        if (data === '[DONE]') {
          done = true;
          continue;
        }
        let chunk: {
          error?: unknown;
          model?: unknown;
          system_fingerprint?: unknown;
          choices?: { text?: string; finish_reason?: string | null }[];
        };
        try {
          chunk = JSON.parse(data) as typeof chunk;
        } catch {
          failure ??= `an event that is not JSON: ${data.slice(0, 200)}`;
          continue;
        }
        if (chunk.error !== undefined) {
          failure ??= `error event after ${s.count} deltas: ${JSON.stringify(chunk.error).slice(0, 300)}`;
          continue;
        }
        // The served name, whichever version produced the chunk (it outlives swaps).
        if (chunk.model !== p.body.model)
          failure ??= `a chunk names model ${JSON.stringify(chunk.model)}, not ${JSON.stringify(p.body.model)}`;
        s.version(chunk.model, chunk.system_fingerprint);
        for (const c of chunk.choices ?? []) {
          if (c.text) s.delta(at);
          if (c.finish_reason) finish = c.finish_reason;
        }
      }
      if (p.cancelAfter !== undefined && !done && finish === undefined && s.count >= p.cancelAfter) {
        s.cancelRequested = true;
        tally.cancelsSent++;
        s.end('completed', 'cancelled');
        ac.abort();
        return s;
      }
    }
  } catch (err) {
    // Our own cancel or the watchdog ended it already; anything else broke the connection.
    s.end('dropped', undefined, `the stream broke after ${s.count} deltas: ${message(err)}`);
    return s;
  }
  if (failure) s.end('error', undefined, failure);
  else if (done && (finish === 'stop' || finish === 'length')) s.end('completed', finish);
  else if (done) s.end('error', undefined, `[DONE] with finish_reason ${String(finish)}`);
  else s.end('dropped', undefined, `the body ended without [DONE] after ${s.count} deltas`);
  return s;
}

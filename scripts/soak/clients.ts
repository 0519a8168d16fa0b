import { Rng } from '../../src/util/rng.ts';
import { type Plan, sseOnce } from './sse.ts';
import type { Stream, Tally } from './streams.ts';
import { WsSession } from './ws-session.ts';

/**
 * The soak's client loops. Half stream over SSE (POST /v1/completions, stream: true), half over
 * the WebSocket (/v1/stream): half of those keep one socket for several requests, the other half
 * open and close a socket per request (connection churn). A fraction of streams is cancelled
 * mid-stream: SSE by aborting the fetch, WebSocket by `completion.cancel` or by closing the socket.
 */

export interface LoadOptions {
  url: string;
  /** The served model name every request sends (it must outlive the swaps). */
  model: string;
  clients: number;
  /** New streams start while this holds. */
  live: () => boolean;
  /** Streams still open this long after the load stopped are counted as hung and ended. */
  settleMs: number;
  maxTokens: readonly [number, number];
  cancelFraction: number;
  seed: number;
  /** A stream with no event for this long is hung. */
  stallMs: number;
}

const PROMPTS = [
  'The President',
  'Call me Ishmael.',
  'We the people of the United States',
  'Fellow citizens of the Senate and House of Representatives',
  'The whale',
  'It is a truth universally acknowledged',
  'In the year of our Lord',
  'The Congress shall',
  'The sea was calm, and',
  'Our nation',
];

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function plan(rng: () => number, o: LoadOptions, tally: Tally): Plan {
  const [lo, hi] = o.maxTokens;
  const maxTokens = lo + Math.floor(rng() * (hi - lo + 1));
  const greedy = rng() < 0.4;
  const body = {
    model: o.model,
    prompt: PROMPTS[Math.floor(rng() * PROMPTS.length)]!,
    max_tokens: maxTokens,
    temperature: greedy ? 0 : 0.7 + 0.3 * rng(),
    ...(greedy ? {} : { top_p: 0.95 }),
  };
  const cancel = rng() < o.cancelFraction;
  if (cancel) tally.cancelsPlanned++;
  // Before the last token, so the cancel meets a live stream (an early end-of-text may still win).
  return {
    body,
    cancelAfter: cancel ? 1 + Math.floor(rng() * Math.max(1, Math.floor(maxTokens / 2))) : undefined,
  };
}

type Kind = 'sse' | 'ws-long' | 'ws-short';

async function loop(kind: Kind, index: number, o: LoadOptions, tally: Tally): Promise<void> {
  // The project's seeded generator: the same seed gives the same prompts, lengths and cancels.
  const seeded = new Rng(o.seed * 7919 + index);
  const rng = () => seeded.nextFloat();
  const live = o.live;
  const pause = async (s: Stream) => {
    // A refused request backs off as Retry-After says; otherwise a short think time.
    await sleep(s.outcome === 'refused' ? 1_000 : rng() * 50);
  };
  await sleep(rng() * 1_000); // spread the first requests
  while (live()) {
    if (kind === 'sse') {
      const s = await sseOnce(o.url, tally, plan(rng, o, tally), rng() < 0.3);
      await pause(s);
      continue;
    }
    const session = await WsSession.open(o.url, tally, index * 1_000_000 + tally.ws.opened);
    if (!session) {
      await sleep(500);
      continue;
    }
    // Long-lived sockets carry 3–12 requests; the others one each.
    const requests = kind === 'ws-long' ? 3 + Math.floor(rng() * 10) : 1;
    for (let i = 0; i < requests && live() && session.usable; i++) {
      const s = await session.run(
        plan(rng, o, tally),
        kind === 'ws-short' && rng() < 0.5 ? 'close' : 'message',
      );
      await pause(s);
    }
    await session.close();
  }
}

/** Runs the client loops while `live()`, then lets open streams finish for up to `settleMs`. */
export async function runClients(o: LoadOptions, tally: Tally): Promise<void> {
  let stoppedAt: number | undefined;
  const endAll = (why: string) => {
    for (const s of [...tally.active]) {
      s.end('hung', undefined, why);
      s.abort();
    }
  };
  const watchdog = setInterval(() => {
    const now = performance.now();
    for (const s of [...tally.active]) {
      if (now - s.lastActivity <= o.stallMs) continue;
      s.end('hung', undefined, `no event for ${o.stallMs} ms after ${s.count} deltas`);
      s.abort();
    }
    if (stoppedAt === undefined && !o.live()) stoppedAt = now;
    if (stoppedAt !== undefined && now - stoppedAt > o.settleMs)
      endAll(`still open ${(o.settleMs / 1000).toFixed(0)} s after the load stopped`);
  }, 1_000);
  const kinds: Kind[] = ['sse', 'ws-long', 'sse', 'ws-short'];
  await Promise.all(
    Array.from({ length: o.clients }, (_, i) =>
      loop(kinds[i % kinds.length]!, i, o, tally).catch((err: unknown) => {
        tally.clientExceptions++;
        tally.note(
          `client loop ${i} threw: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`,
        );
      }),
    ),
  );
  clearInterval(watchdog);
}

import type { GenerationEvent } from '../engine/engine.ts';
import type { FinishReason } from '../engine/protocol.ts';
import type { ModelRef } from '../engine/text-stream.ts';
import type { CompletionRequest } from './completion.ts';
import type { Job, ServingEngine } from './context.ts';
import { ApiError } from './errors.ts';
import { LogprobsBuilder, type ReportedToken, promptTokens as reportPrompt } from './logprobs.ts';
import type { ServerMetrics } from './metrics.ts';
import { type CompletionLogprobs, type Usage, usage } from './openai.ts';

/**
 * The one completion stream that the JSON response, SSE and WebSocket adapt (web-llm style):
 * every choice of a request is an engine generation; their deltas are merged into one
 * AsyncIterable of per-choice events, ending with the usage. Requests are admitted all or
 * nothing: the first event, `accepted`, comes once the engine has queued every choice (before
 * any token), so a full queue or an over-long prompt fails the request before an adapter commits
 * to a status code, and a streaming adapter can send its headers at once.
 */

export type CompletionEvent =
  /** Always the first event: every choice is queued. */
  | { type: 'accepted' }
  /**
   * Text for choice `index`; `tokens` is how many generated tokens it covers (0 for echo);
   * `model` is the model that produced them (absent for echo or a single-engine server).
   */
  | {
      type: 'text';
      index: number;
      text: string;
      tokens: number;
      logprobs: CompletionLogprobs | null;
      /** The tokens behind `logprobs` (when logprobs were asked for), for other wire shapes. */
      reported?: readonly ReportedToken[];
      model?: ModelRef;
    }
  | { type: 'finish'; index: number; finishReason: FinishReason; model?: ModelRef }
  /** Always the last event. */
  | { type: 'usage'; usage: Usage };

type Step = { k: number; r: IteratorResult<GenerationEvent> } | { k: number; err: unknown };

export async function* runCompletion(
  engine: ServingEngine,
  req: CompletionRequest,
  job: Job,
  metrics: ServerMetrics,
): AsyncGenerator<CompletionEvent, void, undefined> {
  const choices = req.prompts.flatMap((prompt, p) =>
    Array.from({ length: req.n }, (_, i) => ({
      index: p * req.n + i,
      prompt,
      // A seeded request with n > 1 must not give n identical samples.
      params:
        req.params.seed === undefined || i === 0 ? req.params : { ...req.params, seed: req.params.seed + i },
    })),
  );
  const iters: AsyncIterator<GenerationEvent>[] = [];
  const finished = new Set<number>();
  // Ends the choices still running when this stream stops early. (The engine's iterators may be
  // async generators, whose return() waits for their next event; an abort does not wait.) Each
  // choice listens on its own signal and the job's signal has one listener for the request, so
  // a large `n` does not pile listeners on one signal (MaxListenersExceededWarning).
  const perChoice = choices.map(() => new AbortController());
  const abortAll = () => {
    for (const ac of perChoice) if (!ac.signal.aborted) ac.abort(job.signal.reason);
  };
  if (job.signal.aborted) abortAll();
  else job.signal.addEventListener('abort', abortAll, { once: true });
  let accepted = false;
  try {
    if (req.generate)
      for (const [k, c] of choices.entries())
        iters.push(engine.generate(c.prompt.ids, c.params, perChoice[k]!.signal)[Symbol.asyncIterator]());
    const next = (k: number): Promise<Step> =>
      iters[k]!.next().then(
        (r) => ({ k, r }),
        (err: unknown) => ({ k, err }),
      );

    // Prompt scoring runs beside the generations' admission; either failing fails the request.
    const top = req.params.logprobs ?? 0;
    const scoring = Promise.all(req.scorePrompt ? req.prompts.map((p) => engine.score(p.ids, top)) : []).then(
      (scored) => ({ scored }),
      (err: unknown) => ({ err }),
    );
    const firsts = await Promise.all(iters.map((_, k) => next(k)));
    const scores = await scoring;
    for (const s of firsts) if ('err' in s) throw s.err;
    if ('err' in scores) throw scores.err;
    if (job.signal.aborted) throw job.signal.reason;
    accepted = true;
    const labels = metrics.labels;
    for (const c of choices) metrics.promptTokens.inc(labels, c.prompt.ids.length);
    yield { type: 'accepted' };

    if (req.echo) {
      for (const c of choices) {
        const scored = scores.scored[Math.floor(c.index / req.n)];
        const reported = scored ? reportPrompt(c.prompt.ids, scored) : undefined;
        const logprobs = reported ? new LogprobsBuilder(engine.tokenizer, 0).add(reported) : null;
        yield {
          type: 'text',
          index: c.index,
          text: c.prompt.text,
          tokens: 0,
          logprobs,
          ...(reported ? { reported } : {}),
        };
      }
    }
    if (!req.generate)
      for (const [k, c] of choices.entries()) {
        finished.add(k);
        yield { type: 'finish', index: c.index, finishReason: 'length' };
      }
    const logprobs = choices.map((c) =>
      req.params.logprobs === undefined
        ? null
        : new LogprobsBuilder(engine.tokenizer, req.echo ? c.prompt.text.length : 0),
    );
    const lastToken: (number | undefined)[] = choices.map(() => undefined);
    let completionTokens = 0;
    const pending = new Map<number, Promise<Step>>(firsts.map((s) => [s.k, Promise.resolve(s)]));
    while (pending.size > 0) {
      const s = await Promise.race(pending.values());
      pending.delete(s.k);
      if ('err' in s) throw s.err;
      if (s.r.done) continue; // aborted: the signal's reason is thrown below
      const e = s.r.value;
      const index = choices[s.k]!.index;
      if (e.type === 'done') {
        finished.add(s.k);
        completionTokens += e.completionTokens;
        metrics.requestSuccess.inc({ ...labels, finished_reason: e.finishReason });
        metrics.requestPromptTokens.observe(labels, e.promptTokens);
        metrics.requestGenerationTokens.observe(labels, e.completionTokens);
        yield { type: 'finish', index, finishReason: e.finishReason, ...(e.model ? { model: e.model } : {}) };
        continue;
      }
      pending.set(s.k, next(s.k));
      const k = e.tokens.length;
      if (k > 0) {
        const now = performance.now();
        const last = lastToken[s.k];
        const by = { ...labels, version: e.model?.version ?? engine.version };
        if (last === undefined) metrics.timeToFirstToken.observe(by, (now - job.started) / 1000);
        else for (let i = 0; i < k; i++) metrics.interTokenLatency.observe(by, (now - last) / 1000 / k);
        lastToken[s.k] = now;
        metrics.generationTokens.inc(by, k);
      }
      const builder = logprobs[s.k];
      const lp = builder?.add(e.tokens) ?? null;
      // Text held back (a partial character, a possible stop string) gives empty deltas; they
      // still carry token counts, which adapters skip sending when there is nothing to show.
      if (e.text || lp || k > 0)
        yield {
          type: 'text',
          index,
          text: e.text,
          tokens: k,
          logprobs: lp,
          ...(builder ? { reported: e.tokens } : {}),
          ...(e.model ? { model: e.model } : {}),
        };
    }
    if (finished.size < choices.length) {
      throw job.signal.reason ?? new ApiError('TF_ERR_INTERNAL', 'a generation ended without finishing');
    }
    const promptTokens = req.prompts.reduce((sum, p) => sum + p.ids.length, 0);
    yield { type: 'usage', usage: usage(promptTokens, completionTokens) };
  } finally {
    // Stopped early (error, client gone, consumer broke off): free every sequence still running.
    if (finished.size < choices.length) abortAll();
    job.signal.removeEventListener('abort', abortAll);
    // Every iterator, finished ones too: a generation that yielded its last event is suspended
    // there until returned, and its cleanup runs then.
    for (const it of iters) it.return?.().catch(() => {});
    if (accepted) metrics.requestDuration.observe(metrics.labels, (performance.now() - job.started) / 1000);
  }
}

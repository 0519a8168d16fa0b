import { EventEmitter } from 'node:events';
import { existsSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { fail, TokenFormerError } from '../util/errors.ts';
import type { RngState } from '../util/rng.ts';
import type { KvSnapshot } from './kv-cache.ts';
import { checkMigratable, kvTransferable, migratable, sameTokenizer } from './migration.ts';
import {
  confineModelPath,
  fingerprintOf,
  type LoadedModel,
  listModels,
  loadModel,
  memoryOf,
  type StoreOptions,
} from './model-store.ts';
import type { Detached } from './protocol.ts';
import type { SamplingParams } from './sampling/params.ts';
import { remainingParams, validateSamplingParams } from './sampling/params.ts';
import { WorkerSupervisor } from './supervisor.ts';
import { type GenerationEvent, type ModelRef, type TokenUpdate, textStream } from './text-stream.ts';

/**
 * The one way the server reaches a model: the serving model, the versions still loaded, and
 * zero-downtime swaps to another (typically a grown successor). The new model loads and warms up
 * in its own worker while the old one keeps serving; only then does traffic move. `drain`: open
 * streams finish on the old model, new requests go to the new one. `migrate`: open streams
 * continue on the new model — from the moved KV cache when the models allow it, else the prompt
 * plus the tokens generated so far are prefilled there; the client sees one uninterrupted
 * stream. A failed load or warm-up leaves the old model serving and reports why.
 */

export type SwapPolicy = 'drain' | 'migrate';
export type { LoadedModel } from './model-store.ts';

export interface SwapResult {
  from: ModelRef;
  to: ModelRef;
  policy: SwapPolicy;
  durationMs: number;
  migrated: number;
  draining: number;
  /** Migrated streams moved their KV cache as is (a zero/keep growth of the old weights). */
  kvMoved: boolean;
}

/** What `swap` events carry (metrics, logs, WebSocket notices). */
export type SwapEvent =
  | ({ result: 'success' } & SwapResult)
  | { result: 'failure'; model: string; reason: string; durationMs: number };

export interface RegistryOptions extends StoreOptions {
  /** How long a drained model waits for its streams before they move on (or end); default 30 s. */
  drainTimeoutMs?: number;
  /** Worker crashes within a minute after which the supervisor gives up; default 3. */
  maxRestarts?: number;
}

interface Handoff {
  model: LoadedModel;
  /** Ends the stream on its model at the next token boundary; it continues on the serving one. */
  move(withKv: boolean): void;
}

/**
 * Emits `swap` (SwapEvent), `migrated` {kvMoved, reason}, `admitted` {model, queueMs} for every
 * loaded model, `adopted` (LoadedModel) for each model that gets a live worker (load, swap,
 * restart), and the supervisor's `crash`, `restarted` and `failed`.
 */
export class ModelRegistry extends EventEmitter {
  private current: LoadedModel;
  private swapping = false;
  private failedFingerprint: string | undefined;
  private readonly handoffs = new Set<Handoff>();
  private readonly retiring = new Set<LoadedModel>();
  private readonly supervisor: WorkerSupervisor;

  private constructor(
    private readonly opts: RegistryOptions,
    first: LoadedModel,
  ) {
    super();
    this.current = first;
    this.supervisor = new WorkerSupervisor({
      ...(opts.maxRestarts === undefined ? {} : { maxRestarts: opts.maxRestarts }),
      serving: () => this.current,
      reload: async (crashed) => {
        const next = await loadModel(
          crashed.name,
          crashed.dir,
          this.opts,
          this.memoryInUse([...this.retiring]),
        );
        this.current = next;
        this.adopt(next);
        return next;
      },
      emit: (event, payload) => this.emit(event, payload),
      onDrainingCrash: (model) => this.retiring.delete(model),
      ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
    });
    this.adopt(first);
  }

  /** Loads `model` (a name under the models root, or a path) as the serving model. */
  static async open(model: string, opts: RegistryOptions): Promise<ModelRegistry> {
    const dir = existsSync(model) ? resolve(model) : confineModelPath(opts.modelsRoot, model);
    const loaded = await loadModel(basename(dir), dir, opts, [], true);
    return new ModelRegistry(opts, loaded);
  }

  /** A model that now has a live worker: supervised, and its queue times reported. */
  private adopt(model: LoadedModel): void {
    this.supervisor.watch(model);
    this.emit('adopted', model);
    model.engine.on('admitted', (_id: number, queueMs: number) =>
      this.emit('admitted', { model: model.ref, queueMs }),
    );
  }

  private memoryInUse(models: readonly LoadedModel[]) {
    return models.map(memoryOf);
  }

  get model(): LoadedModel {
    return this.current;
  }

  /** Every model with a live worker: the serving one and those still draining. */
  get loaded(): LoadedModel[] {
    return [this.current, ...this.retiring];
  }

  /** The loaded model (serving or draining) with this version id, if any. */
  byVersion(version: string): LoadedModel | undefined {
    return this.loaded.find((m) => m.version === version);
  }

  /** Models under the root (checkpoint or export directories) and which one serves. */
  list(): { name: string; kind: 'checkpoint' | 'export'; active: boolean }[] {
    return listModels(this.opts.modelsRoot).map((m) => ({ ...m, active: m.name === this.current.name }));
  }

  /**
   * Streams from whichever model serves; under `migrate` a stream moves with the swap. A
   * `pinned` model (a version the request named) keeps the stream: it never migrates.
   */
  generate(
    prompt: readonly number[],
    params: SamplingParams,
    signal?: AbortSignal,
    pinned?: LoadedModel | null,
  ): AsyncIterable<GenerationEvent> {
    const engine = (pinned ?? this.current).engine;
    const tokens = pinned
      ? tagged(pinned, prompt, params, signal)
      : this.migratingTokens(prompt, params, signal);
    return textStream(tokens, {
      tokenizer: engine.tokenizer,
      eosTokenId: engine.eosTokenId,
      params,
      promptTokens: prompt.length,
    });
  }

  /**
   * One stream's tokens, across models: a swap (migrate), a drain timeout or a worker crash ends
   * it on one model and it goes on on the next with the prompt plus the tokens generated so far —
   * from the moved KV cache when the models allow it, else re-prefilled. Each update names the
   * model that produced it; only the first model's `queued` marker is passed on.
   */
  private async *migratingTokens(
    prompt: readonly number[],
    params: SamplingParams,
    signal?: AbortSignal,
  ): AsyncGenerator<TokenUpdate> {
    const generated: number[] = [];
    let model = this.current;
    const first = model;
    let resume: KvSnapshot | undefined;
    // Where the sequence's random stream stopped on the model it left (a crash loses it).
    let rng: RngState | undefined;
    let survivedCrash = false;
    for (;;) {
      if (signal?.aborted) return;
      const p = remainingParams(params, generated.length);
      let moving: Promise<Detached> | undefined;
      let crashed = false;
      let handoff: Handoff | undefined;
      // A consumer may stop pulling after the last event: the handoff ends with the stream, not
      // with this generator.
      const onAbort = () => handoff && this.handoffs.delete(handoff);
      signal?.addEventListener('abort', onAbort, { once: true });
      try {
        // After the first model, the stream was moved here: already admitted work.
        const moved =
          model === first
            ? undefined
            : { generated: generated.length, ...(resume ? { kv: resume } : {}), ...(rng ? { rng } : {}) };
        const stream = model.engine.tokens([...prompt, ...generated], p, signal, moved);
        resume = undefined;
        rng = undefined;
        handoff = {
          model,
          move: (withKv) => {
            moving ??= stream.detach(withKv);
          },
        };
        this.handoffs.add(handoff);
        for await (const u of stream) {
          if (u.queued && model !== first) continue;
          for (const t of u.tokens) generated.push(t.token);
          if (u.finish) this.handoffs.delete(handoff);
          yield { ...u, model: model.ref };
          if (u.finish) return;
        }
      } catch (err) {
        // A crashed worker's streams continue on its replacement (see WorkerSupervisor) — once: a
        // stream that was running at two crashes may be what crashes it, and must not take every
        // restart down.
        if (!model.engine.crashed || signal?.aborted || survivedCrash) throw err;
        crashed = true;
        survivedCrash = true;
      } finally {
        if (handoff) this.handoffs.delete(handoff);
        signal?.removeEventListener('abort', onAbort);
      }
      if (crashed) {
        model = await this.supervisor.replacementFor(model);
        this.emit('migrated', { kvMoved: false, reason: 'crash' });
        continue;
      }
      if (!moving) return; // cancelled by the client
      const { kv: snap, rng: state } = await moving;
      if (signal?.aborted) return; // cancelled while it was being moved
      // The cache covers every token but the last generated one, which is fed next.
      if (snap && snap.length === prompt.length + generated.length - 1) resume = snap;
      rng = state;
      model = this.current;
      this.emit('migrated', { kvMoved: resume !== undefined, reason: 'swap' });
    }
  }

  /**
   * Swaps the serving model. Throws (old model still serving) when the name is invalid, a swap
   * is in progress, the new model would exceed the memory budget, fails to load or warm up, or
   * `migrate` is asked between models whose tokenizers or context differ.
   */
  async swap(
    name: string,
    requested?: SwapPolicy,
    hooks: { beforeSwitch?: () => Promise<void> } = {},
  ): Promise<SwapResult> {
    const policy: SwapPolicy = requested ?? 'migrate';
    if (policy !== 'drain' && policy !== 'migrate')
      fail('TF_ERR_BAD_ARGS', `policy must be "drain" or "migrate", got ${JSON.stringify(policy)}`);
    if (this.swapping) fail('TF_ERR_SWAP_IN_PROGRESS', 'a swap is already in progress');
    if (this.supervisor.state !== 'ready')
      fail('TF_ERR_NOT_READY', 'the serving model is being restarted after a crash; retry shortly');
    this.swapping = true;
    const started = performance.now();
    const old = this.current;
    let next: LoadedModel | undefined;
    try {
      const dir = confineModelPath(this.opts.modelsRoot, name);
      this.opts.onProgress?.(`swap: loading ${name}`);
      next = await loadModel(name, dir, this.opts, this.memoryInUse(this.loaded));
      // Without an explicit policy: migrate when the tokenizers match, else drain.
      const effective: SwapPolicy =
        requested === undefined && !sameTokenizer(old.engine, next.engine) ? 'drain' : policy;
      if (effective === 'migrate') checkMigratable(old.engine, next.engine);
      // Warm-up: one real generation, so the first user request does not pay for it.
      for await (const _ of next.engine.generate(
        next.engine.tokenizer.encode('Hello'),
        validateSamplingParams({ temperature: 0, max_tokens: 2, ignore_eos: true }),
      )) {
        // drain the stream
      }
      // The new model is ready; traffic has not moved yet (tests start streams here).
      await hooks.beforeSwitch?.();
      this.current = next;
      this.adopt(next);
      const kvMoved = effective === 'migrate' && kvTransferable(old.engine, next.engine);
      const moving = [...this.handoffs].filter((h) => h.model === old);
      if (effective === 'migrate') for (const h of moving) h.move(kvMoved);
      const result: SwapResult = {
        from: old.ref,
        to: next.ref,
        policy: effective,
        durationMs: performance.now() - started,
        migrated: effective === 'migrate' ? moving.length : 0,
        draining: effective === 'drain' ? moving.length : 0,
        kvMoved,
      };
      this.retire(old);
      this.emit('swap', { result: 'success', ...result } satisfies SwapEvent);
      return result;
    } catch (err) {
      if (next) await next.engine.close().catch(() => {});
      const reason = err instanceof Error ? err.message : String(err);
      this.emit('swap', {
        result: 'failure',
        model: name,
        reason,
        durationMs: performance.now() - started,
      } satisfies SwapEvent);
      throw err instanceof TokenFormerError
        ? err
        : new TokenFormerError('TF_ERR_RUNTIME', `swap failed: ${reason}`, { cause: err });
    } finally {
      this.swapping = false;
    }
  }

  /**
   * Closes a replaced model once its last stream has ended. Streams still open at the drain
   * timeout move to the serving model when they can (as under `migrate`); the rest end with an
   * error when the model closes.
   */
  private retire(model: LoadedModel): void {
    this.retiring.add(model);
    let timer: NodeJS.Timeout | undefined;
    const check = () => {
      if (model.engine.openStreams > 0) return;
      model.engine.off('released', check);
      clearTimeout(timer);
      this.retiring.delete(model);
      void model.engine.close();
    };
    model.engine.on('released', check);
    check();
    if (!this.retiring.has(model)) return;
    timer = setTimeout(() => {
      const left = [...this.handoffs].filter((h) => h.model === model);
      const to = this.current.engine;
      const movable = migratable(model.engine, to);
      this.opts.onProgress?.(
        `drain timeout: ${left.length} stream(s) still on ${model.name}; ${movable ? 'moving them' : 'ending them'}`,
      );
      if (movable) for (const h of left) h.move(kvTransferable(model.engine, to));
      else {
        model.engine.off('released', check);
        this.retiring.delete(model);
        void model.engine.close();
      }
    }, this.opts.drainTimeoutMs ?? 30_000);
    timer.unref();
  }

  /** Serving state: `failed` once the supervisor gave up on a crashing worker. */
  get state(): 'ready' | 'restarting' | 'failed' {
    return this.supervisor.state;
  }

  /** The serving model's files on disk now (see fingerprintOf). */
  fingerprint(): string {
    return fingerprintOf(this.current.dir);
  }

  /**
   * Re-reads the serving model's directory (`--watch`, SIGHUP): when its files changed since it
   * was loaded, swaps to the new version under the same name. Returns the swap, or null when
   * nothing changed or a swap is already running.
   */
  async reload(): Promise<SwapResult | null> {
    const now = this.fingerprint();
    // A version that failed to load is not retried until the files change again.
    if (this.swapping || now === this.current.fingerprint || now === this.failedFingerprint) return null;
    try {
      return await this.swap(this.current.name);
    } catch (err) {
      this.failedFingerprint = now;
      throw err;
    }
  }

  /** Open streams on the serving model and on models being drained. */
  get openStreams(): number {
    return this.loaded.reduce((n, m) => n + m.engine.openStreams, 0);
  }

  async close(): Promise<void> {
    this.supervisor.close();
    await Promise.all(this.loaded.map((m) => m.engine.close()));
  }
}

/** A pinned stream: one model's tokens, each update naming it. */
async function* tagged(
  model: LoadedModel,
  prompt: readonly number[],
  params: SamplingParams,
  signal?: AbortSignal,
): AsyncGenerator<TokenUpdate> {
  for await (const u of model.engine.tokens(prompt, params, signal)) yield { ...u, model: model.ref };
}

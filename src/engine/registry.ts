import { EventEmitter } from 'node:events';
import { existsSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { basename, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { MANIFEST_FILE, readManifest } from '../export/export.ts';
import { CONFIG_FILE } from '../model/checkpoint.ts';
import { fail, TokenFormerError } from '../util/errors.ts';
import { DRAFT_AUTO, type DraftOptions, resolveDraft } from './draft.ts';
import { Engine, type EngineOptions } from './engine.ts';
import type { KvSnapshot } from './kv-cache.ts';
import {
  addMemory,
  checkMemoryBudget,
  defaultMemoryBudget,
  estimateModelMemory,
  type MemoryEstimate,
} from './memory-budget.ts';
import { resolveExport } from './model-dir.ts';
import type { SamplingParams } from './sampling/params.ts';
import { remainingParams, validateSamplingParams } from './sampling/params.ts';
import { type GenerationEvent, type ModelRef, type TokenUpdate, textStream } from './text-stream.ts';

/**
 * The serving model and zero-downtime swaps to another (typically a grown successor). The new
 * model loads and warms up in its own worker while the old one keeps serving; only then does
 * traffic move. `drain`: open streams finish on the old model, new requests go to the new one.
 * `migrate`: open streams continue on the new model — the prompt plus the tokens generated so
 * far are prefilled there and decoding goes on; the client sees one uninterrupted stream. A
 * failed load or warm-up leaves the old model serving and reports why.
 */

export type SwapPolicy = 'drain' | 'migrate';

export interface LoadedModel {
  name: string;
  /** The directory it was loaded from (checkpoint or export). */
  dir: string;
  /** Its files' fingerprint when loaded (see `fingerprint()`). */
  fingerprint: string;
  /** Model version: the export's weights checksum prefix and training step. */
  version: string;
  /** Name and version, as responses report them. */
  ref: ModelRef;
  exportDir: string;
  engine: Engine;
  loadedAt: string;
  memory: MemoryEstimate;
  /** The draft model speculative decoding uses for it (src/engine/draft.ts), if any. */
  draft?: string;
}

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

export interface RegistryOptions {
  modelsRoot: string;
  cacheDir: string;
  engine: Omit<EngineOptions, 'exportDir'>;
  /** Bytes every loaded model together may take (estimated); default: 80 % of the memory limit. */
  memoryBudgetBytes?: number;
  /** How long a drained model waits for its streams before they move on (or end); default 30 s. */
  drainTimeoutMs?: number;
  /** Worker crashes within a minute after which the supervisor gives up; default 3. */
  maxRestarts?: number;
  /** The draft model for speculative decoding (`--draft-model`); default `auto`. */
  draft?: DraftOptions;
  onProgress?: (message: string) => void;
}

interface Handoff {
  model: LoadedModel;
  /** Ends the stream on its model at the next token boundary; it continues on the serving one. */
  move(withKv: boolean): void;
}

const RESTART_WINDOW_MS = 60_000;

/**
 * Resolves a model name under the models root: no absolute paths outside it, no `..`, no symlink
 * escapes (the real path must stay inside the root's real path).
 */
export function confineModelPath(modelsRoot: string, name: string): string {
  if (typeof name !== 'string' || name.trim() === '')
    fail('TF_ERR_BAD_ARGS', 'model name must be a non-empty string');
  const root = realpathSync(resolve(modelsRoot));
  const candidate = isAbsolute(name) ? resolve(name) : resolve(root, name);
  const rel = relative(root, candidate);
  if (rel === '' || rel.startsWith('..') || isAbsolute(rel) || rel.split(sep).includes('..')) {
    fail('TF_ERR_BAD_ARGS', `model "${name}" is not inside the models root`);
  }
  if (!existsSync(candidate))
    fail('TF_ERR_NOT_FOUND', `model "${name}" does not exist under the models root`);
  const real = realpathSync(candidate);
  const realRel = relative(root, real);
  if (realRel === '' || realRel.startsWith('..') || isAbsolute(realRel)) {
    fail('TF_ERR_BAD_ARGS', `model "${name}" resolves outside the models root`);
  }
  return real;
}

function fingerprintOf(dir: string): string {
  return [MANIFEST_FILE, CONFIG_FILE, 'model.safetensors', 'model.onnx']
    .map((f) => {
      const p = join(dir, f);
      if (!existsSync(p)) return '-';
      const st = statSync(p);
      return `${st.size}:${st.mtimeMs}`;
    })
    .join('|');
}

function versionOf(engine: Engine): string {
  const m = engine.manifest;
  return `${m.source.weights_sha256.slice(0, 12)}-step${m.source.step}`;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class ModelRegistry extends EventEmitter {
  private current: LoadedModel;
  private swapping = false;
  private failedFingerprint: string | undefined;
  private readonly handoffs = new Set<Handoff>();
  private readonly retiring = new Set<LoadedModel>();
  /** Supervisor: the replacement being loaded after a crash, and recent crash times. */
  private restarting: Promise<LoadedModel> | undefined;
  private crashes: number[] = [];
  private gaveUp: Error | undefined;
  private closed = false;

  private constructor(
    private readonly opts: RegistryOptions,
    first: LoadedModel,
  ) {
    super();
    this.current = first;
    this.supervise(first);
  }

  /** Loads `model` (a name under the models root, or a path) as the serving model. */
  static async open(model: string, opts: RegistryOptions): Promise<ModelRegistry> {
    const dir = existsSync(model) ? resolve(model) : confineModelPath(opts.modelsRoot, model);
    const loaded = await ModelRegistry.load(basename(dir), dir, opts, [], true);
    return new ModelRegistry(opts, loaded);
  }

  /** Exports (if needed), checks the memory budget against `inUse`, and starts the model. */
  private static async load(
    name: string,
    dir: string,
    opts: RegistryOptions,
    inUse: readonly MemoryEstimate[],
    strictDraft = false,
  ): Promise<LoadedModel> {
    const fingerprint = fingerprintOf(dir);
    const { exportDir, verified } = await resolveExport(dir, opts.cacheDir, opts.onProgress);
    const manifest = verified ?? readManifest(exportDir);
    let memory = estimateModelMemory(exportDir, manifest, opts.engine.maxSequences);
    const budget = opts.memoryBudgetBytes ?? defaultMemoryBudget();
    checkMemoryBudget(name, memory, inUse, budget);
    // Derived per load: a swap or a restart picks the draft for the model it loads.
    const draftOpts = opts.draft ?? { model: DRAFT_AUTO };
    const { draft, reason } = await resolveDraft(
      { name, dir, manifest },
      draftOpts,
      {
        modelsRoot: opts.modelsRoot,
        cacheDir: opts.cacheDir,
        maxSequences: opts.engine.maxSequences,
        bytesLeft: budget - memory.totalBytes - inUse.reduce((n, m) => n + m.totalBytes, 0),
        resolveName: (n) => confineModelPath(opts.modelsRoot, n),
        ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
      },
      strictDraft,
    );
    opts.onProgress?.(
      draft
        ? `${name}: speculative decoding with draft model ${draft.name}`
        : `${name}: no draft model (${reason})`,
    );
    if (draft) memory = addMemory(memory, draft.memory);
    const engine = await Engine.start({
      ...opts.engine,
      exportDir,
      ...(verified ? { verified } : {}),
      ...(draft
        ? {
            draft: {
              exportDir: draft.exportDir,
              ...(draftOpts.maxDraft !== undefined ? { maxDraft: draftOpts.maxDraft } : {}),
              ...(draftOpts.maxBatch !== undefined ? { maxBatch: draftOpts.maxBatch } : {}),
            },
          }
        : {}),
    });
    if (engine.draft && !engine.draft.used)
      opts.onProgress?.(`${name}: the draft model is not used: ${engine.draft.reason}`);
    const version = versionOf(engine);
    return {
      name,
      dir,
      fingerprint,
      version,
      ref: { name, version },
      exportDir,
      engine,
      loadedAt: new Date().toISOString(),
      memory,
      ...(draft && engine.draft?.used ? { draft: draft.name } : {}),
    };
  }

  get model(): LoadedModel {
    return this.current;
  }

  /** Every model with a live worker: the serving one and those still draining. */
  get loaded(): LoadedModel[] {
    return [this.current, ...this.retiring];
  }

  /** Models under the root (checkpoint or export directories) and which one serves. */
  list(): { name: string; kind: 'checkpoint' | 'export'; active: boolean }[] {
    const root = resolve(this.opts.modelsRoot);
    if (!existsSync(root)) return [];
    return readdirSync(root)
      .filter((n) => statSync(join(root, n)).isDirectory())
      .flatMap((n) => {
        const kind = existsSync(join(root, n, MANIFEST_FILE))
          ? 'export'
          : existsSync(join(root, n, CONFIG_FILE))
            ? 'checkpoint'
            : null;
        return kind ? [{ name: n, kind, active: n === this.current.name }] : [];
      });
  }

  /** Streams from whichever model serves; under `migrate` a stream moves with the swap. */
  generate(
    prompt: readonly number[],
    params: SamplingParams,
    signal?: AbortSignal,
  ): AsyncIterable<GenerationEvent> {
    const engine = this.current.engine;
    return textStream(this.migratingTokens(prompt, params, signal), {
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
   * model that produced it.
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
    let survivedCrash = false;
    for (;;) {
      if (signal?.aborted) return;
      const p = remainingParams(params, generated.length);
      let moving: Promise<KvSnapshot | null> | undefined;
      let crashed = false;
      let handoff: Handoff | undefined;
      // A consumer may stop pulling after the last event: the handoff ends with the stream, not
      // with this generator.
      const onAbort = () => handoff && this.handoffs.delete(handoff);
      signal?.addEventListener('abort', onAbort, { once: true });
      try {
        // After the first model, the stream was moved here: already admitted work.
        const moved = model === first ? undefined : { ...(resume ? { kv: resume } : {}) };
        const stream = model.engine.tokens([...prompt, ...generated], p, signal, moved);
        resume = undefined;
        handoff = {
          model,
          move: (withKv) => {
            moving ??= stream.detach(withKv);
          },
        };
        this.handoffs.add(handoff);
        for await (const u of stream) {
          for (const t of u.tokens) generated.push(t.token);
          if (u.finish) this.handoffs.delete(handoff);
          yield { ...u, model: model.ref };
          if (u.finish) return;
        }
      } catch (err) {
        // A crashed worker's streams continue on its replacement (see supervise) — once: a stream
        // that was running at two crashes may be what crashes it, and must not take every restart down.
        if (!model.engine.crashed || signal?.aborted || survivedCrash) throw err;
        crashed = true;
        survivedCrash = true;
      } finally {
        if (handoff) this.handoffs.delete(handoff);
        signal?.removeEventListener('abort', onAbort);
      }
      if (crashed) {
        model = await this.replacementFor(model);
        this.emit('migrated', { kvMoved: false, reason: 'crash' });
        continue;
      }
      if (!moving) return; // cancelled by the client
      const snap = await moving;
      if (signal?.aborted) return; // cancelled while it was being moved
      // The cache covers every token but the last generated one, which is fed next.
      if (snap && snap.length === prompt.length + generated.length - 1) resume = snap;
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
    if (this.restarting || this.gaveUp)
      fail('TF_ERR_NOT_READY', 'the serving model is being restarted after a crash; retry shortly');
    this.swapping = true;
    const started = performance.now();
    const old = this.current;
    let next: LoadedModel | undefined;
    try {
      const dir = confineModelPath(this.opts.modelsRoot, name);
      this.opts.onProgress?.(`swap: loading ${name}`);
      next = await ModelRegistry.load(
        name,
        dir,
        this.opts,
        this.loaded.map((m) => m.memory),
      );
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
      this.supervise(next);
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
      let movable = true;
      try {
        checkMigratable(model.engine, to);
      } catch {
        movable = false;
      }
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

  /** Restarts `model` when its worker crashes (the supervisor); its streams wait and continue. */
  private supervise(model: LoadedModel): void {
    model.engine.once('crash', (err: Error) => {
      if (this.closed) return;
      this.emit('crash', { model: model.ref, reason: err.message });
      if (model !== this.current) {
        // A draining model crashed: its streams continue on the serving one (replacementFor).
        this.retiring.delete(model);
        return;
      }
      this.restarting ??= this.restart(model).then(
        (next) => {
          this.restarting = undefined;
          this.emit('restarted', { model: next.ref, crashes: this.crashes.length });
          return next;
        },
        (err: unknown) => {
          this.restarting = undefined;
          throw err;
        },
      );
      this.restarting.catch(() => {}); // waiters get the error; nothing else to do here
    });
  }

  /**
   * Loads the crashed model again, backing off (0.5 s, 1 s, 2 s…) between crashes; after
   * `maxRestarts` crashes within a minute it gives up and the registry reports `failed` (the
   * server is then not ready) instead of looping.
   */
  private async restart(crashed: LoadedModel): Promise<LoadedModel> {
    const max = this.opts.maxRestarts ?? 3;
    for (;;) {
      const now = Date.now();
      this.crashes = [...this.crashes.filter((t) => now - t < RESTART_WINDOW_MS), now];
      if (this.crashes.length > max) {
        this.gaveUp = new TokenFormerError(
          'TF_ERR_NOT_READY',
          `the model worker crashed ${this.crashes.length} times within a minute; not restarting it`,
        );
        this.emit('failed', { reason: this.gaveUp.message });
        throw this.gaveUp;
      }
      await sleep(500 * 2 ** (this.crashes.length - 1));
      if (this.closed) throw new TokenFormerError('TF_ERR_SHUTTING_DOWN', 'the server is shutting down');
      try {
        const next = await ModelRegistry.load(
          crashed.name,
          crashed.dir,
          this.opts,
          [...this.retiring].map((m) => m.memory),
        );
        this.current = next;
        this.supervise(next);
        return next;
      } catch (err) {
        this.opts.onProgress?.(`restart of ${crashed.name} failed: ${(err as Error).message}`);
      }
    }
  }

  /** Where a stream of a crashed model goes on: the serving model once it runs again. */
  private async replacementFor(model: LoadedModel): Promise<LoadedModel> {
    if (this.gaveUp) throw this.gaveUp;
    const next = this.restarting ? await this.restarting : this.current;
    if (next === model || next.engine.crashed)
      throw new TokenFormerError('TF_ERR_RUNTIME', 'the model worker crashed and was not replaced');
    checkMigratable(model.engine, next.engine);
    return next;
  }

  /** Serving state for readiness: `failed` once the supervisor gave up. */
  get state(): 'ready' | 'restarting' | 'failed' {
    return this.gaveUp ? 'failed' : this.restarting ? 'restarting' : 'ready';
  }

  /**
   * What identifies the serving model's files on disk (sizes and modification times of its
   * manifest or config and weights): a change means a new version was written there.
   */
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
    this.closed = true;
    await Promise.all(this.loaded.map((m) => m.engine.close()));
  }
}

function sameTokenizer(a: Engine, b: Engine): boolean {
  return a.manifest.tokenizer?.sha256 === b.manifest.tokenizer?.sha256;
}

/** Migration re-prefills the stream's tokens on the new model: same tokenizer and context needed. */
function checkMigratable(from: Engine, to: Engine): void {
  const a = from.manifest;
  const b = to.manifest;
  if (!sameTokenizer(from, to)) {
    fail(
      'TF_ERR_BAD_ARGS',
      'cannot migrate streams: the models use different tokenizers (use policy "drain")',
    );
  }
  if (b.model.max_seq_len < a.model.max_seq_len) {
    fail(
      'TF_ERR_BAD_ARGS',
      `cannot migrate streams: the new model's context (${b.model.max_seq_len}) is shorter (use policy "drain")`,
    );
  }
}

/**
 * Whether `to` computes exactly the keys and values `from` does, so a stream's KV cache can move
 * as is: the same weights, or — from the lineage in the checkpoints — `to` was grown from
 * exactly these weights with zero-initialised keys and τ kept (function-preserving, see
 * src/model/grow.ts) and not trained since (same step, provenance still `grow`), at the same
 * precision (quantization settings). Layer and head shapes never change in growth; they are
 * checked anyway.
 */
export function kvTransferable(from: Engine, to: Engine): boolean {
  const a = from.manifest;
  const b = to.manifest;
  if (!sameTokenizer(from, to)) return false;
  const shape = (m: typeof a.model) => [m.num_layers, m.num_heads, m.hidden_size, m.max_seq_len].join();
  if (shape(a.model) !== shape(b.model)) return false;
  // Quantized keys/values differ from the float ones (and between precisions).
  if (JSON.stringify(a.quantization ?? null) !== JSON.stringify(b.quantization ?? null)) return false;
  if (a.source.weights_sha256 === b.source.weights_sha256) return true;
  // Quantized: the new tokens' values must fall in blocks of their own, or old blocks rescale.
  const q = a.quantization;
  if (q && [a.model.qkv, a.model.proj, a.model.ffn].some((p) => p.tokens % q.block_size !== 0)) return false;
  const src = b.source;
  return (
    src.parent?.sha256 === a.source.weights_sha256 &&
    src.provenance?.source === 'grow' &&
    src.provenance.growth?.init === 'zero' &&
    src.provenance.growth.tau === 'keep' &&
    src.step === src.parent.step
  );
}

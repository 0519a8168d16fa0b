import { EventEmitter } from 'node:events';
import { existsSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { basename, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { MANIFEST_FILE } from '../export/export.ts';
import { CONFIG_FILE } from '../model/checkpoint.ts';
import { fail, TokenFormerError } from '../util/errors.ts';
import { Engine, type EngineOptions } from './engine.ts';
import { resolveExportDir } from './model-dir.ts';
import type { SamplingParams } from './sampling/params.ts';
import { validateSamplingParams } from './sampling/params.ts';
import { type GenerationEvent, type TokenUpdate, textStream } from './text-stream.ts';

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
  exportDir: string;
  engine: Engine;
  loadedAt: string;
}

export interface SwapResult {
  from: { name: string; version: string };
  to: { name: string; version: string };
  policy: SwapPolicy;
  durationMs: number;
  migrated: number;
  draining: number;
}

export interface RegistryOptions {
  modelsRoot: string;
  cacheDir: string;
  engine: Omit<EngineOptions, 'exportDir'>;
  onProgress?: (message: string) => void;
}

interface Handoff {
  model: LoadedModel;
  migrate(): void;
}

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

export class ModelRegistry extends EventEmitter {
  private current: LoadedModel;
  private swapping = false;
  private failedFingerprint: string | undefined;
  private readonly handoffs = new Set<Handoff>();
  private readonly retiring = new Set<LoadedModel>();

  private constructor(
    private readonly opts: RegistryOptions,
    first: LoadedModel,
  ) {
    super();
    this.current = first;
  }

  /** Loads `model` (a name under the models root, or a path) as the serving model. */
  static async open(model: string, opts: RegistryOptions): Promise<ModelRegistry> {
    const dir = existsSync(model) ? resolve(model) : confineModelPath(opts.modelsRoot, model);
    const loaded = await ModelRegistry.load(basename(dir), dir, opts);
    return new ModelRegistry(opts, loaded);
  }

  private static async load(name: string, dir: string, opts: RegistryOptions): Promise<LoadedModel> {
    const fingerprint = fingerprintOf(dir);
    const exportDir = await resolveExportDir(dir, opts.cacheDir, opts.onProgress);
    const engine = await Engine.start({ ...opts.engine, exportDir });
    return {
      name,
      dir,
      fingerprint,
      version: versionOf(engine),
      exportDir,
      engine,
      loadedAt: new Date().toISOString(),
    };
  }

  get model(): LoadedModel {
    return this.current;
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

  private async *migratingTokens(
    prompt: readonly number[],
    params: SamplingParams,
    signal?: AbortSignal,
  ): AsyncGenerator<TokenUpdate> {
    const generated: number[] = [];
    let model = this.current;
    for (;;) {
      const ctl = new AbortController();
      let moved = false;
      // A consumer may stop pulling after the last event: the handoff ends with the stream, not
      // with this generator.
      const onAbort = () => {
        this.handoffs.delete(handoff);
        ctl.abort();
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const handoff: Handoff = {
        model,
        migrate: () => {
          moved = true;
          ctl.abort();
        },
      };
      this.handoffs.add(handoff);
      try {
        if (signal?.aborted) return;
        const left = params.max_tokens - generated.length;
        const p = generated.length ? { ...params, max_tokens: left } : params;
        for await (const u of model.engine.tokens([...prompt, ...generated], p, ctl.signal)) {
          for (const t of u.tokens) generated.push(t.token);
          if (u.finish) this.handoffs.delete(handoff);
          yield u;
          if (u.finish) return;
        }
        if (!moved) return; // cancelled by the client
      } finally {
        this.handoffs.delete(handoff);
        signal?.removeEventListener('abort', onAbort);
      }
      model = this.current;
      this.emit('migrated');
    }
  }

  /**
   * Swaps the serving model. Throws (old model still serving) when the name is invalid, a swap
   * is in progress, the new model fails to load or warm up, or `migrate` is asked between
   * models whose tokenizers or shapes differ.
   */
  async swap(name: string, requested?: SwapPolicy): Promise<SwapResult> {
    const policy: SwapPolicy = requested ?? 'migrate';
    if (policy !== 'drain' && policy !== 'migrate')
      fail('TF_ERR_BAD_ARGS', `policy must be "drain" or "migrate", got ${JSON.stringify(policy)}`);
    if (this.swapping) fail('TF_ERR_SWAP_IN_PROGRESS', 'a swap is already in progress');
    this.swapping = true;
    const started = performance.now();
    const old = this.current;
    let next: LoadedModel | undefined;
    try {
      const dir = confineModelPath(this.opts.modelsRoot, name);
      this.opts.onProgress?.(`swap: loading ${name}`);
      next = await ModelRegistry.load(name, dir, this.opts);
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
      this.current = next;
      const moving = [...this.handoffs].filter((h) => h.model === old);
      if (effective === 'migrate') for (const h of moving) h.migrate();
      const result: SwapResult = {
        from: { name: old.name, version: old.version },
        to: { name: next.name, version: next.version },
        policy: effective,
        durationMs: performance.now() - started,
        migrated: effective === 'migrate' ? moving.length : 0,
        draining: effective === 'drain' ? moving.length : 0,
      };
      this.retire(old);
      this.emit('swap', { result: 'success', ...result });
      return result;
    } catch (err) {
      if (next) await next.engine.close().catch(() => {});
      const reason = err instanceof Error ? err.message : String(err);
      this.emit('swap', { result: 'failure', reason, durationMs: performance.now() - started });
      throw err instanceof TokenFormerError
        ? err
        : new TokenFormerError('TF_ERR_RUNTIME', `swap failed: ${reason}`, { cause: err });
    } finally {
      this.swapping = false;
    }
  }

  /** Closes a replaced model once its last stream has ended. */
  private retire(model: LoadedModel): void {
    this.retiring.add(model);
    const check = () => {
      if (model.engine.openStreams > 0) return;
      model.engine.off('released', check);
      this.retiring.delete(model);
      void model.engine.close();
    };
    model.engine.on('released', check);
    check();
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
    return this.current.engine.openStreams + [...this.retiring].reduce((n, m) => n + m.engine.openStreams, 0);
  }

  async close(): Promise<void> {
    await Promise.all([this.current.engine.close(), ...[...this.retiring].map((m) => m.engine.close())]);
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

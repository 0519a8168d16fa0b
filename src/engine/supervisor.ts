import { TokenFormerError } from '../util/errors.ts';
import { checkMigratable } from './migration.ts';
import type { LoadedModel } from './model-store.ts';

/**
 * Worker supervision: when the serving model's worker dies, it is loaded again (backing off
 * 0.5 s, 1 s, 2 s… between crashes) and its open streams wait for it and continue there; after
 * `maxRestarts` crashes within a minute the supervisor gives up instead of looping, and says so
 * (the server's /health and /ready then answer 503).
 */

const RESTART_WINDOW_MS = 60_000;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export interface SupervisorOptions {
  /** Crashes within a minute after which it gives up; default 3. */
  maxRestarts?: number;
  /** The model that serves new requests now. */
  serving(): LoadedModel;
  /** Loads the crashed model again and makes it the serving one. */
  reload(crashed: LoadedModel): Promise<LoadedModel>;
  /** `crash` {model, reason}, `restarted` {model, crashes}, `failed` {reason}. */
  emit(event: 'crash' | 'restarted' | 'failed', payload: object): void;
  /** A model that no longer serves (draining) crashed: it is not restarted. */
  onDrainingCrash(model: LoadedModel): void;
  onProgress?: (message: string) => void;
}

export class WorkerSupervisor {
  private restarting: Promise<LoadedModel> | undefined;
  private crashes: number[] = [];
  private gaveUp: TokenFormerError | undefined;
  private closed = false;

  constructor(private readonly opts: SupervisorOptions) {}

  /** Restarts `model` if its worker crashes while it serves (a draining one is let go). */
  watch(model: LoadedModel): void {
    model.engine.once('crash', (err: Error) => {
      if (this.closed) return;
      this.opts.emit('crash', { model: model.ref, reason: err.message });
      // A draining model crashed: its streams continue on the serving one (replacementFor).
      if (model !== this.opts.serving()) return this.opts.onDrainingCrash(model);
      this.restarting ??= this.restart(model).then(
        (next) => {
          this.restarting = undefined;
          this.opts.emit('restarted', { model: next.ref, crashes: this.crashes.length });
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

  /** `failed` once it gave up; `restarting` while a crashed model loads again. */
  get state(): 'ready' | 'restarting' | 'failed' {
    return this.gaveUp ? 'failed' : this.restarting ? 'restarting' : 'ready';
  }

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
        this.opts.emit('failed', { reason: this.gaveUp.message });
        throw this.gaveUp;
      }
      await sleep(500 * 2 ** (this.crashes.length - 1));
      if (this.closed) throw new TokenFormerError('TF_ERR_SHUTTING_DOWN', 'the server is shutting down');
      try {
        return await this.opts.reload(crashed);
      } catch (err) {
        this.opts.onProgress?.(`restart of ${crashed.name} failed: ${(err as Error).message}`);
      }
    }
  }

  /** Where a stream of a crashed model goes on: the serving model once it runs again. */
  async replacementFor(model: LoadedModel): Promise<LoadedModel> {
    if (this.gaveUp) throw this.gaveUp;
    const next = this.restarting ? await this.restarting : this.opts.serving();
    if (next === model || next.engine.crashed)
      throw new TokenFormerError('TF_ERR_RUNTIME', 'the model worker crashed and was not replaced');
    checkMigratable(model.engine, next.engine);
    return next;
  }

  close(): void {
    this.closed = true;
  }
}

import type { FastifyInstance } from 'fastify';
import { ModelRegistry, type RegistryOptions, type SwapEvent } from '../engine/registry.ts';
import { fail } from '../util/errors.ts';
import { type AppOptions, buildApp } from './app.ts';

/**
 * The server process's lifecycle: it listens while the first model loads (/health answers,
 * /ready is 503 until it is ready), drains on shutdown, and swaps in a new version written to
 * the model directory on reload. scripts/serve.ts only turns flags into `ServeOptions`.
 */

export interface ServeOptions {
  /** The model to serve first (checkpoint or export directory). */
  modelDir: string;
  host: string;
  port: number;
  app: Omit<AppOptions, 'registry'>;
  registry: Omit<RegistryOptions, 'onProgress'>;
  /** How long a shutdown waits for the requests in flight. */
  drainTimeoutMs: number;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

/** Listen errors users cause, with what to do about them. */
const LISTEN_ERRORS: Record<string, string> = {
  EADDRINUSE: 'the address is in use (another server is listening there; choose another --port)',
  EACCES: 'permission denied (ports below 1024 need privileges; choose another --port)',
  EADDRNOTAVAIL: 'this machine has no such address (check --host)',
};

export class ModelServer {
  readonly app: FastifyInstance;
  /** Set once the first model has loaded. */
  registry: ModelRegistry | undefined;
  private stopping = false;
  private loaded!: (r: ModelRegistry) => void;
  private failed!: (err: unknown) => void;

  constructor(private readonly opts: ServeOptions) {
    // The app gets the registry as a promise, so it can answer probes before the model is ready.
    const registry = new Promise<ModelRegistry>((res, rej) => {
      this.loaded = res;
      this.failed = rej;
    });
    this.app = buildApp({ ...opts.app, registry });
  }

  get isStopping(): boolean {
    return this.stopping;
  }

  /** Listens, then loads the model; rejects (with the app closed) when either fails. */
  async start(): Promise<string> {
    const { app, opts } = this;
    const { host, port } = opts;
    const address = await app.listen({ host, port }).catch((err: NodeJS.ErrnoException) => {
      if (err.code === undefined || !(err.code in LISTEN_ERRORS)) throw err;
      return fail('TF_ERR_RUNTIME', `cannot listen on ${host}:${port}: ${LISTEN_ERRORS[err.code]}`);
    });
    app.log.info({ address }, `listening on ${address}`);
    const keys = opts.app.apiKeys?.length ?? 0;
    app.log.info(
      { apiKeys: keys, corsOrigins: opts.app.corsOrigins ?? [], adminRoutes: Boolean(opts.app.adminToken) },
      keys > 0 ? `public routes need one of ${keys} API keys` : 'public routes are open (no API key)',
    );
    try {
      await this.load();
    } catch (err) {
      this.failed(err);
      await this.app.tokenformer.loaded;
      await Promise.race([app.close(), sleep(5_000)]);
      throw err;
    }
    return address;
  }

  /**
   * Drains: stops accepting connections (/ready answers 503 on open ones), lets the streams in
   * flight finish within the drain timeout, then closes the app and the models. True when every
   * stream finished on its own.
   */
  async shutdown(signal: string): Promise<boolean> {
    const { app } = this;
    this.stopping = true;
    const ctx = app.tokenformer;
    app.log.info(
      { signal, inFlight: ctx.inFlight, drainTimeoutMs: this.opts.drainTimeoutMs },
      'shutting down: draining',
    );
    if (app.server.listening) app.server.close();
    const clean = await ctx.drain(this.opts.drainTimeoutMs);
    await Promise.race([app.close(), sleep(5_000)]);
    if (this.registry) await Promise.race([this.registry.close(), sleep(5_000)]);
    app.log.info({ clean }, clean ? 'drained; exiting' : 'drain timed out; streams were ended; exiting');
    return clean;
  }

  /**
   * Re-reads the serving model's directory: a new version written there is swapped in (migrate
   * when the tokenizers match, else drain). A version that fails to load leaves the old one serving.
   */
  async reload(why: string): Promise<void> {
    if (!this.registry || this.stopping) return;
    try {
      const r = await this.registry.reload();
      if (r)
        this.app.log.info(
          { swap: r },
          `${why}: swapped to the new version of ${r.to.name} (${r.to.version})`,
        );
    } catch (err) {
      this.app.log.warn(
        { reason: (err as Error).message },
        `${why}: the new version failed to load; the old one keeps serving`,
      );
    }
  }

  /** Loads the first model (a checkpoint is exported into the cache once) and logs its events. */
  private async load(): Promise<void> {
    const { app, opts } = this;
    const registry = await ModelRegistry.open(opts.modelDir, {
      ...opts.registry,
      onProgress: (m) => app.log.info(m),
    });
    this.registry = registry;
    registry
      .on('swap', (e: SwapEvent) => {
        if (e.result !== 'success')
          app.log.warn({ reason: e.reason }, 'model swap failed; the old model keeps serving');
      })
      .on('crash', (e: { reason: string }) =>
        app.log.error({ reason: e.reason }, 'the model worker crashed; restarting it (open streams wait)'),
      )
      .on('restarted', (e: { crashes: number }) =>
        app.log.info({ crashes: e.crashes }, 'the model worker was restarted; streams continue'),
      )
      .on('failed', (e: { reason: string }) =>
        app.log.error({ reason: e.reason }, 'giving up on the model worker: /health and /ready answer 503'),
      );
    this.loaded(registry);
    const ctx = app.tokenformer;
    await ctx.loaded;
    const e = registry.model.engine;
    app.log.info(
      {
        model: ctx.modelName,
        servedNames: opts.app.servedNames,
        version: ctx.modelVersion,
        device: e.device,
        ...(e.fallbackReason ? { fallbackReason: e.fallbackReason } : {}),
        exportDir: registry.model.exportDir,
        draft: registry.model.draft ?? null,
      },
      e.fallbackReason
        ? `model ready on cpu (CUDA unavailable: ${e.fallbackReason})`
        : `model ready on ${e.device}`,
    );
  }
}

/**
 * Ties a server to its process: SIGTERM/SIGINT drain and exit 0 (a second signal exits 1 at
 * once); SIGHUP reloads, and so does a poll every `watchMs` (0: off). Installed before `start`,
 * so a signal during the model's load still shuts down cleanly.
 */
export function handleProcessSignals(server: ModelServer, watchMs: number): void {
  const stop = (signal: string) => {
    if (server.isStopping) {
      server.app.log.warn({ signal }, 'second signal: exiting without draining');
      process.exit(1);
    }
    void server.shutdown(signal).then(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM')).on('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => void server.reload('SIGHUP'));
  if (watchMs > 0) setInterval(() => void server.reload('watch'), watchMs).unref();
}

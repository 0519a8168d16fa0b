import { freePort, ServerProcess } from '../harness/server.ts';

/**
 * The server under soak: the shared harness's process on a free loopback port, logging at warn
 * (request logs would cost the server time the soak measures), with an admin token for swaps.
 */

export interface ServerOptions {
  modelsRoot: string;
  model: string;
  /** --served-model-name: the name clients send, whichever model serves (default: the model's directory name). */
  servedName?: string;
  /** The server's working directory: its .cache holds the exports of checkpoints. */
  cwd: string;
  adminToken: string;
  maxSequences: number;
  maxQueue: number;
  device: string;
  threads?: number;
  /** More `npm run serve` flags. */
  extraArgs?: string[];
}

/** Starts the server and waits (bounded) until /ready answers 200. */
export async function startSoakServer(opts: ServerOptions, readyMs = 180_000): Promise<ServerProcess> {
  const args = [
    ...['--model', opts.model, ...(opts.servedName ? ['--served-model-name', opts.servedName] : [])],
    ...['--models-dir', opts.modelsRoot],
    ...['--device', opts.device, '--log-level', 'warn'],
    ...['--max-sequences', String(opts.maxSequences), '--max-queue', String(opts.maxQueue)],
    ...(opts.threads ? ['--threads', String(opts.threads)] : []),
    ...(opts.extraArgs ?? []),
  ];
  return ServerProcess.start(args, {
    cwd: opts.cwd,
    port: await freePort(),
    adminToken: opts.adminToken,
    readyMs,
  });
}

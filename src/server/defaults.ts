/**
 * The server's defaults in one place: `npm run serve` uses them, and the deployment files
 * (Dockerfile, deploy/kubernetes) are tested against them.
 */
export const SERVE_DEFAULTS = {
  host: '127.0.0.1',
  port: 8080,
  device: 'auto',
  maxSequences: 8,
  maxQueue: 64,
  prefillChunk: 256,
  /** How long SIGTERM waits for open streams before ending them (Kubernetes' grace period must exceed it). */
  drainTimeoutMs: 30_000,
  modelsDir: 'models',
  /** Liveness (the process answers) and readiness (a model serves and it is not draining). */
  healthPath: '/health',
  readyPath: '/ready',
  metricsPath: '/metrics',
} as const;

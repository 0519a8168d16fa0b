/**
 * Typed errors that cross module boundaries. Every user-facing failure carries a stable code so
 * callers (CLI, server) can map it without parsing messages; the message names the file and
 * the problem so a user can act on it.
 */
export type ErrorCode =
  | 'TF_ERR_BAD_CONFIG'
  | 'TF_ERR_BAD_SAFETENSORS'
  | 'TF_ERR_BAD_ZIP'
  | 'TF_ERR_BAD_PICKLE'
  | 'TF_ERR_BAD_CHECKPOINT'
  | 'TF_ERR_BAD_ARGS'
  /** An output folder exists and holds something other than that command's kind of output. */
  | 'TF_ERR_FOREIGN_OUTPUT'
  /** A sequence would exceed the model's max_seq_len. */
  | 'TF_ERR_CONTEXT_LENGTH'
  /** Every KV-cache slot is in use (the runner's maxSequences). */
  | 'TF_ERR_NO_CAPACITY'
  /** The engine's waiting queue is full (HTTP 429). */
  | 'TF_ERR_QUEUE_FULL'
  /** A model swap is already running (HTTP 409). */
  | 'TF_ERR_SWAP_IN_PROGRESS'
  /** No model can serve right now (a crashed worker is being restarted, or was given up on). */
  | 'TF_ERR_NOT_READY'
  | 'TF_ERR_SHUTTING_DOWN'
  | 'TF_ERR_GRAPH'
  | 'TF_ERR_NOT_FOUND'
  | 'TF_ERR_RUNTIME';

export class TokenFormerError extends Error {
  readonly code: ErrorCode;
  /** The request field at fault, when one is (OpenAI's `param`). */
  readonly param: string | undefined;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; param?: string }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'TokenFormerError';
    this.code = code;
    this.param = options?.param;
  }
}

export function fail(code: ErrorCode, message: string, cause?: unknown): never {
  throw new TokenFormerError(code, message, cause === undefined ? undefined : { cause });
}

/** Asserts an internal invariant; a failure here is a bug, not bad input. */
export function invariant(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(`internal invariant violated: ${message}`);
}

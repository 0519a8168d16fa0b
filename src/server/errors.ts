import { TokenFormerError } from '../util/errors.ts';
import { type SchemaError, schemaErrorParam } from './schema-errors.ts';

/**
 * Every error the HTTP and WebSocket APIs can answer, by name: its HTTP status and its OpenAI
 * error `type`. One table, so a code means the same status everywhere; `toApiError` maps any
 * thrown value (ours, the engine's, fastify's) onto it, and nothing else shapes error bodies.
 */
export const API_ERRORS = {
  /** Bad input: schema violations, bad sampling parameters, unknown token ids. */
  TF_ERR_BAD_ARGS: { status: 400, type: 'invalid_request_error' },
  /** The prompt does not fit the model's context (it is refused, never truncated); OpenAI's code. */
  TF_ERR_CONTEXT_LENGTH: { status: 400, type: 'invalid_request_error', wire: 'context_length_exceeded' },
  /** Admin routes without a configured TOKENFORMER_ADMIN_TOKEN. */
  TF_ERR_FORBIDDEN: { status: 403, type: 'permission_error' },
  /** A missing or wrong bearer token (admin token, or API key); answered with `WWW-Authenticate`. */
  TF_ERR_UNAUTHORIZED: { status: 401, type: 'authentication_error' },
  /** The request's headers did not all arrive within the server's limit (slow clients). */
  TF_ERR_REQUEST_TIMEOUT: { status: 408, type: 'invalid_request_error' },
  TF_ERR_NOT_FOUND: { status: 404, type: 'not_found_error' },
  /** Another model swap is running. */
  TF_ERR_SWAP_IN_PROGRESS: { status: 409, type: 'conflict_error' },
  /** The new model failed to load or warm up; the old one keeps serving. */
  TF_ERR_SWAP_FAILED: { status: 422, type: 'invalid_request_error' },
  TF_ERR_MODEL_NOT_FOUND: { status: 404, type: 'not_found_error' },
  TF_ERR_BODY_TOO_LARGE: { status: 413, type: 'invalid_request_error' },
  TF_ERR_UNSUPPORTED_MEDIA_TYPE: { status: 415, type: 'invalid_request_error' },
  /** The request's headers are larger than the server's limit. */
  TF_ERR_HEADERS_TOO_LARGE: { status: 431, type: 'invalid_request_error' },
  /** The engine's waiting queue is full; answered with `Retry-After`. */
  TF_ERR_QUEUE_FULL: { status: 429, type: 'rate_limit_error' },
  /** A WebSocket connection has as many requests in flight as it may. */
  TF_ERR_TOO_MANY_REQUESTS: { status: 429, type: 'rate_limit_error' },
  /** A WebSocket connection sent messages faster than its limit; the socket is then closed (1008). */
  TF_ERR_RATE_LIMITED: { status: 429, type: 'rate_limit_error' },
  /** nginx's convention: the client went away (counted in metrics, never sent). */
  TF_ERR_CLIENT_CLOSED: { status: 499, type: 'client_closed' },
  TF_ERR_CANCELLED: { status: 499, type: 'client_closed' },
  TF_ERR_INTERNAL: { status: 500, type: 'server_error' },
  /** The model is still loading. */
  TF_ERR_NOT_READY: { status: 503, type: 'service_unavailable_error' },
  /** The server is draining before it exits. */
  TF_ERR_SHUTTING_DOWN: { status: 503, type: 'service_unavailable_error' },
  /** The request ran past the server's per-request timeout. */
  TF_ERR_TIMEOUT: { status: 504, type: 'timeout_error' },
} as const satisfies Record<string, { status: number; type: string; wire?: string }>;

export type ApiErrorCode = keyof typeof API_ERRORS;

/** The `code` a client sees: OpenAI's own where one exists for the case, else ours. */
export function wireCode(code: ApiErrorCode): string {
  const e = API_ERRORS[code] as { wire?: string };
  return e.wire ?? code;
}

const BY_WIRE = new Map(Object.keys(API_ERRORS).map((k) => [wireCode(k as ApiErrorCode), k as ApiErrorCode]));

/** The error a client-visible `code` stands for (undefined for a code the server never sends). */
export function apiErrorOfWireCode(code: string): { status: number; type: string } | undefined {
  const k = BY_WIRE.get(code);
  return k === undefined ? undefined : API_ERRORS[k];
}

/** Seconds a client refused with 429 should wait; the queue turns over within about a second. */
export const RETRY_AFTER_SECONDS = 1;

export class ApiError extends Error {
  readonly code: ApiErrorCode;
  /** The request field at fault, when one is (OpenAI's `param`). */
  readonly param: string | undefined;
  constructor(code: ApiErrorCode, message: string, param?: string) {
    super(message);
    this.name = 'ApiError';
    this.code = code;
    this.param = param;
  }
  get status(): number {
    return API_ERRORS[this.code].status;
  }
}

export interface ErrorBody {
  /** `param` only where one field is at fault. */
  error: { message: string; type: string; code: string; param?: string };
}

export interface MappedError {
  status: number;
  code: ApiErrorCode;
  body: ErrorBody;
  headers: Record<string, string>;
  /** Server faults are logged with their stack; client faults are not. */
  internal: boolean;
}

/** Engine codes that are the client's doing; every other engine failure is internal. */
const ENGINE_CODES: Partial<Record<string, ApiErrorCode>> = {
  TF_ERR_BAD_ARGS: 'TF_ERR_BAD_ARGS',
  TF_ERR_CONTEXT_LENGTH: 'TF_ERR_CONTEXT_LENGTH',
  TF_ERR_QUEUE_FULL: 'TF_ERR_QUEUE_FULL',
  TF_ERR_SWAP_IN_PROGRESS: 'TF_ERR_SWAP_IN_PROGRESS',
  TF_ERR_NO_CAPACITY: 'TF_ERR_QUEUE_FULL',
  TF_ERR_NOT_READY: 'TF_ERR_NOT_READY',
  TF_ERR_SHUTTING_DOWN: 'TF_ERR_SHUTTING_DOWN',
};

interface FastifyLikeError {
  code?: unknown;
  statusCode?: unknown;
  validation?: unknown;
  message?: unknown;
}

interface Classified {
  code: ApiErrorCode;
  message: string;
  param?: string | undefined;
}

function classify(err: unknown, bodyLimit: number): Classified {
  if (err instanceof ApiError) return { code: err.code, message: err.message, param: err.param };
  if (err instanceof TokenFormerError) {
    const code = ENGINE_CODES[err.code];
    if (code) return { code, message: err.message, param: err.param };
    return { code: 'TF_ERR_INTERNAL', message: 'internal error' };
  }
  const e = (typeof err === 'object' && err !== null ? err : {}) as FastifyLikeError;
  if (e.validation)
    return {
      code: 'TF_ERR_BAD_ARGS',
      message: String(e.message),
      param: Array.isArray(e.validation) ? schemaErrorParam(e.validation as SchemaError[]) : undefined,
    };
  switch (e.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return {
        code: 'TF_ERR_BODY_TOO_LARGE',
        message: `the request body is larger than the server's limit of ${bodyLimit} bytes`,
      };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return { code: 'TF_ERR_UNSUPPORTED_MEDIA_TYPE', message: 'send the request body as application/json' };
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return { code: 'TF_ERR_BAD_ARGS', message: 'the request body is not valid JSON' };
  }
  // Other client errors fastify raises (bad headers, bad URL, …) carry a 4xx and a safe message.
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500 && e.code) {
    return { code: 'TF_ERR_BAD_ARGS', message: String(e.message) };
  }
  return { code: 'TF_ERR_INTERNAL', message: 'internal error' };
}

/**
 * Maps any thrown value to its status and OpenAI-shaped body. Internal errors get a generic
 * message naming the request id, so no stack, path or engine detail reaches the client.
 */
export function toApiError(err: unknown, opts: { requestId?: string; bodyLimit?: number } = {}): MappedError {
  const { code, message, param } = classify(err, opts.bodyLimit ?? 0);
  const { status, type } = API_ERRORS[code];
  const internal = code === 'TF_ERR_INTERNAL';
  const text =
    internal && opts.requestId
      ? `internal error; the server log has details (request id ${opts.requestId})`
      : message;
  const headers: Record<string, string> = {};
  if (status === 429) headers['retry-after'] = String(RETRY_AFTER_SECONDS);
  if (status === 401) headers['www-authenticate'] = 'Bearer realm="tokenformer"';
  const body: ErrorBody = {
    error: { message: text, type, code: wireCode(code), ...(param ? { param } : {}) },
  };
  return { status, code, body, headers, internal };
}

/**
 * Engine and loader messages name files; an API answer keeps only each path's last component
 * (`/srv/models/x/config.json` → `config.json`), so no server layout reaches a client. `keep`
 * (what the client itself sent, e.g. a model name) is left whole wherever it stands alone.
 */
export function withoutPaths(message: string, keep?: string): string {
  // Two slashes at least (`a/b/c`, `/a/b`), so prose such as "drain/migrate" is left alone.
  const strip = (s: string) => s.replace(/[^\s/'"(]*(?:\/[^\s/'"]+)+\/([^\s/'"]+)/g, '$1');
  if (!keep) return strip(message);
  // Quoted, the client's text is one token the path pattern cannot cross.
  const quoted = JSON.stringify(keep);
  return message.split(quoted).map(strip).join(quoted);
}

/**
 * A client's value quoted in an error message, cut to `max` characters: a message names what
 * was wrong without echoing a megabyte back, and never stringifies a structure (a deeply nested
 * one overflows JSON.stringify's stack).
 */
export function quoted(value: unknown, max = 80): string {
  if (typeof value === 'string')
    return JSON.stringify(value.length > max ? `${value.slice(0, max)}…` : value);
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object' && value !== null) return 'an object';
  return String(value);
}

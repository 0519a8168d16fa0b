import { createHash, timingSafeEqual } from 'node:crypto';
import { fail } from '../util/errors.ts';

/**
 * Bearer credentials: the admin token and the API keys of the public routes. One comparison for
 * both, constant-time, so a wrong key's response time says nothing about the right one.
 */

/**
 * The WebSocket subprotocol the server selects; a browser (which cannot set headers on a
 * WebSocket) offers it together with `bearer.KEY`: `new WebSocket(url, ['tokenformer', 'bearer.' + key])`.
 */
export const WS_PROTOCOL = 'tokenformer';
const WS_BEARER_PREFIX = 'bearer.';

/** Hashing both sides first gives equal-length buffers, so the comparison is constant-time. */
export function sameSecret(given: string, expected: string): boolean {
  const digest = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(digest(given), digest(expected));
}

/** Compares against every key (no early exit), so the time does not tell which key is closest. */
export function matchesAny(given: string, keys: readonly string[]): boolean {
  let found = false;
  for (const key of keys) found = sameSecret(given, key) || found;
  return found;
}

/** The token of an `Authorization: Bearer TOKEN` header (the scheme is case-insensitive, RFC 7235). */
export function bearerToken(header: string | undefined): string | undefined {
  const m = /^bearer +(\S+) *$/i.exec(header ?? '');
  return m?.[1];
}

/** The key a WebSocket client offered as the subprotocol `bearer.KEY`, if any. */
export function wsProtocolKey(header: string | string[] | undefined): string | undefined {
  const offered = (Array.isArray(header) ? header.join(',') : (header ?? '')).split(',');
  for (const p of offered) {
    const s = p.trim();
    if (s.startsWith(WS_BEARER_PREFIX) && s.length > WS_BEARER_PREFIX.length)
      return s.slice(WS_BEARER_PREFIX.length);
  }
  return undefined;
}

/**
 * ws's `handleProtocols`: selects `tokenformer` when offered, never the `bearer.KEY` entry (that
 * would echo the key back), else none.
 */
export function selectWsProtocol(protocols: Set<string>): string | false {
  return protocols.has(WS_PROTOCOL) ? WS_PROTOCOL : false;
}

/** Letters, digits and `-._~+`: valid in a header and in a WebSocket subprotocol (hex, base64url, `sk-…`). */
const KEY_CHARS = /^[A-Za-z0-9._~+-]+$/;
export const MIN_API_KEY_LENGTH = 16;

/**
 * API keys from text: one per line or comma-separated; blank lines and `#` comments are skipped.
 * `source` names where they came from in errors (never the key itself).
 */
export function parseApiKeys(text: string, source: string): string[] {
  const keys: string[] = [];
  for (const [i, line] of text.split(/\r?\n/).entries()) {
    const content = line.trim();
    if (content === '' || content.startsWith('#')) continue;
    for (const part of content.split(',')) {
      const key = part.trim();
      if (key === '') continue;
      if (!KEY_CHARS.test(key))
        fail(
          'TF_ERR_BAD_ARGS',
          `${source}, line ${i + 1}: an API key may hold only letters, digits and -._~+ (e.g. openssl rand -hex 32)`,
        );
      if (key.length < MIN_API_KEY_LENGTH)
        fail(
          'TF_ERR_BAD_ARGS',
          `${source}, line ${i + 1}: an API key must be at least ${MIN_API_KEY_LENGTH} characters (e.g. openssl rand -hex 32)`,
        );
      keys.push(key);
    }
  }
  return keys;
}

/** CORS origins: `*` or `scheme://host[:port]` each, comma-separated. */
export function parseCorsOrigins(text: string, source: string): string[] {
  const origins = text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  for (const o of origins) {
    if (o === '*') continue;
    let origin: string | undefined;
    try {
      origin = new URL(o).origin;
    } catch {
      origin = undefined;
    }
    if (origin !== o)
      fail(
        'TF_ERR_BAD_ARGS',
        `${source}: ${JSON.stringify(o)} is not an origin; write scheme://host[:port] (no path, no trailing slash) or *`,
      );
  }
  return origins;
}

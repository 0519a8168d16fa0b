import { createHash } from 'node:crypto';
import { closeSync, createReadStream, openSync, readFileSync, readSync } from 'node:fs';
import { type ErrorCode, fail } from './errors.ts';

/** Streams the file through SHA-256 in chunks (weights can be larger than one Buffer). */
export function fileSha256(path: string): string {
  const h = createHash('sha256');
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(1 << 24);
    for (let n = readSync(fd, buf); n > 0; n = readSync(fd, buf)) h.update(buf.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return h.digest('hex');
}

/**
 * The same, without blocking the event loop (a server hashing a new model while it streams):
 * read as a stream, never held whole.
 */
export async function fileSha256Async(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 22 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/**
 * Reads and parses a JSON file; an unreadable file is TF_ERR_NOT_FOUND and unparsable text
 * `badCode`, each a one-line message naming the file.
 */
export function readJsonFile(path: string, badCode: ErrorCode = 'TF_ERR_BAD_CONFIG'): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    fail('TF_ERR_NOT_FOUND', `cannot read ${path}: ${(err as Error).message}`, err);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    fail(badCode, `${path}: not valid JSON (${(err as Error).message})`, err);
  }
}

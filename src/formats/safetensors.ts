/**
 * Strict reader/writer for the safetensors format
 * (https://github.com/huggingface/safetensors#format):
 *
 *   [u64 little-endian N][N bytes UTF-8 JSON header][data buffer]
 *
 * The header maps tensor names to `{dtype, shape, data_offsets: [begin, end]}` (offsets relative
 * to the start of the data buffer) plus an optional `__metadata__` string→string map.
 *
 * Hand-written on purpose: there is no maintained safetensors library for Node, and the format is
 * small enough that a strict implementation is cheaper to own than a dependency. The reader opens
 * a file descriptor and parses only the header up front; tensor bytes are read on demand with
 * positioned reads, so multi-GiB checkpoints never have to fit in one buffer.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { writeAll, writeFileAtomic } from '../util/atomic.ts';
import {
  DTYPE_BYTES,
  DTYPES,
  type DType,
  f32ToBf16,
  f32ToF16,
  isDType,
  isFloatDType,
  toFloat32,
} from '../util/dtype.ts';
import { fail } from '../util/errors.ts';

/** Upper bound on the JSON header size (same limit as the reference Rust implementation). */
export const MAX_HEADER_BYTES = 100_000_000;

const METADATA_KEY = '__metadata__';

/** Largest chunk handed to one read(2); Linux reads at most ~2 GiB per call. */
const MAX_IO_CHUNK = 1 << 30;

export interface SafeTensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
  /** Absolute byte offset of the tensor's data in the file. */
  byteOffset: number;
  byteLength: number;
}

export interface SafeTensorInput {
  name: string;
  dtype: DType;
  shape: number[];
  /** Raw bytes, or a producer called once while writing (see writeSafeTensors). */
  data: ArrayBufferView | (() => ArrayBufferView);
}

function bad(path: string, problem: string): never {
  fail('TF_ERR_BAD_SAFETENSORS', `${path}: invalid safetensors file: ${problem}`);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  const s = JSON.stringify(v);
  if (s === undefined) return String(v);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/** Number of elements, or undefined if it is not a safe integer. */
function elementCount(shape: readonly number[]): number | undefined {
  let n = 1;
  for (const d of shape) n *= d;
  return Number.isSafeInteger(n) ? n : undefined;
}

/** Reads exactly `length` bytes at absolute `position` into `buf[offset..]`, looping short reads. */
function readFully(fd: number, buf: Uint8Array, offset: number, length: number, position: number): number {
  let done = 0;
  while (done < length) {
    const n = readSync(fd, buf, offset + done, Math.min(length - done, MAX_IO_CHUNK), position + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}

export class SafeTensorsFile {
  readonly path: string;
  readonly metadata: Record<string, string>;
  /** Tensors in file (data offset) order. */
  readonly tensors: ReadonlyMap<string, SafeTensorInfo>;
  private fd: number;

  private constructor(
    path: string,
    fd: number,
    metadata: Record<string, string>,
    tensors: Map<string, SafeTensorInfo>,
  ) {
    this.path = path;
    this.fd = fd;
    this.metadata = metadata;
    this.tensors = tensors;
  }

  /** Opens `path` and validates its header; tensor data is not read until asked for. */
  static open(path: string): SafeTensorsFile {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') fail('TF_ERR_NOT_FOUND', `${path}: safetensors file not found`, err);
      throw err;
    }
    try {
      const { metadata, tensors } = parseHeader(path, fd);
      return new SafeTensorsFile(path, fd, metadata, tensors);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  private info(name: string): SafeTensorInfo {
    const info = this.tensors.get(name);
    if (info === undefined) fail('TF_ERR_NOT_FOUND', `${this.path}: no tensor named "${name}"`);
    if (this.fd < 0) fail('TF_ERR_RUNTIME', `${this.path}: read of tensor "${name}" after close()`);
    return info;
  }

  /** Raw little-endian bytes of one tensor, in a fresh buffer starting at offset 0 (8-byte aligned). */
  readBytes(name: string): Uint8Array {
    const info = this.info(name);
    const out = new Uint8Array(new ArrayBuffer(info.byteLength));
    const got = readFully(this.fd, out, 0, info.byteLength, info.byteOffset);
    if (got !== info.byteLength) {
      bad(
        this.path,
        `tensor "${name}" needs ${info.byteLength} bytes at offset ${info.byteOffset} but only ${got} could ` +
          'be read (file truncated since it was opened?)',
      );
    }
    return out;
  }

  /** Tensor as float32; F16/BF16/F64 are converted. Non-float dtypes are an error. */
  readF32(name: string): Float32Array {
    const info = this.info(name);
    if (!isFloatDType(info.dtype)) {
      fail(
        'TF_ERR_BAD_CHECKPOINT',
        `${this.path}: tensor "${name}" has dtype ${info.dtype}; expected a float dtype (F32/F16/BF16/F64)`,
      );
    }
    const bytes = this.readBytes(name);
    if (info.dtype === 'F32') return new Float32Array(bytes.buffer, 0, bytes.byteLength / 4);
    return toFloat32(info.dtype, bytes);
  }

  /** An I64 tensor as a BigInt64Array (no other dtype is accepted). */
  readI64(name: string): BigInt64Array {
    const info = this.info(name);
    if (info.dtype !== 'I64') {
      fail('TF_ERR_BAD_CHECKPOINT', `${this.path}: tensor "${name}" has dtype ${info.dtype}; expected I64`);
    }
    const bytes = this.readBytes(name);
    return new BigInt64Array(bytes.buffer, 0, bytes.byteLength / 8);
  }

  /** Closes the file descriptor; idempotent. */
  close(): void {
    if (this.fd >= 0) {
      const fd = this.fd;
      this.fd = -1;
      closeSync(fd);
    }
  }
}

function parseHeader(
  path: string,
  fd: number,
): { metadata: Record<string, string>; tensors: Map<string, SafeTensorInfo> } {
  const stat = fstatSync(fd);
  if (!stat.isFile()) bad(path, 'not a regular file');
  const fileSize = stat.size;
  if (fileSize < 8) {
    bad(path, `file is ${fileSize} bytes, shorter than the 8-byte header-length prefix`);
  }
  const prefix = new Uint8Array(8);
  if (readFully(fd, prefix, 0, 8, 0) !== 8) bad(path, 'could not read the 8-byte header-length prefix');
  const headerLen = new DataView(prefix.buffer).getBigUint64(0, true);
  if (headerLen === 0n) bad(path, 'header length is 0');
  if (headerLen > BigInt(MAX_HEADER_BYTES)) {
    bad(path, `header length ${headerLen} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  }
  const n = Number(headerLen);
  if (8 + n > fileSize) {
    bad(path, `header length ${n} extends beyond the end of the file (${fileSize} bytes)`);
  }
  const headerBytes = new Uint8Array(n);
  if (readFully(fd, headerBytes, 0, n, 8) !== n) bad(path, `could not read the ${n}-byte header`);

  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes);
  } catch {
    bad(path, 'header is not valid UTF-8');
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (err) {
    bad(path, `header is not valid JSON (${(err as Error).message})`);
  }
  if (!isPlainObject(header)) bad(path, `header must be a JSON object, got ${describe(header)}`);

  const dataStart = 8 + n;
  const dataLen = fileSize - dataStart;
  let metadata: Record<string, string> = {};
  const entries: Array<SafeTensorInfo & { begin: number; end: number }> = [];

  for (const [name, entry] of Object.entries(header)) {
    if (name === METADATA_KEY) {
      metadata = parseMetadata(path, entry);
      continue;
    }
    const where = `tensor "${name}"`;
    if (!isPlainObject(entry)) bad(path, `${where}: entry must be an object, got ${describe(entry)}`);
    const { dtype, shape, data_offsets: offsets } = entry;
    if (!isDType(dtype)) {
      bad(
        path,
        `${where}: unknown or unsupported dtype ${describe(dtype)} (supported: ${DTYPES.join(', ')})`,
      );
    }
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      bad(path, `${where}: shape must be an array of non-negative integers, got ${describe(shape)}`);
    }
    if (
      !Array.isArray(offsets) ||
      offsets.length !== 2 ||
      !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)
    ) {
      bad(path, `${where}: data_offsets must be two non-negative integers, got ${describe(offsets)}`);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end) bad(path, `${where}: data_offsets begin ${begin} is greater than end ${end}`);
    const count = elementCount(shape);
    const expected = count === undefined ? undefined : count * DTYPE_BYTES[dtype];
    if (expected === undefined || !Number.isSafeInteger(expected)) {
      bad(path, `${where}: shape ${describe(shape)} is too large`);
    }
    if (end - begin !== expected) {
      bad(
        path,
        `${where}: data_offsets [${begin}, ${end}] span ${end - begin} bytes but dtype ${dtype} with shape ` +
          `[${shape.join(', ')}] needs ${expected} bytes`,
      );
    }
    if (end > dataLen) {
      bad(
        path,
        `${where}: data_offsets [${begin}, ${end}] extend beyond the ${dataLen}-byte data section ` +
          '(file truncated?)',
      );
    }
    entries.push({
      name,
      dtype,
      shape: [...shape],
      byteOffset: dataStart + begin,
      byteLength: end - begin,
      begin,
      end,
    });
  }

  // The data buffer must be exactly tiled by the tensors: no overlaps, no holes, no trailing bytes.
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  let prev: (typeof entries)[number] | undefined;
  for (const e of entries) {
    if (e.begin < cursor) {
      bad(
        path,
        `tensors "${prev!.name}" [${prev!.begin}, ${prev!.end}] and "${e.name}" [${e.begin}, ${e.end}] overlap`,
      );
    }
    if (e.begin > cursor) {
      const after = prev === undefined ? 'the start of the data section' : `tensor "${prev.name}"`;
      bad(path, `hole of ${e.begin - cursor} unindexed bytes between ${after} and tensor "${e.name}"`);
    }
    cursor = e.end;
    prev = e;
  }
  if (cursor !== dataLen) {
    bad(
      path,
      `${dataLen - cursor} unindexed trailing bytes after the last tensor (data section is ${dataLen} ` +
        `bytes, tensors cover ${cursor})`,
    );
  }

  const tensors = new Map<string, SafeTensorInfo>();
  for (const { name, dtype, shape, byteOffset, byteLength } of entries) {
    tensors.set(name, { name, dtype, shape, byteOffset, byteLength });
  }
  return { metadata, tensors };
}

function parseMetadata(path: string, value: unknown): Record<string, string> {
  if (!isPlainObject(value)) {
    bad(path, `${METADATA_KEY} must be an object mapping strings to strings, got ${describe(value)}`);
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== 'string') {
      bad(path, `${METADATA_KEY} value for key "${k}" must be a string, got ${describe(v)}`);
    }
    // defineProperty so a key named "__proto__" stays an ordinary entry.
    Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true });
  }
  return out;
}

/** Reads a whole (small) safetensors file into memory. */
export function readSafeTensors(path: string): {
  metadata: Record<string, string>;
  tensors: Map<string, { dtype: DType; shape: number[]; data: Uint8Array }>;
} {
  const file = SafeTensorsFile.open(path);
  try {
    const tensors = new Map<string, { dtype: DType; shape: number[]; data: Uint8Array }>();
    for (const info of file.tensors.values()) {
      tensors.set(info.name, { dtype: info.dtype, shape: [...info.shape], data: file.readBytes(info.name) });
    }
    return { metadata: { ...file.metadata }, tensors };
  } finally {
    file.close();
  }
}

/**
 * Writes tensors atomically. Tensors are laid out by descending element size (stable otherwise),
 * and the header is space-padded so the data section starts at a multiple of 8, which together keep
 * every tensor's data aligned to its element size. Data is streamed tensor by tensor.
 *
 * `data` is either the raw little-endian bytes (any typed array / DataView of exactly
 * product(shape) × element size bytes) or a function producing them, called once while that
 * tensor is being written so only one tensor needs to be in memory at a time. For F16/BF16 tensors
 * a Float32Array of values may be given instead; it is rounded to nearest-even on the way out.
 * Eager data is validated before anything is written; a producer's result is validated when it is
 * called, and a failure then removes the partial file.
 */
export function writeSafeTensors(
  path: string,
  tensors: SafeTensorInput[],
  metadata: Record<string, string> = {},
): void {
  const names = new Set<string>();
  const sizes = new Map<SafeTensorInput, number>();
  for (const t of tensors) {
    if (typeof t.name !== 'string') fail('TF_ERR_BAD_ARGS', `${path}: tensor name must be a string`);
    const where = `${path}: cannot write tensor "${t.name}"`;
    if (t.name === METADATA_KEY) fail('TF_ERR_BAD_ARGS', `${where}: the name is reserved`);
    if (names.has(t.name)) fail('TF_ERR_BAD_ARGS', `${path}: duplicate tensor name "${t.name}"`);
    names.add(t.name);
    if (!isDType(t.dtype)) fail('TF_ERR_BAD_ARGS', `${where}: unknown dtype ${describe(t.dtype)}`);
    if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      fail(
        'TF_ERR_BAD_ARGS',
        `${where}: shape must be an array of non-negative integers, got ${describe(t.shape)}`,
      );
    }
    const count = elementCount(t.shape);
    const byteLength = count === undefined ? Number.NaN : count * DTYPE_BYTES[t.dtype];
    if (!Number.isSafeInteger(byteLength)) fail('TF_ERR_BAD_ARGS', `${where}: shape is too large`);
    sizes.set(t, byteLength);
    if (typeof t.data !== 'function') encodeTensorData(path, t, t.data, byteLength);
  }
  for (const [k, v] of Object.entries(metadata)) {
    if (typeof v !== 'string') {
      fail(
        'TF_ERR_BAD_ARGS',
        `${path}: ${METADATA_KEY} value for key "${k}" must be a string, got ${describe(v)}`,
      );
    }
  }

  const ordered = [...tensors].sort((a, b) => DTYPE_BYTES[b.dtype] - DTYPE_BYTES[a.dtype]);
  // Null prototype: a tensor named "__proto__" must become a plain key, not a prototype change.
  const header: Record<string, unknown> = Object.create(null);
  if (Object.keys(metadata).length > 0) header[METADATA_KEY] = metadata;
  let offset = 0;
  for (const t of ordered) {
    const len = sizes.get(t)!;
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + len] };
    offset += len;
  }
  let json = JSON.stringify(header);
  const jsonLen = Buffer.byteLength(json, 'utf8');
  json += ' '.repeat((8 - ((8 + jsonLen) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  if (headerBytes.byteLength > MAX_HEADER_BYTES) {
    fail(
      'TF_ERR_BAD_ARGS',
      `${path}: safetensors header would be ${headerBytes.byteLength} bytes (limit ${MAX_HEADER_BYTES})`,
    );
  }
  const prefix = new Uint8Array(8);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(headerBytes.byteLength), true);

  writeFileAtomic(path, (fd) => {
    writeAll(fd, prefix);
    writeAll(fd, headerBytes);
    for (const t of ordered) {
      const data = typeof t.data === 'function' ? t.data() : t.data;
      writeAll(fd, encodeTensorData(path, t, data, sizes.get(t)!));
    }
  });
}

/** Checks one tensor's data against its declared size, converting f32 values for F16/BF16. */
function encodeTensorData(
  path: string,
  t: SafeTensorInput,
  data: unknown,
  byteLength: number,
): ArrayBufferView {
  const where = `${path}: cannot write tensor "${t.name}"`;
  if (!ArrayBuffer.isView(data)) {
    fail('TF_ERR_BAD_ARGS', `${where}: data must be a typed array or DataView, got ${describe(data)}`);
  }
  let out: ArrayBufferView = data;
  if (data instanceof Float32Array && (t.dtype === 'F16' || t.dtype === 'BF16')) {
    out = t.dtype === 'F16' ? f32ToF16(data) : f32ToBf16(data);
  }
  if (out.byteLength !== byteLength) {
    const given =
      out === data ? `${data.byteLength} bytes` : `${(data as Float32Array).length} float32 values`;
    fail(
      'TF_ERR_BAD_ARGS',
      `${where}: data is ${given} but dtype ${t.dtype} with shape [${t.shape.join(', ')}] needs ` +
        `${byteLength} bytes`,
    );
  }
  return out;
}

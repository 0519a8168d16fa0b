/**
 * Test-only builders: a tiny zip writer (stored / deflated entries, optional ZIP64 records) and
 * pickle byte builders that produce `torch.save`-style state dicts, so tests can craft archives
 * with half-precision storages, shared-storage views, compressed pickles and broken inputs.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { crc32, deflateRawSync } from 'node:zlib';

// ---------------------------------------------------------------------------------------------
// zip writer

export interface ZipInput {
  readonly name: string;
  readonly data: Uint8Array;
  /** Compress with deflate (method 8); default stored (0). */
  readonly deflate?: boolean;
  /** Override the method number written (data stays as given); for unsupported-method tests. */
  readonly methodCode?: number;
  /** General-purpose flags (e.g. 1 = encrypted); bit 11 (UTF-8) is always set. */
  readonly flags?: number;
  /** Override the CRC written to the central directory. */
  readonly crc?: number;
}

export interface ZipOptions {
  /**
   * Write ZIP64 records: every central-directory entry saturates its 32-bit sizes and offset and
   * carries a zip64 extra field; the EOCD is saturated and preceded by a zip64 EOCD record and
   * locator.
   */
  readonly zip64?: boolean;
  /** An archive comment (the EOCD search must skip it). */
  readonly comment?: string;
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(n);
  return b;
}
function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
}
function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}

export function buildZip(files: readonly ZipInput[], opts: ZipOptions = {}): Buffer {
  const zip64 = opts.zip64 ?? false;
  const parts: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const f of files) {
    const name = Buffer.from(f.name, 'utf8');
    const payload = f.deflate ? deflateRawSync(f.data) : Buffer.from(f.data);
    const method = f.methodCode ?? (f.deflate ? 8 : 0);
    const crc = f.crc ?? crc32(f.data) >>> 0;
    const flags = 0x800 | (f.flags ?? 0);
    const size = f.data.length;
    const csize = payload.length;
    const localExtra = zip64 ? Buffer.concat([u16(1), u16(16), u64(size), u64(csize)]) : Buffer.alloc(0);
    const local = Buffer.concat([
      u32(0x04034b50),
      u16(zip64 ? 45 : 20),
      u16(flags),
      u16(method),
      u16(0),
      u16(0x21),
      u32(crc),
      u32(zip64 ? 0xffffffff : csize),
      u32(zip64 ? 0xffffffff : size),
      u16(name.length),
      u16(localExtra.length),
      name,
      localExtra,
    ]);
    const cdExtra = zip64
      ? Buffer.concat([u16(1), u16(24), u64(size), u64(csize), u64(offset)])
      : Buffer.alloc(0);
    central.push(
      Buffer.concat([
        u32(0x02014b50),
        u16(zip64 ? 45 : 20),
        u16(zip64 ? 45 : 20),
        u16(flags),
        u16(method),
        u16(0),
        u16(0x21),
        u32(crc),
        u32(zip64 ? 0xffffffff : csize),
        u32(zip64 ? 0xffffffff : size),
        u16(name.length),
        u16(cdExtra.length),
        u16(0),
        u16(0),
        u16(0),
        u32(0),
        u32(zip64 ? 0xffffffff : offset),
        name,
        cdExtra,
      ]),
    );
    parts.push(local, payload);
    offset += local.length + payload.length;
  }
  const cd = Buffer.concat(central);
  const cdOffset = offset;
  parts.push(cd);
  offset += cd.length;
  if (zip64) {
    const recordAt = offset;
    const record = Buffer.concat([
      u32(0x06064b50),
      u64(44),
      u16(45),
      u16(45),
      u32(0),
      u32(0),
      u64(files.length),
      u64(files.length),
      u64(cd.length),
      u64(cdOffset),
    ]);
    const locator = Buffer.concat([u32(0x07064b50), u32(0), u64(recordAt), u32(1)]);
    parts.push(record, locator);
  }
  const comment = Buffer.from(opts.comment ?? '', 'utf8');
  parts.push(
    Buffer.concat([
      u32(0x06054b50),
      u16(0),
      u16(0),
      u16(zip64 ? 0xffff : files.length),
      u16(zip64 ? 0xffff : files.length),
      u32(zip64 ? 0xffffffff : cd.length),
      u32(zip64 ? 0xffffffff : cdOffset),
      u16(comment.length),
      comment,
    ]),
  );
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------------------------------------
// pickle builder

/** Low-level pickle byte builder; each method appends one opcode (with its argument). */
export class PickleWriter {
  private readonly chunks: Buffer[] = [];

  /** Appends raw bytes. */
  raw(...bytes: number[]): this {
    this.chunks.push(Buffer.from(bytes));
    return this;
  }
  proto(n: number): this {
    return this.raw(0x80, n);
  }
  mark(): this {
    return this.raw(0x28);
  }
  stop(): this {
    return this.raw(0x2e);
  }
  emptyDict(): this {
    return this.raw(0x7d);
  }
  emptyTuple(): this {
    return this.raw(0x29);
  }
  tuple(): this {
    return this.raw(0x74);
  }
  setitems(): this {
    return this.raw(0x75);
  }
  reduce(): this {
    return this.raw(0x52);
  }
  binpersid(): this {
    return this.raw(0x51);
  }
  newfalse(): this {
    return this.raw(0x89);
  }
  none(): this {
    return this.raw(0x4e);
  }
  memoize(): this {
    return this.raw(0x94);
  }
  binput(i: number): this {
    return this.raw(0x71, i);
  }
  binget(i: number): this {
    return this.raw(0x68, i);
  }
  /** BINUNICODE (protocol 2 style) or SHORT_BINUNICODE (`short`). */
  str(s: string, short = false): this {
    const b = Buffer.from(s, 'utf8');
    this.chunks.push(
      short ? Buffer.from([0x8c, b.length]) : Buffer.concat([Buffer.from([0x58]), u32(b.length)]),
    );
    this.chunks.push(b);
    return this;
  }
  /** Smallest of BININT1 / BININT2 / BININT / LONG1 for a non-negative int. */
  int(n: number): this {
    if (n < 0x100) return this.raw(0x4b, n);
    if (n < 0x10000) return this.raw(0x4d, n & 0xff, n >> 8);
    if (n < 0x80000000) {
      this.chunks.push(Buffer.from([0x4a]), u32(n));
      return this;
    }
    const bytes: number[] = [];
    let v = BigInt(n);
    while (v > 0n) {
      bytes.push(Number(v & 0xffn));
      v >>= 8n;
    }
    if ((bytes[bytes.length - 1]! & 0x80) !== 0) bytes.push(0);
    return this.raw(0x8a, bytes.length, ...bytes);
  }
  /** GLOBAL ('c', text) or STACK_GLOBAL (protocol 4). */
  global(module: string, name: string, stack = false): this {
    if (stack) return this.str(module, true).str(name, true).raw(0x93);
    this.chunks.push(Buffer.from(`c${module}\n${name}\n`, 'latin1'));
    return this;
  }
  /** A tuple of ints via TUPLE1/2/3 or MARK … TUPLE. */
  intTuple(xs: readonly number[]): this {
    if (xs.length === 0) return this.emptyTuple();
    if (xs.length > 3) this.mark();
    for (const x of xs) this.int(x);
    return xs.length > 3 ? this.tuple() : this.raw(0x84 + xs.length);
  }
  bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

export type StorageType =
  | 'FloatStorage'
  | 'HalfStorage'
  | 'BFloat16Storage'
  | 'DoubleStorage'
  | 'LongStorage'
  | 'IntStorage';

export interface TensorSpec {
  readonly name: string;
  readonly storageType: StorageType;
  readonly key: string;
  /** Elements in the storage (as torch records it). */
  readonly numel: number;
  readonly offset?: number;
  readonly shape: readonly number[];
  readonly stride: readonly number[];
}

export interface TorchPickleOptions {
  /** 2 (GLOBAL, BINUNICODE, BINPUT — what torch.save writes) or 4 (FRAME, STACK_GLOBAL, MEMOIZE). */
  readonly protocol?: 2 | 4;
  /** Top level as collections.OrderedDict() (REDUCE) with a BUILD of `_metadata`-like state. */
  readonly orderedDict?: boolean;
}

/** A state-dict pickle laid out the way torch.save writes it. */
export function torchStateDictPickle(tensors: readonly TensorSpec[], opts: TorchPickleOptions = {}): Buffer {
  const p4 = opts.protocol === 4;
  const w = new PickleWriter();
  w.proto(opts.protocol ?? 2);
  if (opts.orderedDict) w.global('collections', 'OrderedDict', p4).emptyTuple().reduce();
  else w.emptyDict();
  w.mark();
  for (const t of tensors) {
    w.str(t.name, p4);
    w.global('torch._utils', '_rebuild_tensor_v2', p4);
    w.mark();
    w.mark().str('storage', p4).global('torch', t.storageType, p4).str(t.key, p4).str('cpu', p4).int(t.numel);
    w.tuple().binpersid();
    w.int(t.offset ?? 0)
      .intTuple(t.shape)
      .intTuple(t.stride)
      .newfalse();
    w.global('collections', 'OrderedDict', p4).emptyTuple().reduce();
    w.tuple().reduce();
    if (p4) w.memoize();
  }
  w.setitems();
  if (opts.orderedDict) {
    // BUILD with state {'_metadata': {}} as an nn.Module state_dict() pickles.
    w.emptyDict().str('_metadata', p4).emptyDict().raw(0x73).raw(0x62);
  }
  w.stop();
  const body = w.bytes();
  if (!p4) return body;
  // FRAME after PROTO, framing the rest.
  const frame = Buffer.concat([Buffer.from([0x95]), u64(body.length - 2)]);
  return Buffer.concat([body.subarray(0, 2), frame, body.subarray(2)]);
}

export interface CheckpointSpec {
  readonly tensors: readonly TensorSpec[];
  /** Storage key → raw little-endian bytes. */
  readonly storages: Readonly<Record<string, Uint8Array>>;
  readonly prefix?: string;
  readonly pickle?: Uint8Array;
  readonly pickleOptions?: TorchPickleOptions;
  readonly deflatePickle?: boolean;
  readonly zip64?: boolean;
}

/** A whole torch.save-style archive. */
export function buildCheckpoint(spec: CheckpointSpec): Buffer {
  const prefix = spec.prefix ?? 'archive';
  const files: ZipInput[] = [
    {
      name: `${prefix}/data.pkl`,
      data: spec.pickle ?? torchStateDictPickle(spec.tensors, spec.pickleOptions),
      deflate: spec.deflatePickle ?? false,
    },
    { name: `${prefix}/byteorder`, data: Buffer.from('little') },
    ...Object.entries(spec.storages).map(([key, data]) => ({ name: `${prefix}/data/${key}`, data })),
    { name: `${prefix}/version`, data: Buffer.from('3\n') },
    { name: `${prefix}/.data/serialization_id`, data: Buffer.from('1234567890\n') },
  ];
  return buildZip(files, { zip64: spec.zip64 ?? false });
}

export function writeTemp(dir: string, name: string, bytes: Uint8Array): string {
  const path = join(dir, name);
  writeFileSync(path, bytes);
  return path;
}

// ---------------------------------------------------------------------------------------------
// raw storage bytes

export function f32Bytes(xs: readonly number[]): Buffer {
  return Buffer.from(new Float32Array(xs).buffer);
}
export function f64Bytes(xs: readonly number[]): Buffer {
  return Buffer.from(new Float64Array(xs).buffer);
}
export function u16Bytes(bits: readonly number[]): Buffer {
  return Buffer.from(new Uint16Array(bits).buffer);
}
export function i64Bytes(xs: readonly number[]): Buffer {
  return Buffer.from(new BigInt64Array(xs.map(BigInt)).buffer);
}

/**
 * Reads `torch.save` zip checkpoints (`pytorch_model.bin`) without PyTorch and without loading
 * the whole file: the pickled state dict (`<prefix>/data.pkl`) is unpickled with a whitelist of
 * torch globals into tensor references, and tensor data is read on demand as byte ranges of the
 * stored `<prefix>/data/<key>` entries.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { DTYPE_BYTES, type DType, isFloatDType, toFloat32 } from '../util/dtype.ts';
import { fail, TokenFormerError } from '../util/errors.ts';
import { unpickle } from './pickle.ts';
import { type PickleValue, PyDict, PyGlobal, PyObject, PyTuple, pyTypeName } from './pickle-values.ts';
import { type ZipEntry, ZipReader } from './zip.ts';

export interface TorchTensorRef {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
  /** In elements. */
  readonly stride: readonly number[];
  /** The storage's key: its bytes are the archive entry `<prefix>/data/<key>`. */
  readonly storageKey: string;
  /** In elements. */
  readonly storageOffset: number;
}

/** torch storage class name → element type. */
const STORAGE_DTYPES: Readonly<Record<string, DType>> = {
  FloatStorage: 'F32',
  HalfStorage: 'F16',
  BFloat16Storage: 'BF16',
  DoubleStorage: 'F64',
  LongStorage: 'I64',
  IntStorage: 'I32',
  ShortStorage: 'I16',
  CharStorage: 'I8',
  ByteStorage: 'U8',
  BoolStorage: 'BOOL',
};

class StorageValue extends PyObject {
  constructor(
    readonly key: string,
    readonly dtype: DType,
    readonly numel: number,
  ) {
    super('torch storage');
  }
}

class TensorValue extends PyObject {
  constructor(
    readonly dtype: DType,
    readonly shape: readonly number[],
    readonly stride: readonly number[],
    readonly storage: StorageValue,
    readonly storageOffset: number,
  ) {
    super('torch.Tensor');
  }
  override setState(): void {
    // Tensor subclass state (from _rebuild_parameter_with_state etc.) carries nothing we need.
  }
}

function product(xs: readonly number[]): number {
  let p = 1;
  for (const x of xs) p *= x;
  return p;
}

function isContiguous(shape: readonly number[], stride: readonly number[]): boolean {
  let expected = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    if (shape[d] !== 1 && stride[d] !== expected) return false;
    expected *= shape[d]!;
  }
  return true;
}

/** Largest element index (relative to the storage offset) a non-empty view touches. */
function span(shape: readonly number[], stride: readonly number[]): number {
  let s = 0;
  for (let d = 0; d < shape.length; d++) s += (shape[d]! - 1) * stride[d]!;
  return s;
}

/** Converts raw little-endian bytes (fresh, byteOffset 0) of any supported dtype to float32. */
function bytesToF32(dtype: DType, bytes: Buffer): Float32Array {
  const n = bytes.byteLength / DTYPE_BYTES[dtype];
  if (dtype === 'F32' && bytes.byteOffset % 4 === 0)
    return new Float32Array(bytes.buffer, bytes.byteOffset, n);
  if (isFloatDType(dtype)) return toFloat32(dtype, bytes);
  const b = bytes.byteOffset % 8 === 0 ? bytes : Buffer.from(bytes);
  switch (dtype) {
    case 'I64': {
      const src = new BigInt64Array(b.buffer, b.byteOffset, n);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = Number(src[i]!);
      return out;
    }
    case 'I32':
      return Float32Array.from(new Int32Array(b.buffer, b.byteOffset, n));
    case 'I16':
      return Float32Array.from(new Int16Array(b.buffer, b.byteOffset, n));
    case 'I8':
      return Float32Array.from(new Int8Array(b.buffer, b.byteOffset, n));
    default:
      return Float32Array.from(new Uint8Array(b.buffer, b.byteOffset, n)); // U8, BOOL
  }
}

/** Copies the strided view (`shape`, `stride`, relative to src[0]) into a C-order array. */
function gather(src: Float32Array, shape: readonly number[], stride: readonly number[]): Float32Array {
  const numel = product(shape);
  const out = new Float32Array(numel);
  const nd = shape.length;
  const last = nd - 1;
  const n = shape[last]!;
  const s = stride[last]!;
  const idx = new Array<number>(nd).fill(0);
  let base = 0;
  let o = 0;
  for (;;) {
    for (let i = 0, p = base; i < n; i++, p += s) out[o++] = src[p]!;
    let d = last - 1;
    for (; d >= 0; d--) {
      base += stride[d]!;
      if (++idx[d]! < shape[d]!) break;
      base -= stride[d]! * shape[d]!;
      idx[d] = 0;
    }
    if (d < 0) return out;
  }
}

export class TorchCheckpoint {
  readonly path: string;
  /** Archive folder holding data.pkl, e.g. 'pytorch_model' or 'archive'. */
  readonly prefix: string;
  readonly tensors: ReadonlyMap<string, TorchTensorRef>;
  private readonly zip: ZipReader;

  private constructor(path: string, zip: ZipReader, prefix: string, tensors: Map<string, TorchTensorRef>) {
    this.path = path;
    this.zip = zip;
    this.prefix = prefix;
    this.tensors = tensors;
  }

  static open(path: string): TorchCheckpoint {
    let zip: ZipReader;
    try {
      zip = ZipReader.open(path);
    } catch (err) {
      if (err instanceof TokenFormerError && err.code === 'TF_ERR_BAD_ZIP' && looksLikeLegacyTorch(path)) {
        fail(
          'TF_ERR_BAD_CHECKPOINT',
          `${path}: this is a legacy (pre-1.6, non-zip) torch.save file, which is not supported; ` +
            're-save it with a recent PyTorch (torch.save(torch.load(f), f))',
          err,
        );
      }
      throw err;
    }
    try {
      return TorchCheckpoint.load(path, zip);
    } catch (err) {
      zip.close();
      throw err;
    }
  }

  private static load(path: string, zip: ZipReader): TorchCheckpoint {
    const pkls = [...zip.entries.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n));
    if (pkls.length !== 1) {
      fail(
        'TF_ERR_BAD_CHECKPOINT',
        pkls.length === 0
          ? `${path}: not a torch.save checkpoint: the zip archive has no '<name>/data.pkl' entry`
          : `${path}: ambiguous torch.save checkpoint: several data.pkl entries (${pkls.join(', ')})`,
      );
    }
    const pklName = pkls[0]!;
    const prefix = pklName.slice(0, -'/data.pkl'.length);
    const byteorder = zip.entries.get(`${prefix}/byteorder`);
    if (byteorder !== undefined) {
      const order = zip.read(byteorder.name).toString('latin1').trim();
      if (order !== 'little') {
        fail(
          'TF_ERR_BAD_CHECKPOINT',
          `${path}: storages are '${order}'-endian; only little-endian is supported`,
        );
      }
    }

    const storages = new Map<string, StorageValue>();
    const root = unpickle(zip.read(pklName), {
      source: `${path}:${pklName}`,
      findClass: (module, name) => findTorchClass(path, module, name),
      persistentLoad: (pid) => persistentLoad(path, pid, storages),
    });

    const dict = selectStateDict(path, root);
    const tensors = new Map<string, TorchTensorRef>();
    for (const [key, value] of dict) {
      if (typeof key !== 'string') {
        fail('TF_ERR_BAD_CHECKPOINT', `${path}: state dict has a ${pyTypeName(key)} key; expected names`);
      }
      if (!(value instanceof TensorValue)) {
        fail(
          'TF_ERR_BAD_CHECKPOINT',
          `${path}: state dict entry '${key}' is a ${pyTypeName(value)}, not a tensor`,
        );
      }
      const storage = value.storage;
      const entry = storageEntry(path, zip, prefix, key, storage);
      const numel = product(value.shape);
      if (numel > 0) {
        const extent = value.storageOffset + span(value.shape, value.stride) + 1;
        if (extent > storage.numel) {
          fail(
            'TF_ERR_BAD_CHECKPOINT',
            `${path}: tensor '${key}' (shape [${value.shape.join(', ')}], stride [${value.stride.join(', ')}], ` +
              `storage offset ${value.storageOffset}) needs ${extent} elements but its storage '${storage.key}' ` +
              `(${entry.name}) holds only ${storage.numel}`,
          );
        }
      }
      tensors.set(key, {
        name: key,
        dtype: value.dtype,
        shape: value.shape,
        stride: value.stride,
        storageKey: storage.key,
        storageOffset: value.storageOffset,
      });
    }
    return new TorchCheckpoint(path, zip, prefix, tensors);
  }

  /** The reference for `name`; throws TF_ERR_NOT_FOUND if the checkpoint has no such tensor. */
  tensor(name: string): TorchTensorRef {
    const t = this.tensors.get(name);
    if (t === undefined) fail('TF_ERR_NOT_FOUND', `${this.path}: checkpoint has no tensor '${name}'`);
    return t;
  }

  /**
   * The tensor as a fresh C-order Float32Array. Reads only the byte range the tensor covers in its
   * storage; handles storage offsets and arbitrary (e.g. transposed) strides.
   */
  readF32(name: string): Float32Array {
    const t = this.tensor(name);
    const numel = product(t.shape);
    if (numel === 0) return new Float32Array(0);
    const item = DTYPE_BYTES[t.dtype];
    const entry = `${this.prefix}/data/${t.storageKey}`;
    if (isContiguous(t.shape, t.stride)) {
      return bytesToF32(t.dtype, this.zip.readRange(entry, t.storageOffset * item, numel * item));
    }
    const count = span(t.shape, t.stride) + 1;
    const src = bytesToF32(t.dtype, this.zip.readRange(entry, t.storageOffset * item, count * item));
    return gather(src, t.shape, t.stride);
  }

  close(): void {
    this.zip.close();
  }
}

function looksLikeLegacyTorch(path: string): boolean {
  // Legacy torch.save starts with a protocol-2 pickle of the magic number 0x1950a86a20f9469cfc6c.
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    const head = Buffer.alloc(4);
    const n = readSync(fd, head, 0, 4, 0);
    return n === 4 && head[0] === 0x80 && head[1] === 0x02 && head[2] === 0x8a && head[3] === 0x0a;
  } catch {
    return false;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

function storageEntry(
  path: string,
  zip: ZipReader,
  prefix: string,
  tensor: string,
  s: StorageValue,
): ZipEntry {
  const name = `${prefix}/data/${s.key}`;
  const entry = zip.entries.get(name);
  if (entry === undefined) {
    fail(
      'TF_ERR_BAD_CHECKPOINT',
      `${path}: tensor '${tensor}' uses storage '${s.key}', but the archive has no entry '${name}'`,
    );
  }
  if (entry.method !== 0) {
    fail(
      'TF_ERR_BAD_CHECKPOINT',
      `${path}: storage entry '${name}' is compressed (method ${entry.method}); torch.save stores storages uncompressed`,
    );
  }
  const bytes = s.numel * DTYPE_BYTES[s.dtype];
  if (entry.size !== bytes) {
    fail(
      'TF_ERR_BAD_CHECKPOINT',
      `${path}: storage entry '${name}' is ${entry.size} bytes, but the pickle declares ${s.numel} ${s.dtype} ` +
        `elements (${bytes} bytes)`,
    );
  }
  return entry;
}

function selectStateDict(path: string, root: PickleValue): PyDict {
  if (!(root instanceof PyDict)) {
    fail('TF_ERR_BAD_CHECKPOINT', `${path}: checkpoint holds a ${pyTypeName(root)}, expected a state dict`);
  }
  const allTensors = (d: PyDict): boolean => [...d.values()].every((v) => v instanceof TensorValue);
  if (allTensors(root)) return root;
  for (const key of ['state_dict', 'module', 'model']) {
    const inner = root.get(key);
    if (inner instanceof PyDict && inner.size > 0 && allTensors(inner)) return inner;
  }
  return root; // reported entry by entry
}

function isNonNegInt(v: PickleValue): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function intTuple(path: string, v: PickleValue, what: string): number[] {
  if (!(v instanceof PyTuple) || !v.items.every(isNonNegInt)) {
    fail(
      'TF_ERR_BAD_CHECKPOINT',
      `${path}: tensor ${what} must be a tuple of non-negative ints, got ${pyTypeName(v)}`,
    );
  }
  return v.items as number[];
}

function rebuildTensorV2(path: string, args: readonly PickleValue[]): PickleValue {
  // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
  if (args.length < 4)
    fail('TF_ERR_BAD_CHECKPOINT', `${path}: _rebuild_tensor_v2 called with ${args.length} args`);
  const [storage, offset, size, stride] = args as [PickleValue, PickleValue, PickleValue, PickleValue];
  if (!(storage instanceof StorageValue)) {
    fail(
      'TF_ERR_BAD_CHECKPOINT',
      `${path}: _rebuild_tensor_v2 got a ${pyTypeName(storage)} instead of a storage`,
    );
  }
  if (!isNonNegInt(offset)) {
    fail(
      'TF_ERR_BAD_CHECKPOINT',
      `${path}: tensor storage offset must be a non-negative int, got ${String(offset)}`,
    );
  }
  const shape = intTuple(path, size, 'size');
  const strides = intTuple(path, stride, 'stride');
  if (shape.length !== strides.length) {
    fail(
      'TF_ERR_BAD_CHECKPOINT',
      `${path}: tensor size [${shape.join(', ')}] and stride [${strides.join(', ')}] differ in rank`,
    );
  }
  return new TensorValue(storage.dtype, shape, strides, storage, offset);
}

function findTorchClass(path: string, module: string, name: string): PickleValue | undefined {
  const g = (call?: (args: readonly PickleValue[]) => PickleValue) => new PyGlobal(module, name, call);
  if (module === 'collections' && name === 'OrderedDict') {
    return g((args) => {
      if (args.length !== 0) throw new Error('OrderedDict with constructor arguments is not supported');
      const d = new PyDict();
      d.pyClass = 'collections.OrderedDict';
      return d;
    });
  }
  if (module === 'torch' && Object.hasOwn(STORAGE_DTYPES, name)) return g();
  if (module === 'torch' && name === 'Tensor') return g();
  if (module === 'torch.nn.parameter' && name === 'Parameter') return g();
  if (module === 'torch._utils') {
    if (name === '_rebuild_tensor_v2') return g((args) => rebuildTensorV2(path, args));
    if (name === '_rebuild_parameter' || name === '_rebuild_parameter_with_state') {
      // (data, requires_grad, backward_hooks[, state]) → the data tensor
      return g((args) => {
        if (!(args[0] instanceof TensorValue)) throw new Error(`${name} expects a tensor`);
        return args[0];
      });
    }
  }
  if (module === 'torch._tensor' && name === '_rebuild_from_type_v2') {
    // (func, new_type, args, state): rebuild with func(*args); the Python subclass is dropped.
    return g((args) => {
      const [func, , inner] = args;
      if (!(func instanceof PyGlobal) || func.call === undefined || !(inner instanceof PyTuple)) {
        throw new Error('_rebuild_from_type_v2 with unexpected arguments');
      }
      return func.call(inner.items);
    });
  }
  return undefined;
}

function persistentLoad(path: string, pid: PickleValue, storages: Map<string, StorageValue>): PickleValue {
  // ('storage', torch.<Type>Storage, key, location, numel)
  const items = pid instanceof PyTuple ? pid.items : [];
  const [tag, type, key, , numel] = items;
  if (items.length !== 5 || tag !== 'storage') {
    fail(
      'TF_ERR_BAD_CHECKPOINT',
      `${path}: unsupported persistent id in data.pkl (expected a 'storage' tuple)`,
    );
  }
  if (!(type instanceof PyGlobal) || type.module !== 'torch' || !Object.hasOwn(STORAGE_DTYPES, type.name)) {
    fail('TF_ERR_BAD_CHECKPOINT', `${path}: unsupported storage type ${pyTypeName(type ?? null)}`);
  }
  if (typeof key !== 'string' || !/^[A-Za-z0-9_.-]+$/.test(key)) {
    fail('TF_ERR_BAD_CHECKPOINT', `${path}: invalid storage key ${JSON.stringify(key)}`);
  }
  if (numel === undefined || !isNonNegInt(numel)) {
    fail('TF_ERR_BAD_CHECKPOINT', `${path}: storage '${key}' has invalid element count ${String(numel)}`);
  }
  const dtype = STORAGE_DTYPES[type.name]!;
  const prev = storages.get(key);
  if (prev !== undefined) {
    if (prev.dtype !== dtype || prev.numel !== numel) {
      fail(
        'TF_ERR_BAD_CHECKPOINT',
        `${path}: storage '${key}' is declared both as ${prev.numel} ${prev.dtype} and ${numel} ${dtype} elements`,
      );
    }
    return prev;
  }
  const s = new StorageValue(key, dtype, numel);
  storages.set(key, s);
  return s;
}

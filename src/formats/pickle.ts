/**
 * A small, safe pickle virtual machine: enough of protocols 2–5 to load `torch.save` state dicts.
 *
 * Nothing is ever executed. A GLOBAL / STACK_GLOBAL opcode is resolved through the caller's
 * `findClass`, which returns a value for whitelisted names only; REDUCE / NEWOBJ can call only a
 * {@link PyGlobal} that the caller gave an implementation. Unknown opcodes are rejected.
 */
import { fail, TokenFormerError } from '../util/errors.ts';

/** A Python tuple (immutable; distinct from a list, which is a plain array). */
export class PyTuple {
  constructor(readonly items: readonly PickleValue[]) {}
}

/** A Python dict / OrderedDict, in insertion order. `attributes` holds state set by BUILD. */
export class PyDict extends Map<PickleValue, PickleValue> {
  /** The class the dict was created from, e.g. 'collections.OrderedDict'; 'dict' for `{}`. */
  pyClass = 'dict';
  /** State applied by BUILD (OrderedDict's `__dict__`, e.g. a state dict's `_metadata`). */
  attributes: PickleValue | undefined = undefined;
}

/** A global (class or function) resolved by `findClass`; callable only when `call` is given. */
export class PyGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
    readonly call?: (args: readonly PickleValue[]) => PickleValue,
  ) {}
  get qualifiedName(): string {
    return `${this.module}.${this.name}`;
  }
}

/** Base for caller-defined objects produced by globals or persistent loads. */
export class PyObject {
  constructor(readonly typeName: string) {}
  /** Applies BUILD state; objects that do not support it reject it. */
  setState(_state: PickleValue): void {
    throw new Error(`cannot apply BUILD state to a ${this.typeName} object`);
  }
}

export type PickleValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | PickleValue[]
  | PyTuple
  | PyDict
  | PyGlobal
  | PyObject;

export interface UnpickleOptions {
  /** Names the data in error messages, e.g. `model.bin:archive/data.pkl`. */
  readonly source: string;
  /** Resolves `module.name`; return undefined for anything not whitelisted. */
  findClass(module: string, name: string): PickleValue | undefined;
  /** Handles BINPERSID; when absent, persistent ids are rejected. */
  persistentLoad?(pid: PickleValue): PickleValue;
}

/** A short Python-ish type name for messages. */
export function pyTypeName(v: PickleValue): string {
  if (v === null) return 'None';
  if (typeof v === 'boolean') return 'bool';
  if (typeof v === 'number') return Number.isInteger(v) ? 'int' : 'float';
  if (typeof v === 'bigint') return 'int';
  if (typeof v === 'string') return 'str';
  if (v instanceof Uint8Array) return 'bytes';
  if (Array.isArray(v)) return 'list';
  if (v instanceof PyTuple) return 'tuple';
  if (v instanceof PyDict) return v.pyClass;
  if (v instanceof PyGlobal) return `global ${v.qualifiedName}`;
  return v.typeName;
}

const MAX_PROTOCOL = 5;

const OP_NAMES: ReadonlyMap<number, string> = new Map([
  [0x80, 'PROTO'],
  [0x95, 'FRAME'],
  [0x2e, 'STOP'],
  [0x28, 'MARK'],
  [0x7d, 'EMPTY_DICT'],
  [0x5d, 'EMPTY_LIST'],
  [0x29, 'EMPTY_TUPLE'],
  [0x74, 'TUPLE'],
  [0x85, 'TUPLE1'],
  [0x86, 'TUPLE2'],
  [0x87, 'TUPLE3'],
  [0x64, 'DICT'],
  [0x6c, 'LIST'],
  [0x73, 'SETITEM'],
  [0x75, 'SETITEMS'],
  [0x61, 'APPEND'],
  [0x65, 'APPENDS'],
  [0x58, 'BINUNICODE'],
  [0x8c, 'SHORT_BINUNICODE'],
  [0x8d, 'BINUNICODE8'],
  [0x55, 'SHORT_BINSTRING'],
  [0x54, 'BINSTRING'],
  [0x42, 'BINBYTES'],
  [0x43, 'SHORT_BINBYTES'],
  [0x8e, 'BINBYTES8'],
  [0x4a, 'BININT'],
  [0x4b, 'BININT1'],
  [0x4d, 'BININT2'],
  [0x8a, 'LONG1'],
  [0x8b, 'LONG4'],
  [0x47, 'BINFLOAT'],
  [0x4e, 'NONE'],
  [0x88, 'NEWTRUE'],
  [0x89, 'NEWFALSE'],
  [0x63, 'GLOBAL'],
  [0x93, 'STACK_GLOBAL'],
  [0x52, 'REDUCE'],
  [0x62, 'BUILD'],
  [0x81, 'NEWOBJ'],
  [0x71, 'BINPUT'],
  [0x72, 'LONG_BINPUT'],
  [0x94, 'MEMOIZE'],
  [0x68, 'BINGET'],
  [0x6a, 'LONG_BINGET'],
  [0x51, 'BINPERSID'],
  [0x30, 'POP'],
  [0x31, 'POP_MARK'],
  [0x32, 'DUP'],
]);

function opLabel(op: number): string {
  const ch = op >= 0x20 && op < 0x7f ? ` ('${String.fromCharCode(op)}')` : '';
  return `0x${op.toString(16).padStart(2, '0')}${ch}`;
}

/** Decodes a little-endian two's-complement integer (LONG1 / LONG4 payload). */
function decodeLong(bytes: Uint8Array): number | bigint {
  if (bytes.length === 0) return 0;
  let v = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i]!);
  if ((bytes[bytes.length - 1]! & 0x80) !== 0) v -= 1n << BigInt(8 * bytes.length);
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

/** Runs the pickle in `data` and returns the object at STOP. Throws TF_ERR_BAD_PICKLE on bad input. */
export function unpickle(data: Uint8Array, options: UnpickleOptions): PickleValue {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const { source } = options;
  let pos = 0;
  let opPos = 0;
  let op = 0;
  let stack: PickleValue[] = [];
  const metastack: PickleValue[][] = [];
  const memo = new Map<number, PickleValue>();

  const where = (): string => `at byte ${opPos} in ${source}`;
  const bad: (msg: string) => never = (msg) => fail('TF_ERR_BAD_PICKLE', `${msg} ${where()}`);
  const opName = (): string => OP_NAMES.get(op) ?? opLabel(op);

  const need = (n: number): void => {
    if (pos + n > buf.length) {
      bad(`pickle data is truncated: ${opName()} needs ${n} more bytes but only ${buf.length - pos} remain`);
    }
  };
  const readBytes = (n: number): Buffer => {
    need(n);
    const out = buf.subarray(pos, pos + n);
    pos += n;
    return out;
  };
  const readU8 = (): number => {
    need(1);
    return buf[pos++]!;
  };
  const readU16 = (): number => {
    need(2);
    const v = buf.readUInt16LE(pos);
    pos += 2;
    return v;
  };
  const readU32 = (): number => {
    need(4);
    const v = buf.readUInt32LE(pos);
    pos += 4;
    return v;
  };
  const readI32 = (): number => {
    need(4);
    const v = buf.readInt32LE(pos);
    pos += 4;
    return v;
  };
  const readU64 = (): number => {
    need(8);
    const v = buf.readBigUInt64LE(pos);
    pos += 8;
    if (v > BigInt(buf.length)) bad(`${opName()} length ${v} exceeds the pickle size`);
    return Number(v);
  };
  const readLine = (): string => {
    const end = buf.indexOf(0x0a, pos);
    if (end < 0) bad(`pickle data is truncated: ${opName()} argument has no terminating newline`);
    const s = buf.toString('utf8', pos, end);
    pos = end + 1;
    return s;
  };

  const pop = (): PickleValue => {
    if (stack.length === 0) bad(`pickle stack underflow in ${opName()}`);
    return stack.pop()!;
  };
  const top = (): PickleValue => {
    if (stack.length === 0) bad(`pickle stack underflow in ${opName()}`);
    return stack[stack.length - 1]!;
  };
  const popMark = (): PickleValue[] => {
    const items = stack;
    const prev = metastack.pop();
    if (prev === undefined) bad(`${opName()} without a preceding MARK`);
    stack = prev;
    return items;
  };
  /** Runs caller code; wraps plain errors with the position, passes TokenFormerErrors through. */
  const guarded = <T>(fn: () => T): T => {
    try {
      return fn();
    } catch (err) {
      if (err instanceof TokenFormerError) throw err;
      return fail('TF_ERR_BAD_PICKLE', `${(err as Error).message} ${where()}`, err);
    }
  };
  const resolveGlobal = (module: string, name: string): PickleValue => {
    const v = guarded(() => options.findClass(module, name));
    if (v === undefined) bad(`pickle references unsupported global ${module}.${name}`);
    return v;
  };
  const callGlobal = (callee: PickleValue, args: PickleValue): PickleValue => {
    if (!(callee instanceof PyGlobal)) return bad(`${opName()} on a non-callable ${pyTypeName(callee)}`);
    if (!(args instanceof PyTuple))
      return bad(`${opName()} arguments must be a tuple, got ${pyTypeName(args)}`);
    const call = callee.call;
    if (call === undefined) return bad(`pickle calls ${callee.qualifiedName}, which is not supported`);
    return guarded(() => call(args.items));
  };
  const setItems = (dict: PickleValue, items: PickleValue[]): void => {
    if (!(dict instanceof PyDict)) bad(`${opName()} on a ${pyTypeName(dict)}, expected a dict`);
    if (items.length % 2 !== 0) bad(`${opName()} with an odd number of items`);
    for (let i = 0; i < items.length; i += 2) dict.set(items[i]!, items[i + 1]!);
  };
  const appendItems = (list: PickleValue, items: PickleValue[]): void => {
    if (!Array.isArray(list)) bad(`${opName()} on a ${pyTypeName(list)}, expected a list`);
    list.push(...items);
  };
  const memoGet = (idx: number): void => {
    if (!memo.has(idx)) bad(`${opName()} of missing memo entry ${idx}`);
    stack.push(memo.get(idx)!);
  };

  while (pos < buf.length) {
    opPos = pos;
    op = buf[pos++]!;
    switch (op) {
      case 0x80: {
        const proto = readU8();
        if (proto > MAX_PROTOCOL) bad(`unsupported pickle protocol ${proto}`);
        break;
      }
      case 0x95:
        readU64(); // FRAME: a length hint only
        break;
      case 0x2e: {
        const result = pop();
        return result;
      }
      case 0x28:
        metastack.push(stack);
        stack = [];
        break;
      case 0x7d:
        stack.push(new PyDict());
        break;
      case 0x5d:
        stack.push([]);
        break;
      case 0x29:
        stack.push(new PyTuple([]));
        break;
      case 0x74: {
        const items = popMark(); // before reading `stack`: popMark replaces it
        stack.push(new PyTuple(items));
        break;
      }
      case 0x85: {
        const a = pop();
        stack.push(new PyTuple([a]));
        break;
      }
      case 0x86: {
        const b = pop();
        const a = pop();
        stack.push(new PyTuple([a, b]));
        break;
      }
      case 0x87: {
        const c = pop();
        const b = pop();
        const a = pop();
        stack.push(new PyTuple([a, b, c]));
        break;
      }
      case 0x64: {
        const d = new PyDict();
        setItems(d, popMark());
        stack.push(d);
        break;
      }
      case 0x6c: {
        const items = popMark();
        stack.push(items);
        break;
      }
      case 0x73: {
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case 0x75: {
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case 0x61: {
        const v = pop();
        appendItems(top(), [v]);
        break;
      }
      case 0x65: {
        const items = popMark();
        appendItems(top(), items);
        break;
      }
      case 0x58:
        stack.push(readBytes(readU32()).toString('utf8'));
        break;
      case 0x8c:
        stack.push(readBytes(readU8()).toString('utf8'));
        break;
      case 0x8d:
        stack.push(readBytes(readU64()).toString('utf8'));
        break;
      case 0x55:
        stack.push(readBytes(readU8()).toString('latin1'));
        break;
      case 0x54: {
        const n = readI32();
        if (n < 0) bad('BINSTRING with a negative length');
        stack.push(readBytes(n).toString('latin1'));
        break;
      }
      case 0x42:
        stack.push(Uint8Array.from(readBytes(readU32())));
        break;
      case 0x43:
        stack.push(Uint8Array.from(readBytes(readU8())));
        break;
      case 0x8e:
        stack.push(Uint8Array.from(readBytes(readU64())));
        break;
      case 0x4a:
        stack.push(readI32());
        break;
      case 0x4b:
        stack.push(readU8());
        break;
      case 0x4d:
        stack.push(readU16());
        break;
      case 0x8a:
        stack.push(decodeLong(readBytes(readU8())));
        break;
      case 0x8b: {
        const n = readI32();
        if (n < 0) bad('LONG4 with a negative length');
        stack.push(decodeLong(readBytes(n)));
        break;
      }
      case 0x47: {
        need(8);
        stack.push(buf.readDoubleBE(pos));
        pos += 8;
        break;
      }
      case 0x4e:
        stack.push(null);
        break;
      case 0x88:
        stack.push(true);
        break;
      case 0x89:
        stack.push(false);
        break;
      case 0x63: {
        const module = readLine();
        const name = readLine();
        stack.push(resolveGlobal(module, name));
        break;
      }
      case 0x93: {
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') {
          bad(`STACK_GLOBAL needs two strings, got ${pyTypeName(module)} and ${pyTypeName(name)}`);
        }
        stack.push(resolveGlobal(module, name));
        break;
      }
      case 0x52:
      case 0x81: {
        const args = pop();
        const callee = pop();
        stack.push(callGlobal(callee, args));
        break;
      }
      case 0x62: {
        const state = pop();
        const obj = top();
        if (obj instanceof PyDict) obj.attributes = state;
        else if (obj instanceof PyObject) guarded(() => obj.setState(state));
        else bad(`BUILD on a ${pyTypeName(obj)} is not supported`);
        break;
      }
      case 0x71:
        memo.set(readU8(), top());
        break;
      case 0x72:
        memo.set(readU32(), top());
        break;
      case 0x94:
        memo.set(memo.size, top());
        break;
      case 0x68:
        memoGet(readU8());
        break;
      case 0x6a:
        memoGet(readU32());
        break;
      case 0x51: {
        const pid = pop();
        const load = options.persistentLoad;
        if (load === undefined) bad('pickle uses a persistent id, which is not supported here');
        stack.push(guarded(() => load(pid)));
        break;
      }
      case 0x30:
        if (stack.length > 0) stack.pop();
        else popMark();
        break;
      case 0x31:
        popMark();
        break;
      case 0x32:
        stack.push(top());
        break;
      default:
        bad(`unknown pickle opcode ${opLabel(op)}`);
    }
  }
  opPos = pos;
  return bad('pickle data ends without a STOP opcode');
}

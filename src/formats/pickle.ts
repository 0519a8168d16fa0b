/**
 * A small, safe pickle virtual machine: enough of protocols 2–5 to load `torch.save` state dicts.
 *
 * Nothing is ever executed. A GLOBAL / STACK_GLOBAL opcode is resolved through the caller's
 * `findClass`, which returns a value for whitelisted names only; REDUCE / NEWOBJ can call only a
 * {@link PyGlobal} that the caller gave an implementation. Unknown opcodes are rejected.
 */
import { fail, TokenFormerError } from '../util/errors.ts';
import { OP, OP_NAMES, opLabel } from './pickle-opcodes.ts';
import { type PickleValue, PyDict, PyGlobal, PyObject, PyTuple, pyTypeName } from './pickle-values.ts';

export interface UnpickleOptions {
  /** Names the data in error messages, e.g. `model.bin:archive/data.pkl`. */
  readonly source: string;
  /** Resolves `module.name`; return undefined for anything not whitelisted. */
  findClass(module: string, name: string): PickleValue | undefined;
  /** Handles BINPERSID; when absent, persistent ids are rejected. */
  persistentLoad?(pid: PickleValue): PickleValue;
}

const MAX_PROTOCOL = 5;

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
      case OP.PROTO: {
        const proto = readU8();
        if (proto > MAX_PROTOCOL) bad(`unsupported pickle protocol ${proto}`);
        break;
      }
      case OP.FRAME:
        readU64(); // a length hint only
        break;
      case OP.STOP: {
        const result = pop();
        return result;
      }
      case OP.MARK:
        metastack.push(stack);
        stack = [];
        break;
      case OP.EMPTY_DICT:
        stack.push(new PyDict());
        break;
      case OP.EMPTY_LIST:
        stack.push([]);
        break;
      case OP.EMPTY_TUPLE:
        stack.push(new PyTuple([]));
        break;
      case OP.TUPLE: {
        const items = popMark(); // before reading `stack`: popMark replaces it
        stack.push(new PyTuple(items));
        break;
      }
      case OP.TUPLE1: {
        const a = pop();
        stack.push(new PyTuple([a]));
        break;
      }
      case OP.TUPLE2: {
        const b = pop();
        const a = pop();
        stack.push(new PyTuple([a, b]));
        break;
      }
      case OP.TUPLE3: {
        const c = pop();
        const b = pop();
        const a = pop();
        stack.push(new PyTuple([a, b, c]));
        break;
      }
      case OP.DICT: {
        const d = new PyDict();
        setItems(d, popMark());
        stack.push(d);
        break;
      }
      case OP.LIST: {
        const items = popMark();
        stack.push(items);
        break;
      }
      case OP.SETITEM: {
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case OP.SETITEMS: {
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case OP.APPEND: {
        const v = pop();
        appendItems(top(), [v]);
        break;
      }
      case OP.APPENDS: {
        const items = popMark();
        appendItems(top(), items);
        break;
      }
      case OP.BINUNICODE:
        stack.push(readBytes(readU32()).toString('utf8'));
        break;
      case OP.SHORT_BINUNICODE:
        stack.push(readBytes(readU8()).toString('utf8'));
        break;
      case OP.BINUNICODE8:
        stack.push(readBytes(readU64()).toString('utf8'));
        break;
      case OP.SHORT_BINSTRING:
        stack.push(readBytes(readU8()).toString('latin1'));
        break;
      case OP.BINSTRING: {
        const n = readI32();
        if (n < 0) bad('BINSTRING with a negative length');
        stack.push(readBytes(n).toString('latin1'));
        break;
      }
      case OP.BINBYTES:
        stack.push(Uint8Array.from(readBytes(readU32())));
        break;
      case OP.SHORT_BINBYTES:
        stack.push(Uint8Array.from(readBytes(readU8())));
        break;
      case OP.BINBYTES8:
        stack.push(Uint8Array.from(readBytes(readU64())));
        break;
      case OP.BININT:
        stack.push(readI32());
        break;
      case OP.BININT1:
        stack.push(readU8());
        break;
      case OP.BININT2:
        stack.push(readU16());
        break;
      case OP.LONG1:
        stack.push(decodeLong(readBytes(readU8())));
        break;
      case OP.LONG4: {
        const n = readI32();
        if (n < 0) bad('LONG4 with a negative length');
        stack.push(decodeLong(readBytes(n)));
        break;
      }
      case OP.BINFLOAT: {
        need(8);
        stack.push(buf.readDoubleBE(pos));
        pos += 8;
        break;
      }
      case OP.NONE:
        stack.push(null);
        break;
      case OP.NEWTRUE:
        stack.push(true);
        break;
      case OP.NEWFALSE:
        stack.push(false);
        break;
      case OP.GLOBAL: {
        const module = readLine();
        const name = readLine();
        stack.push(resolveGlobal(module, name));
        break;
      }
      case OP.STACK_GLOBAL: {
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') {
          bad(`STACK_GLOBAL needs two strings, got ${pyTypeName(module)} and ${pyTypeName(name)}`);
        }
        stack.push(resolveGlobal(module, name));
        break;
      }
      case OP.REDUCE:
      case OP.NEWOBJ: {
        const args = pop();
        const callee = pop();
        stack.push(callGlobal(callee, args));
        break;
      }
      case OP.BUILD: {
        const state = pop();
        const obj = top();
        if (obj instanceof PyDict) obj.attributes = state;
        else if (obj instanceof PyObject) guarded(() => obj.setState(state));
        else bad(`BUILD on a ${pyTypeName(obj)} is not supported`);
        break;
      }
      case OP.BINPUT:
        memo.set(readU8(), top());
        break;
      case OP.LONG_BINPUT:
        memo.set(readU32(), top());
        break;
      case OP.MEMOIZE:
        memo.set(memo.size, top());
        break;
      case OP.BINGET:
        memoGet(readU8());
        break;
      case OP.LONG_BINGET:
        memoGet(readU32());
        break;
      case OP.BINPERSID: {
        const pid = pop();
        const load = options.persistentLoad;
        if (load === undefined) bad('pickle uses a persistent id, which is not supported here');
        stack.push(guarded(() => load(pid)));
        break;
      }
      case OP.POP:
        if (stack.length > 0) stack.pop();
        else popMark();
        break;
      case OP.POP_MARK:
        popMark();
        break;
      case OP.DUP:
        stack.push(top());
        break;
      default:
        bad(`unknown pickle opcode ${opLabel(op)}`);
    }
  }
  opPos = pos;
  return bad('pickle data ends without a STOP opcode');
}

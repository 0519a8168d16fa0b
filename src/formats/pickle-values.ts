/**
 * The Python values an unpickled object is made of: tuples, dicts, resolved globals and
 * caller-defined objects (lists, strings, numbers and bytes are plain JS values).
 */

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

/** The pickle opcodes the unpickler accepts (protocols 2–5), named as in CPython's `pickle.py`. */
export const OP = {
  PROTO: 0x80,
  FRAME: 0x95,
  STOP: 0x2e,
  MARK: 0x28,
  EMPTY_DICT: 0x7d,
  EMPTY_LIST: 0x5d,
  EMPTY_TUPLE: 0x29,
  TUPLE: 0x74,
  TUPLE1: 0x85,
  TUPLE2: 0x86,
  TUPLE3: 0x87,
  DICT: 0x64,
  LIST: 0x6c,
  SETITEM: 0x73,
  SETITEMS: 0x75,
  APPEND: 0x61,
  APPENDS: 0x65,
  BINUNICODE: 0x58,
  SHORT_BINUNICODE: 0x8c,
  BINUNICODE8: 0x8d,
  SHORT_BINSTRING: 0x55,
  BINSTRING: 0x54,
  BINBYTES: 0x42,
  SHORT_BINBYTES: 0x43,
  BINBYTES8: 0x8e,
  BININT: 0x4a,
  BININT1: 0x4b,
  BININT2: 0x4d,
  LONG1: 0x8a,
  LONG4: 0x8b,
  BINFLOAT: 0x47,
  NONE: 0x4e,
  NEWTRUE: 0x88,
  NEWFALSE: 0x89,
  GLOBAL: 0x63,
  STACK_GLOBAL: 0x93,
  REDUCE: 0x52,
  BUILD: 0x62,
  NEWOBJ: 0x81,
  BINPUT: 0x71,
  LONG_BINPUT: 0x72,
  MEMOIZE: 0x94,
  BINGET: 0x68,
  LONG_BINGET: 0x6a,
  BINPERSID: 0x51,
  POP: 0x30,
  POP_MARK: 0x31,
  DUP: 0x32,
} as const;

/** Opcode names by byte, for error messages. */
export const OP_NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(OP).map(([name, op]) => [op, name]),
);

/** An opcode byte as hex, with its character when printable (most opcodes are ASCII letters). */
export function opLabel(op: number): string {
  const ch = op >= 0x20 && op < 0x7f ? ` ('${String.fromCharCode(op)}')` : '';
  return `0x${op.toString(16).padStart(2, '0')}${ch}`;
}

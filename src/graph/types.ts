/** The graph's value types (dtypes, shapes, values, tensors, attributes) and their constructors. */
import { fail } from '../util/errors.ts';

/** Element types the builder knows, with their ONNX TensorProto.DataType codes and sizes. */
export const DATA_TYPES = {
  float32: { onnx: 1, bytes: 4 },
  uint8: { onnx: 2, bytes: 1 },
  int32: { onnx: 6, bytes: 4 },
  int64: { onnx: 7, bytes: 8 },
  bool: { onnx: 9, bytes: 1 },
  float16: { onnx: 10, bytes: 2 },
  float64: { onnx: 11, bytes: 8 },
} as const;

export type DataType = keyof typeof DATA_TYPES;

/** A dimension: a known size, or a symbol (e.g. `batch`) fixed only at run time. */
export type Dim = number | string;
export type Shape = readonly Dim[];

/** A value flowing through a graph: the builder's handle for an ONNX tensor name. */
export interface Value {
  readonly name: string;
  readonly dtype: DataType;
  readonly shape: Shape;
}

export type AttributeValue = number | string | readonly number[] | readonly string[] | TensorData;

/** Raw tensor contents for constants and initializers. */
export interface TensorData {
  readonly kind: 'tensor';
  readonly dtype: DataType;
  readonly shape: readonly number[];
  readonly data: ArrayBufferView;
}

/** Attributes tagged for serialization: plain numbers are ints unless wrapped by `float()`. */
export type Attr =
  | { type: 'int'; value: number }
  | { type: 'float'; value: number }
  | { type: 'string'; value: string }
  | { type: 'ints'; value: readonly number[] }
  | { type: 'floats'; value: readonly number[] }
  | { type: 'tensor'; value: TensorData }
  /** A reference to an attribute of the enclosing local function (ONNX `ref_attr_name`). */
  | { type: 'ref'; refType: 'float' | 'int'; value: string };

export interface NodeSpec {
  readonly op: string;
  readonly domain: string;
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
  readonly attrs: Readonly<Record<string, Attr>>;
  readonly name: string;
}

export function shapeToString(s: Shape): string {
  return `[${s.join(', ')}]`;
}

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Tensor contents checked against the element count `shape` needs. */
export function tensor(dtype: DataType, shape: readonly number[], data: ArrayBufferView): TensorData {
  const expected = numel(shape);
  const got = data.byteLength / DATA_TYPES[dtype].bytes;
  if (got !== expected) {
    fail(
      'TF_ERR_GRAPH',
      `tensor data holds ${got} ${dtype} elements but shape [${shape.join(', ')}] needs ${expected}`,
    );
  }
  return { kind: 'tensor', dtype, shape, data };
}

export const attr = {
  int: (value: number): Attr => ({ type: 'int', value }),
  float: (value: number): Attr => ({ type: 'float', value }),
  ints: (value: readonly number[]): Attr => ({ type: 'ints', value }),
  string: (value: string): Attr => ({ type: 'string', value }),
};

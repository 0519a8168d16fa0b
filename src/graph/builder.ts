import { fail } from '../util/errors.ts';
import {
  broadcast,
  concatShape,
  matmulShape,
  normAxis,
  reduceShape,
  reshapeShape,
  sliceShape,
  transposeShape,
  unsqueezeShape,
} from './shapes.ts';
import {
  type Attr,
  type DataType,
  type Dim,
  type NodeSpec,
  numel,
  type Shape,
  shapeToString,
  type TensorData,
  type Value,
} from './types.ts';

/**
 * A small typed ONNX graph builder. Every op checks dtypes and shapes when it is called and
 * returns a typed handle, so a malformed graph fails in TypeScript with the op named. It knows
 * nothing about TokenFormer. No JS graph-builder library exists for ONNX, hence this file.
 *
 * The same builder writes model-local functions (`defineFunction`): their bodies are traced
 * once with symbolic input shapes for the FunctionProto, and again at each call site with the
 * real shapes, which checks the call and infers its outputs.
 */

export interface FunctionInput {
  name: string;
  dtype: DataType;
  shape: Shape;
}

/** Returns a scalar float value for a function attribute (a reference inside the function). */
export type AttrReader = (name: string) => Value;

export interface LocalFunction {
  readonly domain: string;
  readonly name: string;
  readonly inputs: readonly FunctionInput[];
  readonly attributes: readonly string[];
  readonly body: (g: GraphBuilder, inputs: readonly Value[], attr: AttrReader) => Value[];
  /** The traced body: nodes over formal input names, and the output names. */
  readonly nodes: readonly NodeSpec[];
  readonly outputNames: readonly string[];
  readonly docString: string;
}

export function tensor(dtype: DataType, shape: readonly number[], data: ArrayBufferView): TensorData {
  const expected = numel(shape);
  const got = data.byteLength / bytesOf(dtype);
  if (got !== expected) {
    fail(
      'TF_ERR_GRAPH',
      `tensor data holds ${got} ${dtype} elements but shape [${shape.join(', ')}] needs ${expected}`,
    );
  }
  return { kind: 'tensor', dtype, shape, data };
}

function bytesOf(dtype: DataType): number {
  return { float32: 4, int32: 4, int64: 8, bool: 1, float16: 2, float64: 8 }[dtype];
}

export const attr = {
  int: (value: number): Attr => ({ type: 'int', value }),
  float: (value: number): Attr => ({ type: 'float', value }),
  ints: (value: readonly number[]): Attr => ({ type: 'ints', value }),
  string: (value: string): Attr => ({ type: 'string', value }),
};

export class GraphBuilder {
  readonly nodes: NodeSpec[] = [];
  readonly inputs: Value[] = [];
  readonly outputs: Value[] = [];
  readonly initializers: { value: Value; data: TensorData }[] = [];
  readonly functions = new Map<string, LocalFunction>();
  private readonly used = new Set<string>();
  private counter = 0;

  constructor(readonly kind: 'graph' | 'function' = 'graph') {}

  // ---- names -------------------------------------------------------------------------------

  private claim(name: string): string {
    if (this.used.has(name)) fail('TF_ERR_GRAPH', `value name "${name}" is already used in this graph`);
    this.used.add(name);
    return name;
  }

  private fresh(hint: string): string {
    let name: string;
    do name = `${hint}_${this.counter++}`;
    while (this.used.has(name));
    return this.claim(name);
  }

  // ---- graph interface -----------------------------------------------------------------------

  input(name: string, dtype: DataType, shape: Shape): Value {
    const v: Value = { name: this.claim(name), dtype, shape };
    this.inputs.push(v);
    return v;
  }

  initializer(name: string, data: TensorData): Value {
    if (this.kind === 'function') fail('TF_ERR_GRAPH', 'a function body cannot hold initializers');
    const v: Value = { name: this.claim(name), dtype: data.dtype, shape: data.shape };
    this.initializers.push({ value: v, data });
    return v;
  }

  /** Marks `v` as a graph output named `name` (an Identity renames it when needed). */
  output(v: Value, name?: string): Value {
    const out =
      name === undefined || name === v.name ? v : this.emit('Identity', [v], {}, v.dtype, v.shape, name);
    this.outputs.push(out);
    return out;
  }

  /** Emits one node and returns its single output. `outName` pins the output's name. */
  emit(
    op: string,
    inputs: readonly Value[],
    attrs: Record<string, Attr>,
    dtype: DataType,
    shape: Shape,
    outName?: string,
    domain = '',
  ): Value {
    const name = outName === undefined ? this.fresh(op.toLowerCase()) : this.claim(outName);
    this.nodes.push({
      op,
      domain,
      inputs: inputs.map((i) => i.name),
      outputs: [name],
      attrs,
      name: `${op}_${this.nodes.length}`,
    });
    return { name, dtype, shape };
  }

  // ---- constants -----------------------------------------------------------------------------

  constant(data: TensorData, hint = 'const'): Value {
    const name = this.fresh(hint);
    this.nodes.push({
      op: 'Constant',
      domain: '',
      inputs: [],
      outputs: [name],
      attrs: { value: { type: 'tensor', value: data } },
      name: `Constant_${this.nodes.length}`,
    });
    return { name, dtype: data.dtype, shape: data.shape };
  }

  scalar(x: number, dtype: 'float32' | 'int64' = 'float32'): Value {
    return dtype === 'float32'
      ? this.constant(tensor('float32', [], new Float32Array([x])), 'scalar')
      : this.constant(tensor('int64', [], new BigInt64Array([BigInt(x)])), 'scalar');
  }

  ints(values: readonly number[]): Value {
    return this.constant(tensor('int64', [values.length], BigInt64Array.from(values, BigInt)), 'ints');
  }

  floats(values: readonly number[], shape: readonly number[] = [values.length]): Value {
    return this.constant(tensor('float32', shape, Float32Array.from(values)), 'floats');
  }

  // ---- element-wise --------------------------------------------------------------------------

  private sameType(op: string, vals: readonly Value[], allowed?: readonly DataType[]): DataType {
    const t = vals[0]!.dtype;
    for (const v of vals) {
      if (v.dtype !== t) {
        fail('TF_ERR_GRAPH', `${op}: dtype mismatch ${vals.map((x) => `${x.name}:${x.dtype}`).join(', ')}`);
      }
    }
    if (allowed && !allowed.includes(t)) fail('TF_ERR_GRAPH', `${op}: dtype ${t} not supported`);
    return t;
  }

  private binary(op: string, a: Value, b: Value): Value {
    const t = this.sameType(op, [a, b]);
    return this.emit(op, [a, b], {}, t, broadcast(op, a.shape, b.shape));
  }

  private unary(op: string, x: Value, floatOnly = true): Value {
    if (floatOnly) this.sameType(op, [x], ['float32', 'float64', 'float16']);
    return this.emit(op, [x], {}, x.dtype, x.shape);
  }

  add(a: Value, b: Value): Value {
    return this.binary('Add', a, b);
  }
  sub(a: Value, b: Value): Value {
    return this.binary('Sub', a, b);
  }
  mul(a: Value, b: Value): Value {
    return this.binary('Mul', a, b);
  }
  div(a: Value, b: Value): Value {
    return this.binary('Div', a, b);
  }
  max(a: Value, b: Value): Value {
    return this.binary('Max', a, b);
  }
  pow(a: Value, b: Value): Value {
    return this.binary('Pow', a, b);
  }
  neg(x: Value): Value {
    return this.unary('Neg', x, false);
  }
  erf(x: Value): Value {
    return this.unary('Erf', x);
  }
  sqrt(x: Value): Value {
    return this.unary('Sqrt', x);
  }
  exp(x: Value): Value {
    return this.unary('Exp', x);
  }
  log(x: Value): Value {
    return this.unary('Log', x);
  }
  cos(x: Value): Value {
    return this.unary('Cos', x);
  }
  sin(x: Value): Value {
    return this.unary('Sin', x);
  }

  lessOrEqual(a: Value, b: Value): Value {
    this.sameType('LessOrEqual', [a, b]);
    return this.emit('LessOrEqual', [a, b], {}, 'bool', broadcast('LessOrEqual', a.shape, b.shape));
  }

  where(cond: Value, a: Value, b: Value): Value {
    if (cond.dtype !== 'bool') fail('TF_ERR_GRAPH', `Where: condition must be bool, got ${cond.dtype}`);
    const t = this.sameType('Where', [a, b]);
    return this.emit('Where', [cond, a, b], {}, t, broadcast('Where', cond.shape, a.shape, b.shape));
  }

  cast(x: Value, to: DataType): Value {
    const codes = { float32: 1, int32: 6, int64: 7, bool: 9, float16: 10, float64: 11 } as const;
    return this.emit('Cast', [x], { to: attr.int(codes[to]) }, to, x.shape);
  }

  // ---- linear algebra and reductions ---------------------------------------------------------

  matmul(a: Value, b: Value): Value {
    const t = this.sameType('MatMul', [a, b], ['float32', 'float64', 'float16']);
    return this.emit('MatMul', [a, b], {}, t, matmulShape(a.shape, b.shape));
  }

  /** ReduceSum / ReduceMean / ReduceL2 / ReduceMax with axes as an input (opset ≥ 18). */
  reduce(
    op: 'ReduceSum' | 'ReduceMean' | 'ReduceL2' | 'ReduceMax',
    x: Value,
    axes: readonly number[],
    keepdims: boolean,
  ): Value {
    const shape = reduceShape(op, x.shape, axes, keepdims);
    return this.emit(op, [x, this.ints(axes)], { keepdims: attr.int(keepdims ? 1 : 0) }, x.dtype, shape);
  }

  softmax(x: Value, axis = -1): Value {
    normAxis('Softmax', axis, x.shape.length);
    return this.emit(
      'Softmax',
      [x],
      { axis: attr.int(axis) },
      this.sameType('Softmax', [x], ['float32', 'float64']),
      x.shape,
    );
  }

  /** LayerNormalization-17 over the last axis; `scale` is required by the op, so pass ones. */
  layerNorm(x: Value, scale: Value, bias: Value | undefined, eps: number): Value {
    const d = x.shape[x.shape.length - 1]!;
    for (const p of bias ? [scale, bias] : [scale]) {
      if (p.shape.length !== 1 || p.shape[0] !== d) {
        fail(
          'TF_ERR_GRAPH',
          `LayerNormalization: parameter ${p.name} ${shapeToString(p.shape)} must be [${d}]`,
        );
      }
    }
    const t = this.sameType('LayerNormalization', bias ? [x, scale, bias] : [x, scale], [
      'float32',
      'float64',
    ]);
    const attrs = { axis: attr.int(-1), epsilon: attr.float(eps) };
    return this.emit('LayerNormalization', bias ? [x, scale, bias] : [x, scale], attrs, t, x.shape);
  }

  gather(data: Value, indices: Value, axis = 0): Value {
    if (indices.dtype !== 'int64' && indices.dtype !== 'int32') {
      fail('TF_ERR_GRAPH', `Gather: indices must be int64 or int32, got ${indices.dtype}`);
    }
    const a = normAxis('Gather', axis, data.shape.length);
    const shape = [...data.shape.slice(0, a), ...indices.shape, ...data.shape.slice(a + 1)];
    return this.emit('Gather', [data, indices], { axis: attr.int(a) }, data.dtype, shape);
  }

  // ---- shape manipulation --------------------------------------------------------------------

  transpose(x: Value, perm: readonly number[]): Value {
    return this.emit('Transpose', [x], { perm: attr.ints(perm) }, x.dtype, transposeShape(x.shape, perm));
  }

  /** Reshape with ONNX semantics: 0 keeps the input dim, -1 is inferred. */
  reshape(x: Value, spec: readonly number[]): Value {
    return this.emit('Reshape', [x, this.ints(spec)], {}, x.dtype, reshapeShape(x.shape, spec));
  }

  unsqueeze(x: Value, axes: readonly number[]): Value {
    return this.emit('Unsqueeze', [x, this.ints(axes)], {}, x.dtype, unsqueezeShape(x.shape, axes));
  }

  /** Static slice [start, end) along one axis. */
  slice(x: Value, axis: number, start: number, end: number): Value {
    const shape = sliceShape(x.shape, axis, start, end);
    const inputs = [x, this.ints([start]), this.ints([end]), this.ints([axis])];
    return this.emit('Slice', inputs, {}, x.dtype, shape);
  }

  concat(xs: readonly Value[], axis: number): Value {
    const t = this.sameType('Concat', xs);
    return this.emit(
      'Concat',
      xs,
      { axis: attr.int(axis) },
      t,
      concatShape(
        xs.map((x) => x.shape),
        axis,
      ),
    );
  }

  /** The run-time size of one axis of `x`, as an int64 scalar. */
  dimSize(x: Value, axis: number): Value {
    const a = normAxis('Shape', axis, x.shape.length);
    const attrs = { start: attr.int(a), end: attr.int(a + 1) };
    const s = this.emit('Shape', [x], attrs, 'int64', [1]);
    return this.emit('Squeeze', [s, this.ints([0])], {}, 'int64', []);
  }

  /** int64 [0, 1, …, n−1] for a run-time scalar n; `dim` names the resulting length. */
  range(n: Value, dim: Dim): Value {
    if (n.dtype !== 'int64' || n.shape.length !== 0)
      fail('TF_ERR_GRAPH', 'Range: limit must be an int64 scalar');
    return this.emit('Range', [this.scalar(0, 'int64'), n, this.scalar(1, 'int64')], {}, 'int64', [dim]);
  }

  // ---- local functions -----------------------------------------------------------------------

  /** Reads a function attribute as a float32 scalar; only inside a function body. */
  attrRef(name: string): Value {
    if (this.kind !== 'function') fail('TF_ERR_GRAPH', `attribute reference "${name}" outside a function`);
    const out = this.fresh(name);
    this.nodes.push({
      op: 'Constant',
      domain: '',
      inputs: [],
      outputs: [out],
      attrs: { value_float: { type: 'ref', refType: 'float', value: name } },
      name: `Constant_${this.nodes.length}`,
    });
    return { name: out, dtype: 'float32', shape: [] };
  }

  /** Emits one node calling a local function; the body is re-traced to check the call. */
  call(fn: LocalFunction, inputs: readonly Value[], attrs: Record<string, number>): Value[] {
    const where = `${fn.domain}::${fn.name}`;
    if (inputs.length !== fn.inputs.length) {
      fail('TF_ERR_GRAPH', `${where}: expected ${fn.inputs.length} inputs, got ${inputs.length}`);
    }
    inputs.forEach((v, i) => {
      const formal = fn.inputs[i]!;
      if (v.dtype !== formal.dtype || v.shape.length !== formal.shape.length) {
        fail(
          'TF_ERR_GRAPH',
          `${where}: input ${formal.name} must be ${formal.dtype} of rank ${formal.shape.length}, ` +
            `got ${v.dtype} ${shapeToString(v.shape)}`,
        );
      }
    });
    for (const a of fn.attributes) {
      if (attrs[a] === undefined) fail('TF_ERR_GRAPH', `${where}: attribute ${a} is required`);
    }
    const trace = new GraphBuilder('function');
    const traced = fn.body(
      trace,
      inputs.map((v) => trace.input(v.name, v.dtype, v.shape)),
      (a) => trace.attrRef(a),
    );
    const existing = this.functions.get(where);
    if (existing && existing !== fn) fail('TF_ERR_GRAPH', `two different functions named ${where}`);
    this.functions.set(where, fn);
    const outs = traced.map((t) => ({
      name: this.fresh(fn.name.toLowerCase()),
      dtype: t.dtype,
      shape: t.shape,
    }));
    const attrSpecs: Record<string, Attr> = {};
    for (const [k, v] of Object.entries(attrs)) attrSpecs[k] = attr.float(v);
    this.nodes.push({
      op: fn.name,
      domain: fn.domain,
      inputs: inputs.map((v) => v.name),
      outputs: outs.map((o) => o.name),
      attrs: attrSpecs,
      name: `${fn.name}_${this.nodes.length}`,
    });
    return outs;
  }

  /** Runs a function's body directly in this graph, with attributes as constants. */
  inline(fn: LocalFunction, inputs: readonly Value[], attrs: Record<string, number>): Value[] {
    return fn.body(this, inputs, (a) => {
      const v = attrs[a];
      if (v === undefined) fail('TF_ERR_GRAPH', `${fn.domain}::${fn.name}: attribute ${a} is required`);
      return this.scalar(v);
    });
  }
}

/** Defines a model-local function by tracing `body` once over symbolic inputs. */
export function defineFunction(spec: {
  domain: string;
  name: string;
  inputs: readonly FunctionInput[];
  attributes: readonly string[];
  docString?: string;
  body: (g: GraphBuilder, inputs: readonly Value[], attr: AttrReader) => Value[];
}): LocalFunction {
  const g = new GraphBuilder('function');
  const formal = spec.inputs.map((i) => g.input(i.name, i.dtype, i.shape));
  const outs = spec.body(g, formal, (a) => {
    if (!spec.attributes.includes(a)) fail('TF_ERR_GRAPH', `${spec.name}: undeclared attribute ${a}`);
    return g.attrRef(a);
  });
  return {
    domain: spec.domain,
    name: spec.name,
    inputs: spec.inputs,
    attributes: spec.attributes,
    body: spec.body,
    nodes: g.nodes,
    outputNames: outs.map((o) => o.name),
    docString: spec.docString ?? '',
  };
}

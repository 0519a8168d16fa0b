import { f32ToF16 } from '../util/dtype.ts';
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
  DATA_TYPES,
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
  return DATA_TYPES[dtype].bytes;
}

export const attr = {
  int: (value: number): Attr => ({ type: 'int', value }),
  float: (value: number): Attr => ({ type: 'float', value }),
  ints: (value: readonly number[]): Attr => ({ type: 'ints', value }),
  string: (value: string): Attr => ({ type: 'string', value }),
};

/**
 * Every op the typed methods of GraphBuilder emit. `gradients.ts` keys its rule table by this
 * union, so adding an op here without a gradient rule (or a non-differentiable mark) fails to
 * compile. `emit` still takes any op string; such ops have no rule and autodiff names them.
 */
export type PrimitiveOp =
  // element-wise
  | 'Identity'
  | 'Add'
  | 'Sub'
  | 'Mul'
  | 'Div'
  | 'Max'
  | 'Pow'
  | 'Neg'
  | 'Erf'
  | 'Sqrt'
  | 'Exp'
  | 'Log'
  | 'Cos'
  | 'Sin'
  | 'Where'
  | 'Cast'
  | 'Sum'
  // linear algebra, reductions, normalisation
  | 'MatMul'
  | 'ReduceSum'
  | 'ReduceMean'
  | 'ReduceL2'
  | 'ReduceMax'
  | 'Softmax'
  | 'LayerNormalization'
  // indexing
  | 'Gather'
  | 'GatherElements'
  | 'ScatterElements'
  // shape manipulation
  | 'Transpose'
  | 'Reshape'
  | 'Unsqueeze'
  | 'Squeeze'
  | 'Slice'
  | 'Pad'
  | 'Concat'
  | 'Expand'
  // non-differentiable: constants, shapes, comparisons
  | 'Constant'
  | 'Shape'
  | 'Size'
  | 'Range'
  | 'LessOrEqual'
  | 'Equal';

const FLOAT_TYPES: readonly DataType[] = ['float32', 'float64', 'float16'];

export class GraphBuilder {
  readonly nodes: NodeSpec[] = [];
  readonly inputs: Value[] = [];
  readonly outputs: Value[] = [];
  readonly initializers: { value: Value; data: TensorData }[] = [];
  readonly functions = new Map<string, LocalFunction>();
  /** Values whose gradient autodiff treats as zero (`stopGradient`). */
  readonly detached = new Set<string>();
  private readonly used = new Set<string>();
  /** Every value by name, with dtype and shape, so autodiff can read a node's inputs/outputs. */
  private readonly values = new Map<string, Value>();
  /** Contents of Constant nodes by output name (static axes, shapes, exponents for autodiff). */
  private readonly constants = new Map<string, TensorData>();
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

  private record(v: Value): Value {
    this.values.set(v.name, v);
    return v;
  }

  /** The value named `name` (any input, initializer or node output of this graph). */
  valueOf(name: string): Value {
    return this.values.get(name) ?? fail('TF_ERR_GRAPH', `no value named "${name}" in this graph`);
  }

  /** The contents of `v` when a Constant node produces it, else undefined. */
  constantData(v: Value): TensorData | undefined {
    return this.constants.get(v.name);
  }

  input(name: string, dtype: DataType, shape: Shape): Value {
    const v: Value = this.record({ name: this.claim(name), dtype, shape });
    this.inputs.push(v);
    return v;
  }

  initializer(name: string, data: TensorData): Value {
    if (this.kind === 'function') fail('TF_ERR_GRAPH', 'a function body cannot hold initializers');
    const v: Value = this.record({ name: this.claim(name), dtype: data.dtype, shape: data.shape });
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
    return this.record({ name, dtype, shape });
  }

  /**
   * Emits one node with several outputs (`null` leaves an optional output unnamed, so onnxruntime
   * does not compute it); for ops outside the primitives, such as onnxruntime's contrib kernels.
   */
  emitMulti(
    op: string,
    domain: string,
    inputs: readonly (Value | null)[],
    attrs: Record<string, Attr>,
    outputs: readonly ({ dtype: DataType; shape: Shape; name?: string } | null)[],
  ): (Value | null)[] {
    const outs = outputs.map((o) =>
      o === null
        ? null
        : this.record({
            name: o.name === undefined ? this.fresh(op.toLowerCase()) : this.claim(o.name),
            dtype: o.dtype,
            shape: o.shape,
          }),
    );
    this.nodes.push({
      op,
      domain,
      inputs: inputs.map((i) => i?.name ?? ''),
      outputs: outs.map((o) => o?.name ?? ''),
      attrs,
      name: `${op}_${this.nodes.length}`,
    });
    return outs;
  }

  /** `emit` for the typed methods: the op must be a PrimitiveOp (one with a gradient rule). */
  private prim(
    op: PrimitiveOp,
    inputs: readonly Value[],
    attrs: Record<string, Attr>,
    dtype: DataType,
    shape: Shape,
  ): Value {
    return this.emit(op, inputs, attrs, dtype, shape);
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
    this.constants.set(name, data);
    return this.record({ name, dtype: data.dtype, shape: data.shape });
  }

  scalar(x: number, dtype: 'float32' | 'int64' = 'float32'): Value {
    return dtype === 'float32'
      ? this.constant(tensor('float32', [], new Float32Array([x])), 'scalar')
      : this.constant(tensor('int64', [], new BigInt64Array([BigInt(x)])), 'scalar');
  }

  ints(values: readonly number[]): Value {
    return this.constant(tensor('int64', [values.length], BigInt64Array.from(values, BigInt)), 'ints');
  }

  floats(
    values: readonly number[],
    shape: readonly number[] = [values.length],
    dtype: 'float32' | 'float16' = 'float32',
  ): Value {
    const f32 = Float32Array.from(values);
    return dtype === 'float32'
      ? this.constant(tensor('float32', shape, f32), 'floats')
      : this.constant(tensor('float16', shape, f32ToF16(f32)), 'floats');
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

  private binary(op: PrimitiveOp, a: Value, b: Value): Value {
    const t = this.sameType(op, [a, b]);
    return this.prim(op, [a, b], {}, t, broadcast(op, a.shape, b.shape));
  }

  private unary(op: PrimitiveOp, x: Value, floatOnly = true): Value {
    if (floatOnly) this.sameType(op, [x], FLOAT_TYPES);
    return this.prim(op, [x], {}, x.dtype, x.shape);
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
    return this.prim('LessOrEqual', [a, b], {}, 'bool', broadcast('LessOrEqual', a.shape, b.shape));
  }

  where(cond: Value, a: Value, b: Value): Value {
    if (cond.dtype !== 'bool') fail('TF_ERR_GRAPH', `Where: condition must be bool, got ${cond.dtype}`);
    const t = this.sameType('Where', [a, b]);
    return this.prim('Where', [cond, a, b], {}, t, broadcast('Where', cond.shape, a.shape, b.shape));
  }

  cast(x: Value, to: DataType): Value {
    return this.prim('Cast', [x], { to: attr.int(DATA_TYPES[to].onnx) }, to, x.shape);
  }

  // ---- linear algebra and reductions ---------------------------------------------------------

  matmul(a: Value, b: Value): Value {
    const t = this.sameType('MatMul', [a, b], ['float32', 'float64', 'float16']);
    return this.prim('MatMul', [a, b], {}, t, matmulShape(a.shape, b.shape));
  }

  /** ReduceSum / ReduceMean / ReduceL2 / ReduceMax with axes as an input (opset ≥ 18). */
  reduce(
    op: 'ReduceSum' | 'ReduceMean' | 'ReduceL2' | 'ReduceMax',
    x: Value,
    axes: readonly number[],
    keepdims: boolean,
  ): Value {
    const shape = reduceShape(op, x.shape, axes, keepdims);
    return this.prim(op, [x, this.ints(axes)], { keepdims: attr.int(keepdims ? 1 : 0) }, x.dtype, shape);
  }

  softmax(x: Value, axis = -1): Value {
    normAxis('Softmax', axis, x.shape.length);
    return this.prim(
      'Softmax',
      [x],
      { axis: attr.int(axis) },
      this.sameType('Softmax', [x], ['float32', 'float64', 'float16']),
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
      'float16',
    ]);
    const attrs = { axis: attr.int(-1), epsilon: attr.float(eps) };
    return this.prim('LayerNormalization', bias ? [x, scale, bias] : [x, scale], attrs, t, x.shape);
  }

  gather(data: Value, indices: Value, axis = 0): Value {
    if (indices.dtype !== 'int64' && indices.dtype !== 'int32') {
      fail('TF_ERR_GRAPH', `Gather: indices must be int64 or int32, got ${indices.dtype}`);
    }
    const a = normAxis('Gather', axis, data.shape.length);
    const shape = [...data.shape.slice(0, a), ...indices.shape, ...data.shape.slice(a + 1)];
    return this.prim('Gather', [data, indices], { axis: attr.int(a) }, data.dtype, shape);
  }

  // ---- shape manipulation --------------------------------------------------------------------

  transpose(x: Value, perm: readonly number[]): Value {
    return this.prim('Transpose', [x], { perm: attr.ints(perm) }, x.dtype, transposeShape(x.shape, perm));
  }

  /** Reshape with ONNX semantics: 0 keeps the input dim, -1 is inferred. */
  reshape(x: Value, spec: readonly number[]): Value {
    return this.prim('Reshape', [x, this.ints(spec)], {}, x.dtype, reshapeShape(x.shape, spec));
  }

  unsqueeze(x: Value, axes: readonly number[]): Value {
    return this.prim('Unsqueeze', [x, this.ints(axes)], {}, x.dtype, unsqueezeShape(x.shape, axes));
  }

  /** Static slice [start, end) along one axis. */
  slice(x: Value, axis: number, start: number, end: number): Value {
    const shape = sliceShape(x.shape, axis, start, end);
    const inputs = [x, this.ints([start]), this.ints([end]), this.ints([axis])];
    return this.prim('Slice', inputs, {}, x.dtype, shape);
  }

  concat(xs: readonly Value[], axis: number): Value {
    const t = this.sameType('Concat', xs);
    return this.prim(
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
    const s = this.prim('Shape', [x], attrs, 'int64', [1]);
    return this.prim('Squeeze', [s, this.ints([0])], {}, 'int64', []);
  }

  /** int64 [0, 1, …, n−1] for a run-time scalar n; `dim` names the resulting length. */
  range(n: Value, dim: Dim): Value {
    if (n.dtype !== 'int64' || n.shape.length !== 0)
      fail('TF_ERR_GRAPH', 'Range: limit must be an int64 scalar');
    return this.prim('Range', [this.scalar(0, 'int64'), n, this.scalar(1, 'int64')], {}, 'int64', [dim]);
  }

  // ---- ops for autodiff and losses -----------------------------------------------------------

  /** A scalar constant of `like`'s dtype (or of the dtype given). */
  scalarLike(x: number, like: Value | DataType): Value {
    const dtype = typeof like === 'string' ? like : like.dtype;
    switch (dtype) {
      case 'float32':
        return this.constant(tensor('float32', [], new Float32Array([x])), 'scalar');
      case 'float64':
        return this.constant(tensor('float64', [], new Float64Array([x])), 'scalar');
      case 'float16':
        return this.constant(tensor('float16', [], f32ToF16(Float32Array.of(x))), 'scalar');
      case 'int32':
        return this.constant(tensor('int32', [], new Int32Array([x])), 'scalar');
      case 'int64':
        return this.constant(tensor('int64', [], new BigInt64Array([BigInt(x)])), 'scalar');
      default:
        fail('TF_ERR_GRAPH', `no scalar constants of dtype ${dtype}`);
    }
  }

  /** `x` as a constant for autodiff: no gradient flows back through the returned value. */
  stopGradient(x: Value): Value {
    const out = this.prim('Identity', [x], {}, x.dtype, x.shape);
    this.detached.add(out.name);
    return out;
  }

  equal(a: Value, b: Value): Value {
    this.sameType('Equal', [a, b]);
    return this.prim('Equal', [a, b], {}, 'bool', broadcast('Equal', a.shape, b.shape));
  }

  /** The whole run-time shape of `x`, int64 [rank]. */
  shapeOf(x: Value): Value {
    return this.prim('Shape', [x], {}, 'int64', [x.shape.length]);
  }

  /** The run-time element count of `x`, an int64 scalar. */
  size(x: Value): Value {
    return this.prim('Size', [x], {}, 'int64', []);
  }

  /** A static shape as an int64 constant, or the run-time Shape of `like` when it has symbols. */
  private shapeValue(like: Value): Value {
    const s = like.shape;
    return s.every((d) => typeof d === 'number') ? this.ints(s as number[]) : this.shapeOf(like);
  }

  /** Reshape `x` to the shape of `like` (same element count). */
  reshapeLike(x: Value, like: Value): Value {
    const nums = (s: Shape) => (s.every((d) => typeof d === 'number') ? numel(s as number[]) : undefined);
    const [nx, nl] = [nums(x.shape), nums(like.shape)];
    if (nx !== undefined && nl !== undefined && nx !== nl) {
      fail(
        'TF_ERR_GRAPH',
        `Reshape: cannot reshape ${shapeToString(x.shape)} to ${shapeToString(like.shape)}: element counts differ`,
      );
    }
    return this.prim('Reshape', [x, this.shapeValue(like)], {}, x.dtype, like.shape);
  }

  /** Expand (NumPy broadcast) `x` to a static shape. */
  expand(x: Value, shape: readonly number[]): Value {
    return this.prim('Expand', [x, this.ints(shape)], {}, x.dtype, broadcast('Expand', x.shape, shape));
  }

  /** Expand `x` to the shape of `like`, which `x` must broadcast to. */
  expandLike(x: Value, like: Value): Value {
    const out = broadcast('Expand', x.shape, like.shape);
    if (out.length !== like.shape.length || out.some((d, i) => d !== like.shape[i])) {
      fail(
        'TF_ERR_GRAPH',
        `Expand: ${shapeToString(x.shape)} does not broadcast to ${shapeToString(like.shape)}`,
      );
    }
    return this.prim('Expand', [x, this.shapeValue(like)], {}, x.dtype, like.shape);
  }

  zerosLike(x: Value): Value {
    return this.expandLike(this.scalarLike(0, x), x);
  }

  onesLike(x: Value): Value {
    return this.expandLike(this.scalarLike(1, x), x);
  }

  /** Removes the listed axes, which must be statically 1. */
  squeeze(x: Value, axes: readonly number[]): Value {
    const norm = new Set(axes.map((a) => normAxis('Squeeze', a, x.shape.length)));
    for (const a of norm) {
      if (x.shape[a] !== 1) {
        fail('TF_ERR_GRAPH', `Squeeze: axis ${a} of ${shapeToString(x.shape)} is not 1`);
      }
    }
    const shape = x.shape.filter((_, i) => !norm.has(i));
    return this.prim('Squeeze', [x, this.ints(axes)], {}, x.dtype, shape);
  }

  /** Element-wise sum of any number of same-typed values, with broadcasting. */
  sum(xs: readonly Value[]): Value {
    if (xs.length === 0) fail('TF_ERR_GRAPH', 'Sum: needs at least one input');
    if (xs.length === 1) return xs[0]!;
    const t = this.sameType('Sum', xs);
    return this.prim('Sum', xs, {}, t, broadcast('Sum', ...xs.map((x) => x.shape)));
  }

  /** Zero padding with static amounts: `before[i]` and `after[i]` elements on axis i. */
  pad(x: Value, before: readonly number[], after: readonly number[]): Value {
    const r = x.shape.length;
    if (before.length !== r || after.length !== r || [...before, ...after].some((p) => !(p >= 0))) {
      fail('TF_ERR_GRAPH', `Pad: need ${r} non-negative amounts before and after, got ${before} / ${after}`);
    }
    const shape = x.shape.map((d, i) => {
      const p = before[i]! + after[i]!;
      return p === 0 ? d : typeof d === 'number' ? d + p : `${d}+${p}`;
    });
    const inputs = [x, this.ints([...before, ...after]), this.scalarLike(0, x)];
    return this.prim('Pad', inputs, { mode: attr.string('constant') }, x.dtype, shape);
  }

  private indexType(op: string, indices: Value): void {
    if (indices.dtype !== 'int64' && indices.dtype !== 'int32') {
      fail('TF_ERR_GRAPH', `${op}: indices must be int64 or int32, got ${indices.dtype}`);
    }
  }

  /** out[…i…] = data[…indices[…i…]…] along `axis`; indices have the rank of data. */
  gatherElements(data: Value, indices: Value, axis: number): Value {
    this.indexType('GatherElements', indices);
    if (indices.shape.length !== data.shape.length) {
      fail(
        'TF_ERR_GRAPH',
        `GatherElements: indices ${shapeToString(indices.shape)} must have the rank of data ${shapeToString(data.shape)}`,
      );
    }
    const a = normAxis('GatherElements', axis, data.shape.length);
    return this.prim('GatherElements', [data, indices], { axis: attr.int(a) }, data.dtype, indices.shape);
  }

  /**
   * data with data[…indices[…i…]…] (+)= updates[…i…] along `axis`. `add` accumulates repeated
   * indices (unlike ScatterND-add, which loses updates on several threads: DESIGN.md §3).
   */
  scatterElements(
    data: Value,
    indices: Value,
    updates: Value,
    axis: number,
    reduction: 'none' | 'add' = 'none',
  ): Value {
    this.indexType('ScatterElements', indices);
    const t = this.sameType('ScatterElements', [data, updates]);
    const same = (a: Shape, b: Shape) => a.length === b.length && a.every((d, i) => d === b[i]);
    if (indices.shape.length !== data.shape.length || !same(indices.shape, updates.shape)) {
      fail(
        'TF_ERR_GRAPH',
        `ScatterElements: indices ${shapeToString(indices.shape)} and updates ${shapeToString(updates.shape)} ` +
          `must have one shape, of the rank of data ${shapeToString(data.shape)}`,
      );
    }
    const a = normAxis('ScatterElements', axis, data.shape.length);
    const attrs = { axis: attr.int(a), reduction: attr.string(reduction) };
    return this.prim('ScatterElements', [data, indices, updates], attrs, t, data.shape);
  }

  /** One-hot over the last axis: indices […] → […, depth], as bool or cast to `dtype`. */
  oneHot(indices: Value, depth: number, dtype: DataType = 'bool'): Value {
    this.indexType('OneHot', indices);
    const classes = this.range(this.scalarLike(depth, indices.dtype), depth); // [depth]
    const mask = this.equal(this.unsqueeze(indices, [-1]), classes); // […, depth]
    return dtype === 'bool' ? mask : this.cast(mask, dtype);
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
    return this.record({ name: out, dtype: 'float32', shape: [] });
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
    const outs = traced.map((t) =>
      this.record({ name: this.fresh(fn.name.toLowerCase()), dtype: t.dtype, shape: t.shape }),
    );
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

  /**
   * Split along one axis into pieces whose run-time sizes are `sizes` (int64 [k]); `dims` names
   * each piece's size along `axis` (numbers or symbols), since they are only known at run time.
   */
  split(x: Value, axis: number, sizes: Value, dims: readonly Dim[]): Value[] {
    const a = normAxis('Split', axis, x.shape.length);
    if (sizes.dtype !== 'int64' || sizes.shape.length !== 1 || sizes.shape[0] !== dims.length) {
      fail(
        'TF_ERR_GRAPH',
        `Split: sizes must be int64 [${dims.length}], got ${sizes.dtype} ${shapeToString(sizes.shape)}`,
      );
    }
    if (dims.length < 1) fail('TF_ERR_GRAPH', 'Split: needs at least one piece');
    const whole = x.shape[a]!;
    if (typeof whole === 'number' && dims.every((d) => typeof d === 'number')) {
      const sum = (dims as number[]).reduce((p, q) => p + q, 0);
      if (sum !== whole) fail('TF_ERR_GRAPH', `Split: pieces [${dims.join(', ')}] do not add up to ${whole}`);
    }
    const outs = dims.map((d) => {
      const shape = [...x.shape];
      shape[a] = d;
      return { name: this.fresh('split'), dtype: x.dtype, shape } as Value;
    });
    this.nodes.push({
      op: 'Split',
      domain: '',
      inputs: [x.name, sizes.name],
      outputs: outs.map((o) => o.name),
      attrs: { axis: attr.int(a) },
      name: `Split_${this.nodes.length}`,
    });
    return outs;
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

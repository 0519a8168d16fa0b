/**
 * A small typed ONNX graph builder: the op vocabulary over `Graph`'s bookkeeping. Every op checks
 * dtypes and shapes when it is called and returns a typed handle, so a malformed graph fails in
 * TypeScript with the op named. It knows nothing about TokenFormer. No JS graph-builder library
 * exists for ONNX, hence this file.
 */
import { fail } from '../util/errors.ts';
import { Graph } from './graph.ts';
import type { PrimitiveOp } from './primitives.ts';
import {
  broadcast,
  concatShape,
  FLOAT_TYPES,
  indexDtype,
  matmulShape,
  normAxis,
  reduceShape,
  reshapeShape,
  sameDtype,
  sliceShape,
  transposeShape,
  unsqueezeShape,
} from './shapes.ts';
import {
  attr,
  DATA_TYPES,
  type DataType,
  type Dim,
  numel,
  type Shape,
  shapeToString,
  type Value,
} from './types.ts';

export class GraphBuilder extends Graph {
  protected functionBuilder(): GraphBuilder {
    return new GraphBuilder('function');
  }

  // ---- element-wise --------------------------------------------------------------------------

  private binary(op: PrimitiveOp, a: Value, b: Value): Value {
    const t = sameDtype(op, [a, b]);
    return this.prim(op, [a, b], {}, t, broadcast(op, a.shape, b.shape));
  }

  private unary(op: PrimitiveOp, x: Value, floatOnly = true): Value {
    if (floatOnly) sameDtype(op, [x], FLOAT_TYPES);
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
    sameDtype('LessOrEqual', [a, b]);
    return this.prim('LessOrEqual', [a, b], {}, 'bool', broadcast('LessOrEqual', a.shape, b.shape));
  }

  where(cond: Value, a: Value, b: Value): Value {
    if (cond.dtype !== 'bool') fail('TF_ERR_GRAPH', `Where: condition must be bool, got ${cond.dtype}`);
    const t = sameDtype('Where', [a, b]);
    return this.prim('Where', [cond, a, b], {}, t, broadcast('Where', cond.shape, a.shape, b.shape));
  }

  cast(x: Value, to: DataType): Value {
    return this.prim('Cast', [x], { to: attr.int(DATA_TYPES[to].onnx) }, to, x.shape);
  }

  // ---- linear algebra and reductions ---------------------------------------------------------

  matmul(a: Value, b: Value): Value {
    const t = sameDtype('MatMul', [a, b], FLOAT_TYPES);
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
    const t = sameDtype('Softmax', [x], FLOAT_TYPES);
    return this.prim('Softmax', [x], { axis: attr.int(axis) }, t, x.shape);
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
    const t = sameDtype('LayerNormalization', bias ? [x, scale, bias] : [x, scale], FLOAT_TYPES);
    const attrs = { axis: attr.int(-1), epsilon: attr.float(eps) };
    return this.prim('LayerNormalization', bias ? [x, scale, bias] : [x, scale], attrs, t, x.shape);
  }

  gather(data: Value, indices: Value, axis = 0): Value {
    indexDtype('Gather', indices);
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
    const t = sameDtype('Concat', xs);
    const shape = concatShape(
      xs.map((x) => x.shape),
      axis,
    );
    return this.prim('Concat', xs, { axis: attr.int(axis) }, t, shape);
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

  /** `x` as a constant for autodiff: no gradient flows back through the returned value. */
  stopGradient(x: Value): Value {
    const out = this.prim('Identity', [x], {}, x.dtype, x.shape);
    this.detached.add(out.name);
    return out;
  }

  equal(a: Value, b: Value): Value {
    sameDtype('Equal', [a, b]);
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
    const t = sameDtype('Sum', xs);
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

  /** out[…i…] = data[…indices[…i…]…] along `axis`; indices have the rank of data. */
  gatherElements(data: Value, indices: Value, axis: number): Value {
    indexDtype('GatherElements', indices);
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
    indexDtype('ScatterElements', indices);
    const t = sameDtype('ScatterElements', [data, updates]);
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
    indexDtype('OneHot', indices);
    const classes = this.range(this.scalarLike(depth, indices.dtype), depth); // [depth]
    const mask = this.equal(this.unsqueeze(indices, [-1]), classes); // […, depth]
    return dtype === 'bool' ? mask : this.cast(mask, dtype);
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

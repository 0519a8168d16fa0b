/**
 * A graph under construction: value names, inputs, initializers, outputs, node emission,
 * constants, and calls of local functions. It knows no ops beyond that; GraphBuilder adds the
 * typed op vocabulary on top, and is the class the rest of the code uses.
 */
import { f32ToF16 } from '../util/dtype.ts';
import { fail } from '../util/errors.ts';
import type { GraphBuilder } from './builder.ts';
import type { LocalFunction } from './functions.ts';
import type { PrimitiveOp } from './primitives.ts';
import {
  type Attr,
  attr,
  type DataType,
  type NodeSpec,
  type Shape,
  shapeToString,
  type TensorData,
  tensor,
  type Value,
} from './types.ts';

export abstract class Graph {
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

  /** A new function-body builder with the whole op vocabulary, to trace a body at a call site. */
  protected abstract functionBuilder(): GraphBuilder;

  // ---- names -------------------------------------------------------------------------------

  private claim(name: string): string {
    if (this.used.has(name)) fail('TF_ERR_GRAPH', `value name "${name}" is already used in this graph`);
    this.used.add(name);
    return name;
  }

  protected fresh(hint: string): string {
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
  protected prim(
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
    const trace = this.functionBuilder();
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
  inline(
    this: GraphBuilder, // a body needs the op vocabulary, which only the subclass has
    fn: LocalFunction,
    inputs: readonly Value[],
    attrs: Record<string, number>,
  ): Value[] {
    return fn.body(this, inputs, (a) => {
      const v = attrs[a];
      if (v === undefined) fail('TF_ERR_GRAPH', `${fn.domain}::${fn.name}: attribute ${a} is required`);
      return this.scalar(v);
    });
  }
}

import { fail } from '../util/errors.ts';
import type { GraphBuilder } from './builder.ts';
import type { PrimitiveOp } from './primitives.ts';
import { normAxis } from './shapes.ts';
import {
  type Attr,
  type DataType,
  type NodeSpec,
  numel,
  type Shape,
  shapeToString,
  type Value,
} from './types.ts';

/**
 * Reverse-mode rules, one per primitive op (tinygrad's `gradient.py` habit). The table is typed
 * by `PrimitiveOp`, so an op added to the builder without a rule here is a compile error.
 * Composites (GELU, log-softmax, cross-entropy, …) are built from primitives and need no rule.
 *
 * A rule gets the forward node and the gradient of its (single) output, and returns per input a
 * thunk building that input's gradient, or undefined where none flows. Thunks let autodiff
 * build only the gradients it needs (no dW for a constant, no dx for an input that does not
 * depend on the parameters). Gradients of broadcast inputs are summed back to the input shape.
 */

export interface ForwardNode {
  readonly spec: NodeSpec;
  readonly inputs: readonly Value[];
  readonly outputs: readonly Value[];
}

export type Grad = () => Value;
export type GradRule = (g: GraphBuilder, node: ForwardNode, dy: Value) => readonly (Grad | undefined)[];

/** Ops whose outputs carry no gradient (constants, shapes, comparisons). */
const NONE: GradRule = () => [];

// ---- helpers ---------------------------------------------------------------------------------

const FLOATS: readonly DataType[] = ['float32', 'float64', 'float16'];
export const isFloat = (v: Value): boolean => FLOATS.includes(v.dtype);

function ruleError(op: string, message: string): never {
  fail('TF_ERR_GRAPH', `gradient of ${op}: ${message}`);
}

/** Static int64 contents of a Constant input (axes, perms, slice bounds). */
function staticInts(g: GraphBuilder, op: string, v: Value | undefined): number[] | undefined {
  if (!v) return undefined;
  const data = g.constantData(v);
  if (data?.dtype !== 'int64') ruleError(op, `${v.name} must be a constant int64 tensor`);
  return Array.from(data.data as BigInt64Array, Number);
}

function intAttr(node: ForwardNode, name: string, fallback: number): number {
  const a: Attr | undefined = node.spec.attrs[name];
  return a?.type === 'int' ? a.value : fallback;
}

/** Retypes a value with a shape known to be equal (symbolic dims may be spelled differently). */
function withShape(v: Value, shape: Shape): Value {
  return { name: v.name, dtype: v.dtype, shape };
}

/**
 * Sums a gradient of the broadcast output shape back to `to`'s shape: missing leading dims and
 * dims that are 1 in `to` but not in the gradient are summed out (NumPy broadcasting in reverse).
 */
export function unbroadcast(g: GraphBuilder, grad: Value, to: Value): Value {
  const lead = grad.shape.length - to.shape.length;
  if (lead < 0)
    ruleError('broadcast', `gradient ${shapeToString(grad.shape)} has lower rank than ${to.name}`);
  const axes: number[] = [];
  for (let i = 0; i < grad.shape.length; i++) {
    if (i < lead || (to.shape[i - lead] === 1 && grad.shape[i] !== 1)) axes.push(i);
  }
  if (axes.length === 0) return withShape(grad, to.shape);
  let out = g.reduce('ReduceSum', grad, axes, true); // [1…, to's dims]
  if (lead > 0) {
    out = g.squeeze(
      out,
      Array.from({ length: lead }, (_, i) => i),
    );
  }
  return withShape(out, to.shape);
}

function lastTwoSwapped(rank: number): number[] {
  const perm = Array.from({ length: rank }, (_, i) => i);
  perm[rank - 2] = rank - 1;
  perm[rank - 1] = rank - 2;
  return perm;
}

const isStatic = (s: Shape): s is readonly number[] => s.every((d) => typeof d === 'number');

/** MatMul gradient for the right operand; a rank-2 weight against batched activations is one matmul. */
function matmulGradB(g: GraphBuilder, a: Value, b: Value, dy: Value): Value {
  if (a.shape.length > 2 && b.shape.length === 2 && isStatic(b.shape)) {
    const [k, n] = b.shape;
    const a2 = g.reshape(a, [-1, k!]); // [N, K]
    const dy2 = g.reshape(dy, [-1, n!]); // [N, N_out]
    return withShape(g.matmul(g.transpose(a2, [1, 0]), withShape(dy2, [a2.shape[0]!, n!])), b.shape);
  }
  const db = g.matmul(g.transpose(a, lastTwoSwapped(a.shape.length)), dy); // [batch…, K, N]
  return unbroadcast(g, db, b);
}

/** A reduction's output gradient with the reduced axes restored as 1s (keepdims form). */
function keepDims(g: GraphBuilder, node: ForwardNode, dy: Value): { dyKeep: Value; axes: number[] } {
  const x = node.inputs[0]!;
  const given = staticInts(g, node.spec.op, node.inputs[1]);
  const all = Array.from({ length: x.shape.length }, (_, i) => i);
  const axes =
    given === undefined || given.length === 0
      ? all
      : [...new Set(given.map((a) => normAxis(node.spec.op, a, x.shape.length)))].sort((p, q) => p - q);
  const kept = intAttr(node, 'keepdims', 1) === 1;
  return { dyKeep: kept ? dy : g.unsqueeze(dy, axes), axes };
}

function reduceMeanGrad(g: GraphBuilder, node: ForwardNode, dy: Value): Value {
  const x = node.inputs[0]!;
  const { dyKeep, axes } = keepDims(g, node, dy);
  const dims = axes.map((a) => x.shape[a]!);
  const count = isStatic(dims)
    ? g.scalarLike(numel(dims), x)
    : g.div(g.cast(g.size(x), x.dtype), g.cast(g.size(dyKeep), x.dtype));
  return g.expandLike(g.div(dyKeep, count), x);
}

/** The smallest normal number of a float type: guards x/‖x‖ against 0/0 without moving results. */
function tiny(dtype: DataType): number {
  return dtype === 'float64'
    ? 2.2250738585072014e-308
    : dtype === 'float16'
      ? 6.103515625e-5
      : 1.1754943508222875e-38;
}

function layerNormGrads(g: GraphBuilder, node: ForwardNode, dy: Value): (Grad | undefined)[] {
  const [x, scale, bias] = node.inputs as [Value, Value, Value | undefined];
  const axis = normAxis('LayerNormalization', intAttr(node, 'axis', -1), x.shape.length);
  if (axis !== x.shape.length - 1) ruleError('LayerNormalization', 'only the last axis is supported');
  const eps = node.spec.attrs.epsilon?.type === 'float' ? node.spec.attrs.epsilon.value : 1e-5;
  const lead = Array.from({ length: axis }, (_, i) => i);
  // Recompute x̂ and 1/σ from primitives (the builder's node outputs only y).
  let cache: { xhat: Value; rstd: Value } | undefined;
  const stats = () => {
    if (!cache) {
      const xc = g.sub(x, g.reduce('ReduceMean', x, [-1], true)); // [..., D]
      const variance = g.reduce('ReduceMean', g.mul(xc, xc), [-1], true); // [..., 1]
      const rstd = g.div(g.scalarLike(1, x), g.sqrt(g.add(variance, g.scalarLike(eps, x)))); // [..., 1]
      cache = { xhat: g.mul(xc, rstd), rstd };
    }
    return cache;
  };
  const dx: Grad = () => {
    const { xhat, rstd } = stats();
    const dxhat = g.mul(dy, scale); // [..., D]
    const meanD = g.reduce('ReduceMean', dxhat, [-1], true);
    const meanDX = g.reduce('ReduceMean', g.mul(dxhat, xhat), [-1], true);
    return g.mul(rstd, g.sub(g.sub(dxhat, meanD), g.mul(xhat, meanDX)));
  };
  const sumLead = (v: Value) =>
    withShape(lead.length ? g.reduce('ReduceSum', v, lead, false) : v, scale.shape);
  return [dx, () => sumLead(g.mul(dy, stats().xhat)), bias ? () => sumLead(dy) : undefined];
}

/** Gather along `axis`: the data gradient scatters-adds dy rows back (repeated ids accumulate). */
function gatherGrad(g: GraphBuilder, node: ForwardNode, dy: Value): Value {
  const [data, indices] = node.inputs as [Value, Value];
  const a = intAttr(node, 'axis', 0);
  const tail = data.shape.slice(a + 1);
  if (!isStatic(tail)) {
    ruleError('Gather', `dims after the gather axis must be static, data is ${shapeToString(data.shape)}`);
  }
  // dy [P…, I…, S…] → [P…, N, S…]; indices [I…] → [N] → [1…, N, 1…] expanded to dy's shape.
  const flatDy = g.reshape(dy, [...new Array<number>(a).fill(0), -1, ...tail]);
  const flatIdx = g.reshape(indices, [-1]);
  const idxShape = [...new Array<number>(a).fill(1), -1, ...tail.map(() => 1)];
  const n = flatDy.shape[a]!; // the same run-time size as flatIdx's, whatever its symbol says
  const idx = g.expandLike(
    withShape(
      g.reshape(flatIdx, idxShape),
      idxShape.map((d) => (d === -1 ? n : d)),
    ),
    flatDy,
  );
  return g.scatterElements(g.zerosLike(data), idx, flatDy, a, 'add');
}

function sliceGrad(g: GraphBuilder, node: ForwardNode, dy: Value): Value {
  const [x, s, e, ax, st] = node.inputs;
  const starts = staticInts(g, 'Slice', s)!;
  const ends = staticInts(g, 'Slice', e)!;
  const axes = staticInts(g, 'Slice', ax) ?? starts.map((_, i) => i);
  const steps = staticInts(g, 'Slice', st) ?? starts.map(() => 1);
  const r = x!.shape.length;
  const before = new Array<number>(r).fill(0);
  const after = new Array<number>(r).fill(0);
  axes.forEach((axis, i) => {
    const a = normAxis('Slice', axis, r);
    const d = x!.shape[a]!;
    if (steps[i] !== 1) ruleError('Slice', 'only step 1 is supported');
    if (typeof d !== 'number') {
      ruleError('Slice', `axis ${a} of ${shapeToString(x!.shape)} must be static to pad the gradient back`);
    }
    const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + d : v, 0), d);
    const [b, end] = [clamp(starts[i]!), clamp(ends[i]!)];
    before[a] = b;
    after[a] = d - Math.max(end, b);
  });
  return withShape(g.pad(dy, before, after), x!.shape);
}

function concatGrads(g: GraphBuilder, node: ForwardNode, dy: Value): Grad[] {
  const rank = node.outputs[0]!.shape.length;
  const a = normAxis('Concat', intAttr(node, 'axis', 0), rank);
  let offset = 0;
  return node.inputs.map((x) => {
    const len = x.shape[a]!;
    if (typeof len !== 'number') {
      ruleError('Concat', `input ${x.name} ${shapeToString(x.shape)} needs a static size on axis ${a}`);
    }
    const start = offset;
    offset += len;
    return () => withShape(g.slice(dy, a, start, start + len), x.shape);
  });
}

/** Routes dy to `a` where mask, else to `b`, each summed back to its shape. */
function routed(g: GraphBuilder, mask: Value, dy: Value, a: Value, b: Value): (Grad | undefined)[] {
  const zero = () => g.scalarLike(0, dy);
  return [
    isFloat(a) ? () => unbroadcast(g, g.where(mask, dy, zero()), a) : undefined,
    isFloat(b) ? () => unbroadcast(g, g.where(mask, zero(), dy), b) : undefined,
  ];
}

// ---- the table -------------------------------------------------------------------------------

export const GRAD_RULES: Record<PrimitiveOp, GradRule> = {
  // element-wise
  Identity: (_g, _n, dy) => [() => dy],
  Add: (g, { inputs: [a, b] }, dy) => [() => unbroadcast(g, dy, a!), () => unbroadcast(g, dy, b!)],
  Sub: (g, { inputs: [a, b] }, dy) => [() => unbroadcast(g, dy, a!), () => unbroadcast(g, g.neg(dy), b!)],
  Mul: (g, { inputs: [a, b] }, dy) => [
    () => unbroadcast(g, g.mul(dy, b!), a!),
    () => unbroadcast(g, g.mul(dy, a!), b!),
  ],
  Div: (g, { inputs: [a, b], outputs: [y] }, dy) => [
    () => unbroadcast(g, g.div(dy, b!), a!),
    () => unbroadcast(g, g.neg(g.div(g.mul(dy, y!), b!)), b!), // −dy·a/b² = −dy·y/b
  ],
  // Ties go to the first operand (as the forward's `a >= b`).
  Max: (g, { inputs: [a, b] }, dy) => routed(g, g.lessOrEqual(b!, a!), dy, a!, b!),
  Pow: (g, { inputs: [x, p], outputs: [y] }, dy) => [
    () => unbroadcast(g, g.mul(dy, g.mul(p!, g.pow(x!, g.sub(p!, g.scalarLike(1, p!))))), x!),
    () => unbroadcast(g, g.mul(g.mul(dy, y!), g.log(x!)), p!), // only when the exponent is trained
  ],
  Neg: (g, _n, dy) => [() => g.neg(dy)],
  Erf: (g, { inputs: [x] }, dy) => [
    () => g.mul(dy, g.mul(g.scalarLike(2 / Math.sqrt(Math.PI), dy), g.exp(g.neg(g.mul(x!, x!))))),
  ],
  Sqrt: (g, { outputs: [y] }, dy) => [() => g.div(dy, g.mul(y!, g.scalarLike(2, dy)))],
  Exp: (g, { outputs: [y] }, dy) => [() => g.mul(dy, y!)],
  Log: (g, { inputs: [x] }, dy) => [() => g.div(dy, x!)],
  Cos: (g, { inputs: [x] }, dy) => [() => g.neg(g.mul(dy, g.sin(x!)))],
  Sin: (g, { inputs: [x] }, dy) => [() => g.mul(dy, g.cos(x!))],
  Where: (g, { inputs: [c, a, b] }, dy) => [undefined, ...routed(g, c!, dy, a!, b!)],
  Cast: (g, { inputs: [x] }, dy) => [isFloat(x!) ? () => g.cast(dy, x!.dtype) : undefined],
  Sum: (g, { inputs }, dy) => inputs.map((x) => () => unbroadcast(g, dy, x)),

  // linear algebra, reductions, normalisation
  MatMul: (g, { inputs: [a, b] }, dy) => [
    () => unbroadcast(g, g.matmul(dy, g.transpose(b!, lastTwoSwapped(b!.shape.length))), a!),
    () => matmulGradB(g, a!, b!, dy),
  ],
  ReduceSum: (g, node, dy) => [() => g.expandLike(keepDims(g, node, dy).dyKeep, node.inputs[0]!)],
  ReduceMean: (g, node, dy) => [() => reduceMeanGrad(g, node, dy)],
  ReduceL2: (g, node, dy) => [
    () => {
      const x = node.inputs[0]!;
      const yKeep = keepDims(g, node, node.outputs[0]!).dyKeep; // y with the reduced axes kept
      const norm = g.max(yKeep, g.scalarLike(tiny(x.dtype), x)); // 0/0 → 0 for an all-zero row
      return g.mul(keepDims(g, node, dy).dyKeep, g.div(x, norm));
    },
  ],
  // Ties share the gradient equally (torch.amax), so the sum over a reduced slice is dy.
  ReduceMax: (g, node, dy) => [
    () => {
      const x = node.inputs[0]!;
      const { dyKeep, axes } = keepDims(g, node, dy);
      const yKeep = keepDims(g, node, node.outputs[0]!).dyKeep;
      const hit = g.cast(g.equal(x, yKeep), x.dtype);
      return g.mul(hit, g.div(dyKeep, g.reduce('ReduceSum', hit, axes, true)));
    },
  ],
  Softmax: (g, node, dy) => [
    () => {
      const y = node.outputs[0]!;
      const dyy = g.mul(dy, y);
      return g.mul(y, g.sub(dy, g.reduce('ReduceSum', dyy, [intAttr(node, 'axis', -1)], true)));
    },
  ],
  LayerNormalization: layerNormGrads,

  // indexing
  Gather: (g, node, dy) => [() => gatherGrad(g, node, dy), undefined],
  GatherElements: (g, { spec, inputs: [data, idx] }, dy) => [
    () => g.scatterElements(g.zerosLike(data!), idx!, dy, spec.attrs.axis?.value as number, 'add'),
    undefined,
  ],
  ScatterElements: (g, { spec, inputs: [, idx, updates] }, dy) => {
    const axis = spec.attrs.axis?.value as number;
    const reduction = spec.attrs.reduction?.value ?? 'none';
    if (reduction !== 'none' && reduction !== 'add') ruleError('ScatterElements', `reduction ${reduction}`);
    return [
      // `none` overwrites: the old values at the scattered positions get no gradient.
      reduction === 'add' ? () => dy : () => g.scatterElements(dy, idx!, g.zerosLike(updates!), axis),
      undefined,
      () => g.gatherElements(dy, idx!, axis),
    ];
  },

  // shape manipulation
  Transpose: (g, { spec, inputs: [x] }, dy) => {
    const given = spec.attrs.perm?.value as readonly number[] | undefined;
    const perm = given ?? x!.shape.map((_, i) => x!.shape.length - 1 - i);
    const inverse = perm.map((_, i) => perm.indexOf(i));
    return [() => withShape(g.transpose(dy, inverse), x!.shape)];
  },
  Reshape: (g, { inputs: [x] }, dy) => [() => g.reshapeLike(dy, x!), undefined],
  Unsqueeze: (g, { inputs: [x, axes] }, dy) => [
    () => withShape(g.squeeze(dy, staticInts(g, 'Unsqueeze', axes)!), x!.shape),
    undefined,
  ],
  Squeeze: (g, { inputs: [x, axes] }, dy) => {
    const given = staticInts(g, 'Squeeze', axes);
    return [
      () =>
        given === undefined
          ? g.reshapeLike(dy, x!)
          : withShape(
              g.unsqueeze(
                dy,
                given.map((a) => normAxis('Squeeze', a, x!.shape.length)),
              ),
              x!.shape,
            ),
      undefined,
    ];
  },
  Slice: (g, node, dy) => [() => sliceGrad(g, node, dy)],
  Pad: (g, { inputs: [x, pads] }, dy) => {
    const p = staticInts(g, 'Pad', pads)!;
    const r = x!.shape.length;
    if (p.some((v) => v < 0)) ruleError('Pad', 'negative pads are not supported');
    return [
      () => {
        let out = dy;
        for (let a = 0; a < r; a++) {
          const [b, e] = [p[a]!, p[a + r]!];
          if (b === 0 && e === 0) continue;
          const d = x!.shape[a]!;
          if (typeof d !== 'number')
            ruleError('Pad', `axis ${a} of ${shapeToString(x!.shape)} must be static`);
          out = g.slice(out, a, b, b + d);
        }
        return withShape(out, x!.shape);
      },
    ];
  },
  Concat: concatGrads,
  Expand: (g, { inputs: [x] }, dy) => [() => unbroadcast(g, dy, x!), undefined],

  // not differentiable
  Constant: NONE,
  Shape: NONE,
  Size: NONE,
  Range: NONE,
  LessOrEqual: NONE,
  Equal: NONE,
};

/** The rule for `op`, or undefined when the op has none (not a primitive of the builder). */
export function gradRule(op: string): GradRule | undefined {
  return Object.hasOwn(GRAD_RULES, op) ? GRAD_RULES[op as PrimitiveOp] : undefined;
}

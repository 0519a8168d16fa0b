import { fail } from '../util/errors.ts';
import { type DataType, type Dim, type Shape, shapeToString, type Value } from './types.ts';

/**
 * Build-time shape and dtype rules, so a wrong graph fails here with the op and shapes named
 * instead of inside onnxruntime. Symbols are compared by name: two different symbols are an
 * error (name equal run-time sizes with the same symbol).
 */

function graphError(op: string, message: string): never {
  fail('TF_ERR_GRAPH', `${op}: ${message}`);
}

/** Normalises a possibly negative axis against a rank. */
export function normAxis(op: string, axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= rank)
    graphError(op, `axis ${axis} out of range for rank ${rank}`);
  return a;
}

function broadcastDim(op: string, a: Dim, b: Dim, sa: Shape, sb: Shape): Dim {
  if (a === b) return a;
  if (a === 1) return b;
  if (b === 1) return a;
  if (typeof a === 'number' && typeof b === 'number') {
    graphError(op, `cannot broadcast ${shapeToString(sa)} with ${shapeToString(sb)}`);
  }
  graphError(op, `cannot prove ${shapeToString(sa)} and ${shapeToString(sb)} broadcast (dims ${a} vs ${b})`);
}

/** NumPy-style broadcasting of any number of shapes. */
export function broadcast(op: string, ...shapes: Shape[]): Dim[] {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out: Dim[] = new Array<Dim>(rank).fill(1);
  let acc: Shape = [];
  for (const s of shapes) {
    const padded: Dim[] = [...new Array<Dim>(rank - s.length).fill(1), ...s];
    for (let i = 0; i < rank; i++) out[i] = broadcastDim(op, out[i]!, padded[i]!, acc, s);
    acc = [...out];
  }
  return out;
}

export function matmulShape(a: Shape, b: Shape): Dim[] {
  if (a.length < 2 || b.length < 2) {
    graphError('MatMul', `operands must have rank ≥ 2, got ${shapeToString(a)} and ${shapeToString(b)}`);
  }
  const k1 = a[a.length - 1]!;
  const k2 = b[b.length - 2]!;
  if (k1 !== k2) {
    graphError('MatMul', `inner dims differ: ${shapeToString(a)} · ${shapeToString(b)} (${k1} vs ${k2})`);
  }
  const batch = broadcast('MatMul', a.slice(0, -2), b.slice(0, -2));
  return [...batch, a[a.length - 2]!, b[b.length - 1]!];
}

export function reduceShape(op: string, s: Shape, axes: readonly number[], keepdims: boolean): Dim[] {
  const norm = new Set(axes.map((a) => normAxis(op, a, s.length)));
  const out: Dim[] = [];
  s.forEach((d, i) => {
    if (!norm.has(i)) out.push(d);
    else if (keepdims) out.push(1);
  });
  return out;
}

export function transposeShape(s: Shape, perm: readonly number[]): Dim[] {
  const sorted = [...perm].sort((x, y) => x - y);
  if (perm.length !== s.length || sorted.some((p, i) => p !== i)) {
    graphError('Transpose', `perm ${JSON.stringify(perm)} is not a permutation of rank ${s.length}`);
  }
  return perm.map((p) => s[p]!);
}

function product(dims: readonly Dim[]): Dim {
  const nums = dims.filter((d): d is number => typeof d === 'number').reduce((a, b) => a * b, 1);
  const syms = dims.filter((d): d is string => typeof d === 'string');
  if (syms.length === 0) return nums;
  return [...(nums === 1 ? [] : [String(nums)]), ...syms].join('*');
}

/**
 * ONNX Reshape semantics: 0 copies the input dim at that index, -1 is inferred. The inferred dim
 * is computed when the known parts divide out (symbols cancel by name), else it becomes a symbol.
 */
export function reshapeShape(s: Shape, spec: readonly number[]): Dim[] {
  if (spec.filter((d) => d === -1).length > 1) graphError('Reshape', 'at most one -1 allowed');
  const out: Dim[] = spec.map((d, i) => {
    if (d === 0) {
      if (i >= s.length)
        graphError('Reshape', `0 at index ${i} but input ${shapeToString(s)} has rank ${s.length}`);
      return s[i]!;
    }
    if (d < -1 || !Number.isInteger(d)) graphError('Reshape', `invalid target dim ${d}`);
    return d;
  });
  const inferAt = out.indexOf(-1);
  const total = [...s];
  const known = out.filter((_, i) => i !== inferAt);
  // Cancel equal factors (numbers and symbols) between input and target.
  const rest = [...total];
  const unmatched: Dim[] = [];
  for (const d of known) {
    const j = rest.indexOf(d);
    if (j >= 0) rest.splice(j, 1);
    else unmatched.push(d);
  }
  const restNum = rest.filter((d): d is number => typeof d === 'number').reduce((a, b) => a * b, 1);
  const restSym = rest.filter((d): d is string => typeof d === 'string');
  const unNum = unmatched.filter((d): d is number => typeof d === 'number').reduce((a, b) => a * b, 1);
  const unSym = unmatched.filter((d): d is string => typeof d === 'string');
  if (inferAt < 0) {
    if (restSym.length === 0 && unSym.length === 0 && restNum !== unNum) {
      graphError(
        'Reshape',
        `cannot reshape ${shapeToString(s)} to ${shapeToString(out)}: element counts differ`,
      );
    }
    return out;
  }
  if (unSym.length === 0 && restNum % unNum === 0) {
    out[inferAt] = product([restNum / unNum, ...restSym]);
  } else if (restSym.length === 0 && unSym.length === 0) {
    graphError('Reshape', `cannot reshape ${shapeToString(s)} to ${JSON.stringify(spec)}: not divisible`);
  } else {
    out[inferAt] = `(${product(total)})/(${product(known)})`;
  }
  return out;
}

export function concatShape(shapes: readonly Shape[], axis: number): Dim[] {
  const first = shapes[0];
  if (!first) graphError('Concat', 'needs at least one input');
  const a = normAxis('Concat', axis, first.length);
  const out = [...first];
  for (const s of shapes.slice(1)) {
    if (s.length !== first.length)
      graphError('Concat', `rank mismatch ${shapeToString(first)} vs ${shapeToString(s)}`);
    s.forEach((d, i) => {
      if (i !== a && d !== first[i]) {
        graphError('Concat', `dim ${i} differs: ${shapeToString(first)} vs ${shapeToString(s)}`);
      }
    });
    const cur = out[a]!;
    const add = s[a]!;
    out[a] = typeof cur === 'number' && typeof add === 'number' ? cur + add : `${cur}+${add}`;
  }
  return out;
}

/** Static Slice along one axis with ONNX clamping; symbolic dims give a symbolic result. */
export function sliceShape(s: Shape, axis: number, start: number, end: number): Dim[] {
  const a = normAxis('Slice', axis, s.length);
  const d = s[a]!;
  const out = [...s];
  if (typeof d === 'number') {
    const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + d : v, 0), d);
    out[a] = Math.max(clamp(end) - clamp(start), 0);
  } else if (start >= 0 && end >= 0 && end < 2 ** 62) {
    out[a] = end - start; // assumes the symbol is at least `end` long, as every caller does
  } else {
    out[a] = `slice(${d},${start},${end})`;
  }
  return out;
}

export function unsqueezeShape(s: Shape, axes: readonly number[]): Dim[] {
  const rank = s.length + axes.length;
  const norm = axes.map((a) => normAxis('Unsqueeze', a, rank)).sort((x, y) => x - y);
  const out: Dim[] = [...s];
  for (const a of norm) out.splice(a, 0, 1);
  return out;
}

/** The float dtypes, the only ones the math ops (MatMul, Softmax, Exp, …) take. */
export const FLOAT_TYPES: readonly DataType[] = ['float32', 'float64', 'float16'];

/** The one dtype all of `vals` share, which must be among `allowed` when given. */
export function sameDtype(op: string, vals: readonly Value[], allowed?: readonly DataType[]): DataType {
  const t = vals[0]!.dtype;
  for (const v of vals) {
    if (v.dtype !== t) graphError(op, `dtype mismatch ${vals.map((x) => `${x.name}:${x.dtype}`).join(', ')}`);
  }
  if (allowed && !allowed.includes(t)) graphError(op, `dtype ${t} not supported`);
  return t;
}

export function indexDtype(op: string, indices: Value): void {
  if (indices.dtype !== 'int64' && indices.dtype !== 'int32') {
    graphError(op, `indices must be int64 or int32, got ${indices.dtype}`);
  }
}

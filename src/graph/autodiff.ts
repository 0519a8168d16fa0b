import { fail, invariant } from '../util/errors.ts';
import type { GraphBuilder } from './builder.ts';
import { type ForwardNode, gradRule, isFloat } from './gradients.ts';
import { type NodeSpec, shapeToString, type Value } from './types.ts';

/**
 * Reverse-mode automatic differentiation over a built graph: emits the gradient nodes into the
 * same builder and returns d loss / d w for every `w` in `wrt` (zeros where `w` does not reach
 * the loss). Only the nodes on a path from `wrt` to `loss` are differentiated, in reverse
 * topological order (the builder appends nodes after their inputs exist, so reverse node order
 * is one); a value used several times sums its gradients. Values marked by `stopGradient` are
 * constants here.
 */
export function gradients(g: GraphBuilder, loss: Value, wrt: readonly Value[]): Value[] {
  if (!isFloat(loss) || loss.shape.some((d) => d !== 1)) {
    fail(
      'TF_ERR_GRAPH',
      `gradients: the loss must be a float scalar, got ${loss.dtype} ${shapeToString(loss.shape)}`,
    );
  }
  for (const w of wrt) {
    if (!isFloat(w))
      fail('TF_ERR_GRAPH', `gradients: cannot differentiate with respect to ${w.name} (${w.dtype})`);
  }
  const nodes = [...g.nodes]; // a snapshot: the gradient nodes are appended behind it

  // Forward: the float values that depend on some `wrt`.
  const live = new Set(wrt.map((w) => w.name));
  for (const n of nodes) {
    if (!n.inputs.some((i) => live.has(i))) continue;
    for (const o of n.outputs) if (!g.detached.has(o) && isFloat(g.valueOf(o))) live.add(o);
  }

  // Backward: the nodes between them and the loss, last first.
  const needed = new Set([loss.name]);
  const path: NodeSpec[] = [];
  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i]!;
    if (!n.outputs.some((o) => needed.has(o) && live.has(o))) continue;
    path.push(n);
    for (const inp of n.inputs) if (live.has(inp)) needed.add(inp);
  }

  const parts = new Map<string, Value[]>();
  const contribute = (v: Value, grad: Value) => {
    const list = parts.get(v.name);
    if (list) list.push(grad);
    else parts.set(v.name, [grad]);
  };
  /** The total gradient of `v`: its contributions summed by one node. */
  const total = (v: Value): Value | undefined => {
    const list = parts.get(v.name);
    if (!list) return undefined;
    const sum = list.length === 1 ? list[0]! : g.sum(list);
    const out: Value = { name: sum.name, dtype: v.dtype, shape: v.shape };
    parts.set(v.name, [out]);
    return out;
  };

  if (live.has(loss.name)) {
    const one = g.scalarLike(1, loss); // the seed: d loss / d loss
    contribute(loss, loss.shape.length === 0 ? one : g.expandLike(one, loss));
  }
  for (const n of path) {
    const out = g.valueOf(n.outputs[0]!);
    if (n.domain !== '') {
      fail(
        'TF_ERR_GRAPH',
        `gradients: ${n.domain}::${n.op} (node ${n.name}) is a custom op (a local function) and has no ` +
          `gradient rule; build the model with pattention: 'inline' to differentiate it`,
      );
    }
    const dy = total(out);
    if (!dy) continue; // gradient stopped downstream (a non-differentiable consumer)
    const rule = gradRule(n.op);
    if (!rule) {
      fail(
        'TF_ERR_GRAPH',
        `gradients: no gradient rule for op ${n.op} (node ${n.name}); add one to GRAD_RULES in src/graph/gradients.ts`,
      );
    }
    invariant(n.outputs.length === 1, `${n.op} has one output`);
    const node: ForwardNode = { spec: n, inputs: n.inputs.map((i) => g.valueOf(i)), outputs: [out] };
    const grads = rule(g, node, dy);
    node.inputs.forEach((x, i) => {
      const build = grads[i];
      if (!live.has(x.name) || !build) return;
      const grad = build();
      checkGradient(n, x, grad);
      contribute(x, { name: grad.name, dtype: x.dtype, shape: x.shape });
    });
  }
  return wrt.map((w) => total(w) ?? g.zerosLike(w));
}

/** A rule's result must match its input's dtype and static dims (symbols may be spelled differently). */
function checkGradient(n: NodeSpec, x: Value, grad: Value): void {
  const ok =
    grad.dtype === x.dtype &&
    grad.shape.length === x.shape.length &&
    grad.shape.every((d, i) => {
      const e = x.shape[i]!;
      return d === e || typeof d === 'string' || typeof e === 'string';
    });
  invariant(
    ok,
    `gradient of ${n.op} (node ${n.name}) for ${x.name}: got ${grad.dtype} ${shapeToString(grad.shape)}, ` +
      `expected ${x.dtype} ${shapeToString(x.shape)}`,
  );
}

import { gradients } from '../graph/autodiff.ts';
import { GraphBuilder } from '../graph/builder.ts';
import { crossEntropy, globalNorm } from '../graph/composites.ts';
import type { Value } from '../graph/types.ts';
import type { TokenFormerConfig } from '../model/config.ts';
import { type ParamSpec, paramSpecs } from '../model/params.ts';
import { type Ctx, causalAttend, tokenformer } from '../model/tokenformer.ts';

/**
 * One optimizer step as one ONNX graph: forward (the same TokenFormer definition, Pattention
 * inlined so it can be differentiated), reverse-mode gradients, global grad-norm clipping and
 * AdamW (torch.optim.AdamW semantics: bias correction, decoupled weight decay).
 *
 * Inputs: `input_ids`, `labels` int64 [batch, seq]; per parameter `p.{name}`, `m.{name}`,
 * `v.{name}` (weights and Adam moments, owned by the trainer and fed zero-copy); scalars `lr`,
 * `bias_correction1` = 1 − β1ᵗ, `bias_correction2` = 1 − β2ᵗ (computed in float64 by the
 * trainer, so the schedule stays a pure function of the step outside the graph).
 * Outputs: `loss`, `grad_norm` (before clipping), and `new_p.{name}`, `new_m.{name}`,
 * `new_v.{name}`. onnxruntime-node copies every output once (DESIGN.md §3): that copy is the
 * step's only memory traffic outside the graph.
 */

export interface OptimizerConfig {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Max global L2 norm of the gradients; 0 disables clipping. */
  clipNorm: number;
}

/** The official recipe (DESIGN.md §2). */
export const OFFICIAL_OPTIMIZER: OptimizerConfig = {
  beta1: 0.9,
  beta2: 0.95,
  eps: 1e-8,
  weightDecay: 0.1,
  clipNorm: 1.0,
};

export const STEP_OUTPUTS = { loss: 'loss', gradNorm: 'grad_norm' } as const;

export function stateName(
  kind: 'p' | 'm' | 'v' | 'new_p' | 'new_m' | 'new_v' | 'grad',
  param: string,
): string {
  return `${kind}.${param}`;
}

/** Mean next-token cross-entropy of the model on (ids, labels). */
function forwardLoss(
  g: GraphBuilder,
  cfg: TokenFormerConfig,
  w: Ctx['w'],
  ids: Value,
  labels: Value,
  pattention: 'inline' | 'function',
): Value {
  const c: Ctx = { g, cfg, w, opts: { pattention } };
  const positions = g.unsqueeze(g.range(g.dimSize(ids, 1), 'seq'), [0]); // [1, T]
  const logits = tokenformer(c, ids, positions, causalAttend(c)); // [B, T, V]
  return crossEntropy(g, logits, labels); // []
}

/** Validation graph: weights `p.{name}` as inputs (the trainer's live buffers) → `loss`. */
export function buildEvalGraph(cfg: TokenFormerConfig): GraphBuilder {
  const g = new GraphBuilder();
  const ids = g.input('input_ids', 'int64', ['batch', 'seq']);
  const labels = g.input('labels', 'int64', ['batch', 'seq']);
  const p = new Map(
    paramSpecs(cfg).map((s) => [s.name, g.input(stateName('p', s.name), 'float32', s.shape)]),
  );
  g.output(
    forwardLoss(g, cfg, (name) => p.get(name)!, ids, labels, 'function'),
    STEP_OUTPUTS.loss,
  );
  return g;
}

/** Builds the step graph; `withGradients` also outputs raw gradients `grad.{name}` (tests). */
export function buildTrainingStepGraph(
  cfg: TokenFormerConfig,
  opt: OptimizerConfig,
  opts: { withGradients?: boolean } = {},
): GraphBuilder {
  const g = new GraphBuilder();
  const ids = g.input('input_ids', 'int64', ['batch', 'seq']);
  const labels = g.input('labels', 'int64', ['batch', 'seq']);
  const specs = paramSpecs(cfg);
  const p = new Map<string, Value>();
  const m = new Map<string, Value>();
  const v = new Map<string, Value>();
  for (const s of specs) p.set(s.name, g.input(stateName('p', s.name), 'float32', s.shape));
  for (const s of specs) m.set(s.name, g.input(stateName('m', s.name), 'float32', s.shape));
  for (const s of specs) v.set(s.name, g.input(stateName('v', s.name), 'float32', s.shape));
  const lr = g.input('lr', 'float32', []);
  const bc1 = g.input('bias_correction1', 'float32', []);
  const bc2 = g.input('bias_correction2', 'float32', []);

  const loss = forwardLoss(g, cfg, (name) => p.get(name)!, ids, labels, 'inline');
  const grads = gradients(
    g,
    loss,
    specs.map((s) => p.get(s.name)!),
  );
  g.output(loss, STEP_OUTPUTS.loss);
  const norm = globalNorm(g, grads); // []
  g.output(norm, STEP_OUTPUTS.gradNorm);
  if (opts.withGradients) {
    for (const [i, s] of specs.entries()) g.output(grads[i]!, stateName('grad', s.name));
  }

  // torch.nn.utils.clip_grad_norm_: g · min(1, max_norm / (norm + 1e-6)), written as
  // 1 / max(1, (norm + 1e-6) / max_norm).
  const clip =
    opt.clipNorm > 0
      ? g.div(g.scalar(1), g.max(g.scalar(1), g.div(g.add(norm, g.scalar(1e-6)), g.scalar(opt.clipNorm))))
      : g.scalar(1);
  for (const [i, s] of specs.entries()) {
    const state = { p: p.get(s.name)!, m: m.get(s.name)!, v: v.get(s.name)! };
    adamw(g, s, opt, state, g.mul(grads[i]!, clip), { lr, bc1, bc2 });
  }
  return g;
}

/** torch.optim.AdamW for one tensor: decay first, then the bias-corrected Adam update. */
function adamw(
  g: GraphBuilder,
  s: ParamSpec,
  opt: OptimizerConfig,
  state: { p: Value; m: Value; v: Value },
  grad: Value,
  sched: { lr: Value; bc1: Value; bc2: Value },
): void {
  const decayed =
    s.decay && opt.weightDecay > 0
      ? g.mul(state.p, g.sub(g.scalar(1), g.mul(sched.lr, g.scalar(opt.weightDecay))))
      : state.p;
  const m = g.add(g.mul(state.m, g.scalar(opt.beta1)), g.mul(grad, g.scalar(1 - opt.beta1)));
  const v = g.add(g.mul(state.v, g.scalar(opt.beta2)), g.mul(g.mul(grad, grad), g.scalar(1 - opt.beta2)));
  const denom = g.add(g.div(g.sqrt(v), g.sqrt(sched.bc2)), g.scalar(opt.eps));
  const step = g.div(g.mul(sched.lr, g.div(m, denom)), sched.bc1);
  g.output(g.sub(decayed, step), stateName('new_p', s.name));
  g.output(m, stateName('new_m', s.name));
  g.output(v, stateName('new_v', s.name));
}

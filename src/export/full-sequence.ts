import { GraphBuilder, tensor } from '../graph/builder.ts';
import type { TokenFormerConfig } from '../model/config.ts';
import { paramSpecs } from '../model/params.ts';
import { type Ctx, causalAttend, tokenformer } from '../model/tokenformer.ts';
import { fail } from '../util/errors.ts';

/**
 * The exported full-sequence graph (DESIGN.md §5): input `input_ids` int64 [batch, seq], output
 * `logits` float32 [batch, seq, vocab], weights as initializers, every Pattention one
 * `ai.tokenformer::Pattention` node. No cache inputs: any ONNX runtime can run it as is.
 */
export function buildFullSequenceGraph(
  cfg: TokenFormerConfig,
  params: ReadonlyMap<string, Float32Array>,
): GraphBuilder {
  const g = new GraphBuilder();
  const ids = g.input('input_ids', 'int64', ['batch', 'seq']);
  const weights = new Map(
    paramSpecs(cfg).map((spec) => {
      const data = params.get(spec.name);
      if (!data) fail('TF_ERR_BAD_CHECKPOINT', `parameter ${spec.name} is missing`);
      return [spec.name, g.initializer(spec.name, tensor('float32', spec.shape, data))] as const;
    }),
  );
  const c: Ctx = {
    g,
    cfg,
    w: (name) => weights.get(name) ?? fail('TF_ERR_GRAPH', `no weight named ${name}`),
    opts: { pattention: 'function' },
  };
  const positions = g.unsqueeze(g.range(g.dimSize(ids, 1), 'seq'), [0]); // [1, T]
  g.output(tokenformer(c, ids, positions, causalAttend(c)), 'logits');
  return g;
}

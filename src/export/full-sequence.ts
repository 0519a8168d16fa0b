import { GraphBuilder } from '../graph/builder.ts';
import type { TokenFormerConfig } from '../model/config.ts';
import { causalAttend, type GraphDType, tokenformer } from '../model/tokenformer.ts';
import { initializerContext } from './weights.ts';

/**
 * The exported full-sequence graph (DESIGN.md §5): input `input_ids` int64 [batch, seq], output
 * `logits` float32 [batch, seq, vocab], weights as initializers, every Pattention one
 * `ai.tokenformer::Pattention` node. No cache inputs: any ONNX runtime can run it as is.
 */
export function buildFullSequenceGraph(
  cfg: TokenFormerConfig,
  params: ReadonlyMap<string, Float32Array>,
  dtype: GraphDType = 'float32',
): GraphBuilder {
  const g = new GraphBuilder();
  const ids = g.input('input_ids', 'int64', ['batch', 'seq']);
  const c = initializerContext(g, cfg, params, dtype);
  const positions = g.unsqueeze(g.range(g.dimSize(ids, 1), 'seq'), [0]); // [1, T]
  g.output(tokenformer(c, ids, positions, causalAttend(c)), 'logits');
  return g;
}

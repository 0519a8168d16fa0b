import type { GraphBuilder } from '../graph/builder.ts';
import { tensor } from '../graph/types.ts';
import type { TokenFormerConfig } from '../model/config.ts';
import { paramSpecs } from '../model/params.ts';
import type { Ctx, GraphDType } from '../model/tokenformer.ts';
import { f32ToF16 } from '../util/dtype.ts';
import { fail } from '../util/errors.ts';

/**
 * The build context of the serving graphs: every parameter an initializer of `g`, Pattention as
 * one custom-op node per site. Shared by the full-sequence and the KV-cache decoder graphs.
 */
export function initializerContext(
  g: GraphBuilder,
  cfg: TokenFormerConfig,
  params: ReadonlyMap<string, Float32Array>,
  dtype: GraphDType = 'float32',
): Ctx {
  const weights = new Map(
    paramSpecs(cfg).map((spec) => {
      const data = params.get(spec.name);
      if (!data) fail('TF_ERR_BAD_CHECKPOINT', `parameter ${spec.name} is missing`);
      const t =
        dtype === 'float16'
          ? tensor('float16', spec.shape, f32ToF16(data))
          : tensor('float32', spec.shape, data);
      return [spec.name, g.initializer(spec.name, t)] as const;
    }),
  );
  return {
    g,
    cfg,
    w: (name) => weights.get(name) ?? fail('TF_ERR_GRAPH', `no weight named ${name}`),
    opts: { pattention: 'function', dtype },
  };
}

import assert from 'node:assert/strict';
import test from 'node:test';
import { buildFullSequenceGraph } from '../../src/export/full-sequence.ts';
import { serializeModel } from '../../src/graph/serialize.ts';
import type { TokenFormerConfig } from '../../src/model/config.ts';
import { PATTENTION_DOMAIN } from '../../src/model/tokenformer.ts';
import { OrtSession } from '../../src/runtime/ort.ts';
import { maxAbsDiff, tinyConfig } from '../helpers.ts';
import { referenceLogits } from '../reference/tokenformer-f64.ts';
import { f32Params } from './params.ts';

function randomIds(cfg: TokenFormerConfig, b: number, t: number, seed: number): number[][] {
  let s = seed;
  const next = () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return s % cfg.vocab_size;
  };
  return Array.from({ length: b }, () => Array.from({ length: t }, next));
}

async function onnxLogits(cfg: TokenFormerConfig, params: Map<string, Float32Array>, ids: number[][]) {
  const g = buildFullSequenceGraph(cfg, params);
  const session = await OrtSession.create(serializeModel(g, { graphName: 'test' }), { device: 'cpu' });
  try {
    const flat = BigInt64Array.from(ids.flat(), BigInt);
    const out = await session.run({ input_ids: [flat, [ids.length, ids[0]!.length]] });
    return { logits: out.logits!, graph: g };
  } finally {
    await session.release();
  }
}

const CASES: [string, Partial<TokenFormerConfig>][] = [
  ['rotary_pct 0.25', {}],
  ['rotary_pct 0 (no rotary)', { rotary_pct: 0 }],
  ['rotary_pct 1 (whole head)', { rotary_pct: 1 }],
  ['one head, one layer', { num_heads: 1, num_layers: 1, rotary_pct: 0.5 }],
  [
    '8 heads, tokens < hidden',
    {
      hidden_size: 32,
      num_heads: 8,
      rotary_pct: 0.5,
      qkv: { tokens: 7, tau: 2.5 },
      ffn: { tokens: 5, tau: 1 },
    },
  ],
];

for (const [name, over] of CASES) {
  test(`exported logits match the float64 reference: ${name}`, async () => {
    const cfg = tinyConfig(over);
    const params = f32Params(cfg, 7);
    const ids = randomIds(cfg, 2, 11, 3);
    const { logits } = await onnxLogits(cfg, params, ids);
    assert.deepEqual(logits.dims, [2, 11, cfg.vocab_size]);
    const ref = referenceLogits(cfg, params, ids);
    const scale = ref.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
    assert.ok(scale > 1, `logits should be O(1) or more to make the check meaningful, got ${scale}`);
    const diff = maxAbsDiff(logits.data as Float32Array, ref);
    assert.ok(diff <= 1e-4, `max |onnx − reference| = ${diff}`);
  });
}

test('every Pattention is one ai.tokenformer node backed by a local function', async () => {
  const cfg = tinyConfig();
  const { graph } = await onnxLogits(cfg, f32Params(cfg, 1), [[1, 2, 3]]);
  const pattNodes = graph.nodes.filter((n) => n.domain === PATTENTION_DOMAIN);
  assert.equal(pattNodes.length, 5 * cfg.num_layers);
  assert.ok(pattNodes.every((n) => n.op === 'Pattention' && n.attrs.tau?.type === 'float'));
  assert.deepEqual([...graph.functions.keys()], [`${PATTENTION_DOMAIN}::Pattention`]);
  // Outside the function, no MatMul touches parameter tokens: only attention and the tied head.
  const matmuls = graph.nodes.filter((n) => n.op === 'MatMul').length;
  assert.equal(matmuls, 2 * cfg.num_layers + 1);
});

test('a single-token sequence and batch rows are independent', async () => {
  const cfg = tinyConfig();
  const params = f32Params(cfg, 5);
  const both = await onnxLogits(cfg, params, [
    [4, 9, 1],
    [7, 7, 2],
  ]);
  const alone = await onnxLogits(cfg, params, [[7, 7, 2]]);
  const second = (both.logits.data as Float32Array).subarray(3 * cfg.vocab_size);
  assert.ok(maxAbsDiff(second, alone.logits.data as Float32Array) <= 1e-5);
  const one = await onnxLogits(cfg, params, [[4]]);
  assert.deepEqual(one.logits.dims, [1, 1, cfg.vocab_size]);
});

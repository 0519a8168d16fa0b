import assert from 'node:assert/strict';
import test from 'node:test';
import { fromOfficialConfig, rotaryDims, validateModelConfig } from '../../src/model/config.ts';
import { paramCount, paramSpecs } from '../../src/model/params.ts';
import { tinyConfig } from '../helpers.ts';

const OFFICIAL_150M = {
  num_layers: 12,
  hidden_size: 768,
  num_attention_heads: 12,
  qkv_slot_num: 768,
  proj_slot_num: 768,
  ffn_slot_num: 3072,
  rotary_pct: 0.25,
  norm_activation_type: 'l2_norm_gelu',
  seq_length: 2048,
};

test('official config: τ = √n per kind, defaults for base/eps, vocab from the embedding rows', () => {
  const c = fromOfficialConfig(OFFICIAL_150M, 50304);
  assert.equal(c.vocab_size, 50304);
  assert.equal(c.qkv.tau, Math.sqrt(768));
  assert.equal(c.ffn.tau, Math.sqrt(3072));
  assert.equal(c.rotary_base, 10000);
  assert.equal(c.layernorm_eps, 1e-5);
  assert.equal(rotaryDims(c), 16);
  // The released 150M model: ≈ 150M parameters (embedding included).
  assert.ok(Math.abs(paramCount(c) - 151e6) < 3e6, `paramCount ${paramCount(c)}`);
});

test('bad official configs are refused with the reason', () => {
  const bad = (over: Record<string, unknown>, re: RegExp) =>
    assert.throws(() => fromOfficialConfig({ ...OFFICIAL_150M, ...over }, 50304, 'x/config.json'), re);
  bad(
    { norm_activation_type: 'gelu_l2_norm' },
    /x\/config.json: norm_activation_type "gelu_l2_norm" is not supported/,
  );
  bad({ norm_activation_type: 'softmax' }, /only "l2_norm_gelu"/);
  bad({ num_attention_heads: 7 }, /num_heads \(7\) must divide hidden_size \(768\)/);
  bad({ rotary_pct: 0.3 }, /rotary dims per head \(floor\(64 · 0.3\) = 19\) must be even/);
  bad({ qkv_slot_num: 0 }, /"qkv_slot_num" must be a positive integer, got 0/);
  bad({ ffn_slot_num: 1.5 }, /"ffn_slot_num" must be a positive integer/);
  bad({ hidden_size: undefined }, /"hidden_size" must be a positive integer, got undefined/);
  bad({ vocab_size: 60000 }, /vocab_size 60000 exceeds the 50304 rows/);
  bad({ rotary_pct: 2 }, /rotary_pct must be in \[0, 1\]/);
  assert.throws(() => fromOfficialConfig([], 10), /must be a JSON object/);
});

test('our config validation names the field and the problem', () => {
  const good = tinyConfig();
  assert.deepEqual(validateModelConfig(JSON.parse(JSON.stringify(good))), good);
  const bad = (over: Record<string, unknown>, re: RegExp) =>
    assert.throws(() => validateModelConfig({ ...good, ...over }, 'ck/config.json'), re);
  bad({ qkv: { tokens: -3, tau: 1 } }, /ck\/config.json.qkv: "tokens" must be a positive integer, got -3/);
  bad({ ffn: { tokens: 4, tau: 0 } }, /ck\/config.json.ffn: "tau" must be a positive number, got 0/);
  bad({ proj: 12 }, /"proj" must be an object \{tokens, tau\}/);
  bad({ norm_activation: 'relu' }, /norm_activation_type "relu" is not supported/);
  bad({ num_heads: 5 }, /num_heads \(5\) must divide hidden_size \(24\)/);
  bad({ layernorm_eps: 'small' }, /"layernorm_eps" must be a positive number/);
  assert.throws(
    () => validateModelConfig(null, 'ck/config.json'),
    /ck\/config.json: model config must be a JSON object/,
  );
});

test('parameter specs: names, shapes and the official names they map to', () => {
  const c = tinyConfig();
  const specs = paramSpecs(c);
  assert.equal(specs.length, 1 + c.num_layers * 10 + 2);
  const byName = new Map(specs.map((s) => [s.name, s]));
  assert.deepEqual(byName.get('layers.1.attn.o.keys')?.shape, [c.proj.tokens, c.hidden_size]);
  assert.equal(byName.get('layers.1.attn.o.keys')?.official, 'sequential.3.attention.proj.key_param_tokens');
  assert.equal(byName.get('layers.0.ffn.values')?.official, 'sequential.2.mlp.value_param_tokens');
  assert.equal(byName.get('final_norm.bias')?.official, `sequential.${c.num_layers + 3}.norm.bias`);
  assert.equal(byName.get('final_norm.weight')?.decay, false);
  assert.equal(byName.get('embed.weight')?.decay, true);
});

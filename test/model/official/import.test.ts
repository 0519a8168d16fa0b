import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'node:test';
import { loadCheckpoint, TOKENIZER_FILE } from '../../../src/model/checkpoint.ts';
import type { TokenFormerConfig } from '../../../src/model/config.ts';
import { importOfficial } from '../../../src/model/official/import.ts';
import { type ParamSpec, paramSpecs } from '../../../src/model/params.ts';
import { f32ToF16 } from '../../../src/util/dtype.ts';
import { buildCheckpoint, type TensorSpec } from '../../formats/helpers.ts';
import { tempDir, tinyConfig } from '../../helpers.ts';

function officialConfig(c: TokenFormerConfig): Record<string, unknown> {
  return {
    architectures: ['TokenFormerForCausalLM'],
    num_layers: c.num_layers,
    hidden_size: c.hidden_size,
    num_attention_heads: c.num_heads,
    qkv_slot_num: c.qkv.tokens,
    proj_slot_num: c.proj.tokens,
    ffn_slot_num: c.ffn.tokens,
    seq_length: c.max_seq_len,
    rotary_pct: c.rotary_pct,
    rotary_emb_base: c.rotary_base,
    layernorm_epsilon: c.layernorm_eps,
    norm_activation_type: 'l2_norm_gelu',
    vocab_size: c.vocab_size,
  };
}

function values(spec: ParamSpec): Float32Array {
  const n = spec.shape.reduce((a, b) => a * b, 1);
  return Float32Array.from({ length: n }, (_, i) => Math.sin(i + spec.name.length) * 0.5);
}

/** Writes an official-layout release directory; `edit` may drop, rename or reshape tensors. */
function writeRelease(
  dir: string,
  cfg: TokenFormerConfig,
  opts: { half?: boolean; edit?: (specs: ParamSpec[]) => ParamSpec[]; config?: Record<string, unknown> } = {},
): void {
  const specs = (opts.edit ?? ((s) => s))(paramSpecs(cfg));
  const tensors: TensorSpec[] = [];
  const storages: Record<string, Uint8Array> = {};
  specs.forEach((s, i) => {
    const v = values(s);
    const bytes = opts.half ? f32ToF16(v) : v;
    storages[String(i)] = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const stride = s.shape.length === 2 ? [s.shape[1]!, 1] : [1];
    tensors.push({
      name: s.official,
      storageType: opts.half ? 'HalfStorage' : 'FloatStorage',
      key: String(i),
      numel: v.length,
      shape: s.shape,
      stride,
    });
  });
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    join(dir, 'pytorch_model.bin'),
    buildCheckpoint({ tensors, storages, prefix: 'pytorch_model' }),
  );
  writeFileSync(join(dir, 'config.json'), JSON.stringify(opts.config ?? officialConfig(cfg)));
}

test('import maps every official tensor to our name, fp32 exactly and fp16 storages converted', async (t) => {
  const cfg = tinyConfig();
  const root = tempDir(t);
  for (const half of [false, true]) {
    const rel = join(root, `rel-${half}`);
    writeRelease(rel, cfg, { half });
    const meta = await importOfficial(rel, join(root, `out-${half}`));
    assert.deepEqual(meta.model.qkv, { tokens: cfg.qkv.tokens, tau: Math.sqrt(cfg.qkv.tokens) });
    assert.equal(meta.provenance.source, 'import');
    const ck = loadCheckpoint(join(root, `out-${half}`));
    for (const s of paramSpecs(cfg)) {
      const want = values(s);
      const got = ck.params.get(s.name)!;
      const tol = half ? 2e-3 : 0;
      assert.ok(
        got.every((x, i) => Math.abs(x - want[i]!) <= tol),
        `${s.name} (${s.official}) differs`,
      );
    }
  }
});

test('missing, unexpected and mis-shaped official tensors are all listed', async (t) => {
  const cfg = tinyConfig();
  const root = tempDir(t);
  const rel = join(root, 'rel');
  writeRelease(rel, cfg, {
    edit: (specs) => [
      ...specs
        .filter((s) => !s.official.startsWith('sequential.3.mlp'))
        .map((s) => (s.name === 'final_norm.weight' ? { ...s, shape: [7] } : s)),
      { name: 'x', official: 'sequential.9.rotary_emb.inv_freq', shape: [4], decay: false },
    ],
  });
  await assert.rejects(importOfficial(rel, join(root, 'out')), (err: Error) => {
    assert.match(
      err.message,
      /pytorch_model.bin: missing tensors: sequential.3.mlp.key_param_tokens, sequential.3.mlp.value_param_tokens/,
    );
    assert.match(err.message, /unexpected tensors: sequential.9.rotary_emb.inv_freq/);
    assert.match(err.message, /sequential.5.norm.weight is \[7\], expected \[24\]/);
    return true;
  });
});

test('bad release directories: missing files, bad config, unsupported activation', async (t) => {
  const cfg = tinyConfig();
  const root = tempDir(t);
  await assert.rejects(
    importOfficial(join(root, 'nope'), join(root, 'out')),
    /nope\/config.json does not exist/,
  );
  const rel = join(root, 'rel');
  writeRelease(rel, cfg, { config: { ...officialConfig(cfg), norm_activation_type: 'gelu_l2_norm' } });
  await assert.rejects(
    importOfficial(rel, join(root, 'out')),
    /norm_activation_type "gelu_l2_norm" is not supported/,
  );
  writeFileSync(join(rel, 'config.json'), '{');
  await assert.rejects(importOfficial(rel, join(root, 'out')), /rel\/config.json: not valid JSON/);
  writeRelease(rel, cfg);
  writeFileSync(
    join(rel, 'pytorch_model.bin'),
    readFileSync(join(rel, 'pytorch_model.bin')).subarray(0, 500),
  );
  await assert.rejects(importOfficial(rel, join(root, 'out')), /pytorch_model.bin/);
});

test('tokenizer.json is copied and its end-of-text id recorded', async (t) => {
  const cfg = tinyConfig();
  const root = tempDir(t);
  const rel = join(root, 'rel');
  writeRelease(rel, cfg);
  const tok = { version: '1.0', added_tokens: [{ id: 60, content: '<|endoftext|>', special: true }] };
  writeFileSync(join(rel, TOKENIZER_FILE), JSON.stringify(tok));
  const meta = await importOfficial(rel, join(root, 'out'));
  assert.deepEqual(meta.tokenizer, { file: TOKENIZER_FILE, eos_token_id: 60 });
  assert.deepEqual(JSON.parse(readFileSync(join(root, 'out', TOKENIZER_FILE), 'utf8')), tok);
});

import { join } from 'node:path';
import { exportCheckpoint } from '../../src/export/export.ts';
import { saveCheckpoint, TOKENIZER_FILE } from '../../src/model/checkpoint.ts';
import type { TokenFormerConfig } from '../../src/model/config.ts';
import { initParams } from '../../src/model/init.ts';
import { importOfficial } from '../../src/model/official/import.ts';
import { byteLevelBpeJson, saveTokenizer, type TokenizerJson } from '../../src/tokenizer/bpe-trainer.ts';
import { BYTE_ORDER, BYTE_TO_SYMBOL } from '../../src/tokenizer/byte-level.ts';
import { newModelConfig } from '../../src/train/setup.ts';

/**
 * The shapes gpu-check measures and the models it builds for them: the official 150M shape with
 * random weights (and a byte-pair tokenizer of its vocabulary, so the server can serve it), and
 * the official-tiny fixture. `quick` shrinks every shape so the whole command runs on a CPU.
 */

export interface Shapes {
  model: {
    layers: number;
    hidden: number;
    heads: number;
    qkv: number;
    proj: number;
    ffn: number;
    vocab: number;
    maxSeqLen: number;
  };
  prefillTokens: number;
  decodePrompt: number;
  decodeNew: number;
  decodeBatches: number[];
  servedStreams: number;
  train: { batch: number; seq: number; steps: number };
  parityTokens: number;
}

export const FULL: Shapes = {
  model: {
    layers: 12,
    hidden: 768,
    heads: 12,
    qkv: 768,
    proj: 768,
    ffn: 3072,
    vocab: 50304,
    maxSeqLen: 2048,
  },
  prefillTokens: 2048,
  decodePrompt: 512,
  decodeNew: 128,
  decodeBatches: [1, 16, 64],
  servedStreams: 64,
  train: { batch: 16, seq: 1024, steps: 4 },
  parityTokens: 64,
};

export const QUICK: Shapes = {
  model: { layers: 2, hidden: 64, heads: 4, qkv: 32, proj: 32, ffn: 64, vocab: 512, maxSeqLen: 128 },
  prefillTokens: 64,
  decodePrompt: 16,
  decodeNew: 8,
  decodeBatches: [1, 4],
  servedStreams: 4,
  train: { batch: 2, seq: 32, steps: 2 },
  parityTokens: 16,
};

export function configOf(s: Shapes): TokenFormerConfig {
  const m = s.model;
  return newModelConfig({
    layers: m.layers,
    hidden: m.hidden,
    heads: m.heads,
    qkvTokens: m.qkv,
    projTokens: m.proj,
    ffnTokens: m.ffn,
    vocabSize: m.vocab,
    maxSeqLen: m.maxSeqLen,
    rotaryPct: 0.25,
  });
}

/**
 * A byte-level BPE tokenizer of exactly `vocab` ids: the 256 byte symbols, then merges of byte
 * pairs in a fixed order, then `<|endoftext|>`. Any id decodes to one or two bytes, which is all
 * a throughput measurement of a random model needs.
 */
export function syntheticTokenizer(vocab: number): TokenizerJson {
  const symbols = BYTE_ORDER.map((b) => BYTE_TO_SYMBOL[b]!);
  const tokens = [...symbols];
  const merges: string[] = [];
  outer: for (const a of symbols) {
    for (const b of symbols) {
      if (tokens.length >= vocab - 1) break outer;
      merges.push(`${a} ${b}`);
      tokens.push(a + b);
    }
  }
  return byteLevelBpeJson(tokens, merges, ['<|endoftext|>']);
}

export interface BuiltModels {
  config: TokenFormerConfig;
  checkpoint: string;
  fp32: string;
  fp16: string;
}

/** A random-weight checkpoint of the shape (official init), exported in float32 and float16. */
export async function buildRandomModel(
  work: string,
  s: Shapes,
  log: (m: string) => void,
): Promise<BuiltModels> {
  const config = configOf(s);
  const checkpoint = join(work, 'random-ckpt');
  const tok = join(work, TOKENIZER_FILE);
  saveTokenizer(tok, syntheticTokenizer(config.vocab_size));
  log(`random model: ${s.model.layers} layers, hidden ${s.model.hidden}, vocab ${s.model.vocab}`);
  await saveCheckpoint(
    checkpoint,
    {
      format: 'tokenformer-checkpoint',
      format_version: 1,
      model: config,
      tokenizer: { file: TOKENIZER_FILE, eos_token_id: config.vocab_size - 1 },
      provenance: {
        source: 'gpu-check',
        detail: 'random weights (official init)',
        created: new Date().toISOString(),
      },
      step: 0,
      parent: null,
    },
    initParams(config, 1),
    { tokenizerFrom: tok },
  );
  const fp32 = join(work, 'random-fp32');
  const fp16 = join(work, 'random-fp16');
  log('exporting float32');
  await exportCheckpoint(checkpoint, fp32);
  log('exporting float16');
  await exportCheckpoint(checkpoint, fp16, { dtype: 'float16' });
  return { config, checkpoint, fp32, fp16 };
}

/** The official-tiny fixture, imported and exported in float32 and float16. */
export async function buildFixture(work: string, fixture: string): Promise<{ fp32: string; fp16: string }> {
  const ckpt = join(work, 'tiny-ckpt');
  await importOfficial(join(fixture, 'checkpoint'), ckpt);
  const fp32 = join(work, 'tiny-fp32');
  const fp16 = join(work, 'tiny-fp16');
  await exportCheckpoint(ckpt, fp32);
  await exportCheckpoint(ckpt, fp16, { dtype: 'float16' });
  return { fp32, fp16 };
}

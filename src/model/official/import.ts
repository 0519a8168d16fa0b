import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { TorchCheckpoint } from '../../formats/torch-checkpoint.ts';
import { fail } from '../../util/errors.ts';
import { readJsonFile } from '../../util/files.ts';
import {
  type CheckpointMeta,
  CONFIG_FILE,
  checkParamNames,
  saveCheckpoint,
  TOKENIZER_FILE,
} from '../checkpoint.ts';
import { fromOfficialConfig } from '../config.ts';
import { EMBEDDING, paramSpecs } from '../params.ts';

/**
 * `npm run import`: an official TokenFormer release (Hugging Face layout: config.json +
 * pytorch_model.bin, optional tokenizer.json) → our checkpoint directory. Tensors are read one
 * at a time from the archive and streamed to model.safetensors, so a 6.4 GB release never sits
 * in memory twice.
 */

export interface ImportOptions {
  onProgress?: (message: string) => void;
}

const OFFICIAL_EMBEDDING = 'sequential.0.word_embeddings.weight';

/** Reads the end-of-text id from a tokenizer.json (GPT-NeoX uses `<|endoftext|>`). */
function eosTokenId(tokenizerPath: string): number | null {
  try {
    const tok = JSON.parse(readFileSync(tokenizerPath, 'utf8')) as {
      added_tokens?: { id: number; content: string }[];
    };
    return tok.added_tokens?.find((t) => t.content === '<|endoftext|>')?.id ?? null;
  } catch (err) {
    fail(
      'TF_ERR_BAD_CONFIG',
      `${tokenizerPath}: not a valid tokenizer.json (${(err as Error).message})`,
      err,
    );
  }
}

export async function importOfficial(
  fromDir: string,
  outDir: string,
  opts: ImportOptions = {},
): Promise<CheckpointMeta> {
  const log = opts.onProgress ?? (() => {});
  const configPath = join(fromDir, CONFIG_FILE);
  const binPath = join(fromDir, 'pytorch_model.bin');
  for (const p of [configPath, binPath]) if (!existsSync(p)) fail('TF_ERR_NOT_FOUND', `${p} does not exist`);
  const rawConfig = readJsonFile(configPath);
  const torch = TorchCheckpoint.open(binPath);
  try {
    const embedding = torch.tensors.get(OFFICIAL_EMBEDDING);
    if (!embedding) fail('TF_ERR_BAD_CHECKPOINT', `${binPath}: missing tensors: ${OFFICIAL_EMBEDDING}`);
    const model = fromOfficialConfig(rawConfig, embedding.shape[0]!, configPath);
    const specs = paramSpecs(model);
    checkParamNames(
      binPath,
      specs,
      new Map([...torch.tensors].map(([k, v]) => [k, v.shape])),
      (s) => s.official,
    );
    const tokenizerPath = join(fromDir, TOKENIZER_FILE);
    const hasTokenizer = existsSync(tokenizerPath);
    const meta: CheckpointMeta = {
      format: 'tokenformer-checkpoint',
      format_version: 1,
      model,
      tokenizer: hasTokenizer ? { file: TOKENIZER_FILE, eos_token_id: eosTokenId(tokenizerPath) } : null,
      provenance: { source: 'import', detail: resolve(fromDir), created: new Date().toISOString() },
      step: 0,
      parent: null,
    };
    let done = 0;
    await saveCheckpoint(
      outDir,
      meta,
      (spec) => {
        done++;
        if (spec.name === EMBEDDING || done % 10 === 0 || done === specs.length) {
          log(`tensor ${done}/${specs.length}: ${spec.official} → ${spec.name}`);
        }
        return torch.readF32(spec.official);
      },
      hasTokenizer ? { tokenizerFrom: tokenizerPath } : {},
    );
    return meta;
  } finally {
    torch.close();
  }
}

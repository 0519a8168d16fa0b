import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'node:test';
import { exportCheckpoint, verifyExport } from '../../src/export/export.ts';
import { growDirectory } from '../../src/model/grow.ts';
import { importOfficial } from '../../src/model/official/import.ts';
import { fileSha256 } from '../../src/util/files.ts';
import { servedModel } from '../engine/served-model.ts';
import { FIXTURES, tempDir } from '../helpers.ts';

const CONFIG = join(import.meta.dirname, '../server/fixtures/chatml-tokenizer_config.json');

test('tokenizer_config.json travels import → checkpoint → grow → export, listed and checksummed in the manifest', async (t) => {
  const dir = tempDir(t);
  // An official release directory with a tokenizer and its tokenizer_config.json.
  const { checkpoint: served } = await servedModel(join(dir, 'served'));
  const release = join(dir, 'release');
  mkdirSync(release);
  for (const f of ['config.json', 'pytorch_model.bin'])
    copyFileSync(join(FIXTURES, 'official-tiny/checkpoint', f), join(release, f));
  copyFileSync(join(served, 'tokenizer.json'), join(release, 'tokenizer.json'));
  copyFileSync(CONFIG, join(release, 'tokenizer_config.json'));

  await importOfficial(release, join(dir, 'imported'));
  const original = readFileSync(CONFIG);
  assert.deepEqual(readFileSync(join(dir, 'imported', 'tokenizer_config.json')), original);
  await growDirectory(join(dir, 'imported'), join(dir, 'grown'), { target: { ffn: 100 } });
  assert.deepEqual(readFileSync(join(dir, 'grown', 'tokenizer_config.json')), original);

  const manifest = await exportCheckpoint(join(dir, 'grown'), join(dir, 'export'));
  assert.deepEqual(readFileSync(join(dir, 'export', 'tokenizer_config.json')), original);
  assert.deepEqual(manifest.tokenizer_config, {
    file: 'tokenizer_config.json',
    sha256: fileSha256(CONFIG),
    bytes: original.length,
  });
  await verifyExport(join(dir, 'export'));
  // The checksum covers it: a changed template is refused like a changed graph.
  writeFileSync(
    join(dir, 'export', 'tokenizer_config.json'),
    original.toString('utf8').replace('im_start', 'im_begin'),
  );
  await assert.rejects(verifyExport(join(dir, 'export')), /tokenizer_config\.json/);

  // Without one, nothing is written and the manifest says null.
  await importOfficial(join(FIXTURES, 'official-tiny/checkpoint'), join(dir, 'bare'));
  assert.equal(existsSync(join(dir, 'bare', 'tokenizer_config.json')), false);
});

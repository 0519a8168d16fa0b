import assert from 'node:assert/strict';
import { cpSync, mkdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { Engine } from '../../src/engine/engine.ts';
import { resolveExport } from '../../src/engine/model-dir.ts';
import { ModelRegistry } from '../../src/engine/registry.ts';
import { exportCheckpoint, MANIFEST_FILE, type Manifest, verifyExport } from '../../src/export/export.ts';
import { TokenFormerError } from '../../src/util/errors.ts';
import { tempDir } from '../helpers.ts';
import { servedModel } from './served-model.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const ENGINE = { device: 'cpu', threads: 1, maxSequences: 2, maxQueue: 2, prefillChunk: 64 } as const;

let dir: string;
let models: string;
let served: { checkpoint: string; exportDir: string };
const cleanups: (() => void)[] = [];

before(async () => {
  dir = tempDir({ after: (fn) => cleanups.push(fn) });
  served = await servedModel(join(dir, 'served'));
  models = join(dir, 'models');
  mkdirSync(models);
});
after(() => {
  for (const c of cleanups) c();
});

/** A copy of the served export under the models root, damaged by `damage`. */
function damagedCopy(name: string, damage: (copy: string) => void): string {
  const copy = join(models, name);
  cpSync(served.exportDir, copy, { recursive: true });
  damage(copy);
  return copy;
}

function flipMiddleByte(path: string): void {
  const bytes = readFileSync(path);
  const at = bytes.length >> 1;
  bytes[at] = bytes[at]! ^ 0x5a;
  writeFileSync(path, bytes);
}

/** Engine.start refuses `exportDir` with a TokenFormerError naming the copy, the file and `problem`. */
async function refused(exportDir: string, problem: RegExp): Promise<string> {
  let error: unknown;
  try {
    const engine = await Engine.start({ ...ENGINE, exportDir });
    await engine.close();
  } catch (err) {
    error = err;
  }
  assert.ok(error instanceof TokenFormerError, `expected a refusal, got ${String(error)}`);
  assert.equal(error.code, 'TF_ERR_BAD_CHECKPOINT');
  assert.match(error.message, problem);
  assert.ok(!error.message.includes(dir), `no absolute path in: ${error.message}`);
  return error.message;
}

test('the intact export verifies and loads; its manifest records every file’s size', async () => {
  const copy = damagedCopy('intact', () => {});
  const manifest = await verifyExport(copy);
  for (const g of manifest.graphs) assert.ok(g.bytes! > 0 && g.external_data_bytes === null, g.file);
  assert.ok(manifest.tokenizer!.bytes! > 0);
  const engine = await Engine.start({ ...ENGINE, exportDir: copy });
  await engine.close();
});

test('a truncated model.onnx is refused with its size', async () => {
  const full = readFileSync(join(served.exportDir, 'model.onnx')).length;
  const copy = damagedCopy('truncated', (c) => truncateSync(join(c, 'model.onnx'), 1000));
  await refused(copy, new RegExp(`model "truncated": model\\.onnx is truncated: 1000 of ${full} bytes`));
});

test('one flipped byte inside the decoder weights is a checksum mismatch', async () => {
  const copy = damagedCopy('flipped', (c) => flipMiddleByte(join(c, 'decoder.onnx')));
  await refused(
    copy,
    /model "flipped": decoder\.onnx checksum mismatch .* corrupted or belongs to another model/,
  );
});

test("another model's tokenizer.json is a mismatch", async () => {
  const copy = damagedCopy('other-tokenizer', (c) =>
    cpSync(join(ROOT, 'models/default/tokenizer.json'), join(c, 'tokenizer.json')),
  );
  await refused(copy, /model "other-tokenizer": tokenizer\.json (checksum mismatch|has \d+ bytes)/);
});

test('a file the manifest lists but the directory lacks is named as missing', async () => {
  const copy = damagedCopy('missing', (c) => rmSync(join(c, 'decoder.onnx')));
  await refused(copy, /model "missing": decoder\.onnx is missing/);
});

test('a manifest naming a file outside the model directory is refused', async () => {
  const copy = damagedCopy('escape', (c) => {
    const m = JSON.parse(readFileSync(join(c, MANIFEST_FILE), 'utf8')) as Manifest;
    m.tokenizer!.file = '../intact/tokenizer.json';
    writeFileSync(join(c, MANIFEST_FILE), JSON.stringify(m));
  });
  await refused(copy, /not a file inside the model directory/);
});

test('an older manifest without sizes still loads, and damage is still caught by the checksum', async () => {
  const strip = (c: string) => {
    const m = JSON.parse(readFileSync(join(c, MANIFEST_FILE), 'utf8')) as Manifest;
    for (const g of m.graphs) {
      delete g.bytes;
      delete g.external_data_sha256;
      delete g.external_data_bytes;
    }
    delete m.tokenizer!.bytes;
    writeFileSync(join(c, MANIFEST_FILE), JSON.stringify(m));
  };
  await verifyExport(damagedCopy('old-manifest', strip));
  const copy = damagedCopy('old-manifest-truncated', (c) => {
    strip(c);
    truncateSync(join(c, 'decoder.onnx'), 4096);
  });
  await refused(copy, /decoder\.onnx checksum mismatch/);
});

test('external data files are verified too', async () => {
  const ext = join(models, 'external');
  await exportCheckpoint(served.checkpoint, ext, { externalData: 'always' });
  const manifest = await verifyExport(ext);
  const data = manifest.graphs.find((g) => g.role === 'decoder')!;
  assert.equal(data.external_data, 'decoder.onnx.data');
  assert.ok(data.external_data_bytes! > 0 && /^[0-9a-f]{64}$/.test(data.external_data_sha256!));
  flipMiddleByte(join(ext, 'decoder.onnx.data'));
  await refused(ext, /model "external": decoder\.onnx\.data checksum mismatch/);
  truncateSync(join(ext, 'decoder.onnx.data'), 10);
  await refused(ext, /decoder\.onnx\.data is truncated: 10 of \d+ bytes/);
});

test('a swap to a damaged model is refused with the reason and the old model keeps serving', async () => {
  const cacheDir = join(dir, 'swap-cache');
  const registry = await ModelRegistry.open(
    damagedCopy('swap-good', () => {}),
    {
      modelsRoot: models,
      cacheDir,
      engine: ENGINE,
    },
  );
  try {
    damagedCopy('swap-bad', (c) => truncateSync(join(c, 'decoder.onnx'), 100));
    await assert.rejects(registry.swap('swap-bad', 'drain'), /model "swap-bad": decoder\.onnx is truncated/);
    assert.equal(registry.model.name, 'swap-good');
  } finally {
    await registry.close();
  }
});

test('a damaged export in the cache is rebuilt from its checkpoint', async () => {
  const cache = join(dir, 'cache');
  const first = (await resolveExport(served.checkpoint, cache)).exportDir;
  const before = readFileSync(join(first, 'decoder.onnx'));
  flipMiddleByte(join(first, 'decoder.onnx'));
  const progress: string[] = [];
  const again = (await resolveExport(served.checkpoint, cache, (m) => progress.push(m))).exportDir;
  assert.equal(again, first);
  assert.ok(
    progress.some((m) =>
      /cached export failed verification .*decoder\.onnx checksum mismatch.*re-exporting/.test(m),
    ),
    progress.join('\n'),
  );
  assert.deepEqual(readFileSync(join(again, 'decoder.onnx')), before);
  await verifyExport(again);
  // An intact cache is reused without re-exporting.
  const quiet: string[] = [];
  await resolveExport(served.checkpoint, cache, (m) => quiet.push(m));
  assert.deepEqual(quiet, []);
});

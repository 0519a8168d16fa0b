import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'node:test';
import { TokenFormerError } from '../../src/util/errors.ts';
import { fileSha256, fileSha256Async, readJsonFile } from '../../src/util/files.ts';
import { tempDir } from '../helpers.ts';

function failsWith(fn: () => unknown, code: string, message: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof TokenFormerError, String(err));
    assert.equal(err.code, code);
    assert.match(err.message, message);
    return true;
  });
}

test('fileSha256 and fileSha256Async agree with a one-shot hash, across chunk boundaries', async (t) => {
  const path = join(tempDir(t), 'data.bin');
  const bytes = Buffer.alloc((1 << 24) + 12345);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 2654435761) >>> 24;
  writeFileSync(path, bytes);
  const expected = createHash('sha256').update(bytes).digest('hex');
  assert.equal(fileSha256(path), expected);
  assert.equal(await fileSha256Async(path), expected);
});

test('readJsonFile parses, and names the file when it is missing or not JSON', (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'ok.json'), '{"a": [1, 2]}');
  writeFileSync(join(dir, 'bad.json'), '{"a": ');
  assert.deepEqual(readJsonFile(join(dir, 'ok.json')), { a: [1, 2] });
  failsWith(() => readJsonFile(join(dir, 'bad.json')), 'TF_ERR_BAD_CONFIG', /bad\.json: not valid JSON \(/);
  failsWith(
    () => readJsonFile(join(dir, 'bad.json'), 'TF_ERR_BAD_CHECKPOINT'),
    'TF_ERR_BAD_CHECKPOINT',
    /bad\.json: not valid JSON/,
  );
  failsWith(() => readJsonFile(join(dir, 'none.json')), 'TF_ERR_NOT_FOUND', /cannot read .*none\.json: /);
});

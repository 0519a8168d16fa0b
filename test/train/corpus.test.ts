import assert from 'node:assert/strict';
import { isUtf8 } from 'node:buffer';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'node:test';
import fc from 'fast-check';
import { expandPaths, firstInvalidUtf8, readDocuments, skippedMessage } from '../../src/train/corpus.ts';
import { tempDir } from '../helpers.ts';

test('binary files and invalid UTF-8 are refused with the file name; latin1 is an explicit opt-in', (t) => {
  const dir = tempDir(t);
  const bin = join(dir, 'a.txt');
  writeFileSync(bin, Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0x02, 0x01, 0x01, 0x00, 0x00]));
  assert.throws(() => readDocuments([bin]), /--data .*a.txt: not a text file \(a NUL byte at offset 7\)/);
  const latin = join(dir, 'latin.txt');
  writeFileSync(latin, Buffer.from('café au lait\n', 'latin1'));
  assert.throws(
    () => readDocuments([latin]),
    /latin.txt: not valid UTF-8 \(byte 0xe9 at offset 3\); .*--encoding latin1/,
  );
  assert.equal(readDocuments([latin], { encoding: 'latin1' })[0]!.text, 'café au lait\n');
  const utf8 = join(dir, 'ok.txt');
  writeFileSync(utf8, 'café 🐳\n');
  assert.equal(readDocuments([utf8])[0]!.text, 'café 🐳\n');
});

test('a JSONL line that is not an object with a "text" string is a one-line error', (t) => {
  const dir = tempDir(t);
  for (const [line, shown] of [
    ['null', 'null'],
    ['42', '42'],
    ['{"body": "x"}', '{"body": "x"}'],
  ] as const) {
    const f = join(dir, 'd.jsonl');
    writeFileSync(f, `{"text": "fine"}\n${line}\n`);
    assert.throws(
      () => readDocuments([f]),
      (err: Error) => err.message === `${f}:2: expected an object with a "text" string, got ${shown}`,
    );
  }
});

test('files in folders without a text extension are listed, not skipped silently', (t) => {
  const dir = tempDir(t);
  mkdirSync(join(dir, 'sub'));
  writeFileSync(join(dir, 'a.txt'), 'a');
  writeFileSync(join(dir, 'sub', 'b.md'), 'b');
  writeFileSync(join(dir, 'image.png'), 'png');
  writeFileSync(join(dir, 'sub', 'notes'), 'n');
  const r = expandPaths([dir]);
  assert.deepEqual(r.files, [join(dir, 'a.txt'), join(dir, 'sub', 'b.md')]);
  assert.deepEqual(r.skipped, [join(dir, 'image.png'), join(dir, 'sub', 'notes')]);
  assert.match(skippedMessage(r.skipped), /^skipped 2 files without a text extension .*image.png, .*notes$/);
  assert.match(skippedMessage(Array.from({ length: 12 }, (_, i) => `f${i}`)), /f9 and 2 more$/);
});

test('firstInvalidUtf8 agrees with the platform validator', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 24 }), (bytes) => {
      const at = firstInvalidUtf8(bytes);
      assert.equal(at === -1, isUtf8(bytes));
      if (at >= 0) assert.ok(isUtf8(bytes.subarray(0, at)), 'everything before it is valid');
    }),
    { numRuns: 5000, seed: 7 },
  );
  assert.equal(firstInvalidUtf8(Buffer.from('a\u00e9\u{1f433}')), -1);
  assert.equal(firstInvalidUtf8(Uint8Array.of(0x61, 0xed, 0xa0, 0x80)), 1); // a UTF-16 surrogate
  assert.equal(firstInvalidUtf8(Uint8Array.of(0xc0, 0x80)), 0); // overlong
});

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ZipReader } from '../../src/formats/zip.ts';
import { type ErrorCode, TokenFormerError } from '../../src/util/errors.ts';
import { FIXTURES, tempDir } from '../helpers.ts';
import { buildZip, writeTemp } from './helpers.ts';

const TINY = join(FIXTURES, 'official-tiny/checkpoint/pytorch_model.bin');

function throwsTf(fn: () => unknown, code: ErrorCode, message: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof TokenFormerError, String(err));
    assert.equal(err.code, code);
    assert.match(err.message, message);
    return true;
  });
}

function withZip<T>(path: string, fn: (z: ZipReader) => T): T {
  const z = ZipReader.open(path);
  try {
    return fn(z);
  } finally {
    z.close();
  }
}

/** Central-directory offset of a classic (non-zip64) archive without a comment. */
function cdOffsetOf(zip: Buffer): number {
  return zip.readUInt32LE(zip.length - 22 + 16);
}

describe('ZipReader on the official-tiny checkpoint', () => {
  test('lists the entries torch.save wrote (which include ZIP64 end records)', () => {
    withZip(TINY, (z) => {
      assert.equal(z.entries.size, 25);
      const pkl = z.entries.get('pytorch_model/data.pkl');
      // Values as listed by `unzip -lv` on the fixture.
      assert.deepEqual(
        { ...pkl, flags: undefined },
        {
          name: 'pytorch_model/data.pkl',
          method: 0,
          compressedSize: 2454,
          size: 2454,
          crc32: 0xea06c5d5,
          localHeaderOffset: 0,
          flags: undefined,
        },
      );
      assert.equal(z.entries.get('pytorch_model/data/0')?.size, 131072);
      assert.equal(z.entries.get('pytorch_model/data/22')?.size, 256);
      // torch pads the local extra field so storage data starts 64-byte aligned (python3 struct on the
      // local header at offset 2534: 30 + 20-byte name + 40-byte extra).
      assert.equal(z.dataOffset(z.entry('pytorch_model/data/0')), 2624);
      assert.equal(z.dataOffset(z.entry('pytorch_model/data.pkl')), 64);
    });
  });

  test('read() verifies CRC; readRange() reads a slice of a stored entry', () => {
    withZip(TINY, (z) => {
      const pkl = z.read('pytorch_model/data.pkl');
      assert.equal(pkl.length, 2454);
      assert.deepEqual([...pkl.subarray(0, 3)], [0x80, 0x02, 0x7d]);
      assert.equal(pkl[pkl.length - 1], 0x2e);
      assert.equal(z.read('pytorch_model/version').toString(), '3\n');
      const whole = z.read('pytorch_model/data/21');
      const part = z.readRange('pytorch_model/data/21', 8, 16);
      assert.deepEqual(part, whole.subarray(8, 24));
      // First float of storage 21 (the final LayerNorm weight), from python3:
      //   struct.unpack('<f', zipfile.ZipFile(p).read('pytorch_model/data/21')[:4])
      assert.equal(z.readRange('pytorch_model/data/21', 0, 4).readFloatLE(0), 1.0222585201263428);
      assert.equal(z.readRange('pytorch_model/data/21', 256, 0).length, 0);
    });
  });

  test('matches the whole file read independently', () => {
    const bytes = readFileSync(TINY);
    withZip(TINY, (z) => {
      for (const e of z.entries.values()) {
        const at = z.dataOffset(e);
        assert.deepEqual(z.read(e.name), bytes.subarray(at, at + e.size), e.name);
      }
    });
  });
});

describe('ZipReader on crafted archives', () => {
  const files = [
    { name: 'a/stored.bin', data: Buffer.from('hello, stored world') },
    { name: 'a/deflated.txt', data: Buffer.from('deflate me '.repeat(200)), deflate: true },
    { name: 'a/empty', data: Buffer.alloc(0) },
    { name: 'a/ü-utf8', data: Buffer.from([1, 2, 3]) },
  ];

  for (const zip64 of [false, true]) {
    test(`stored + deflated entries, with an archive comment${zip64 ? ', ZIP64 records' : ''}`, (t) => {
      const path = writeTemp(tempDir(t), 'x.zip', buildZip(files, { zip64, comment: 'PK\x05\x06 fake' }));
      withZip(path, (z) => {
        assert.deepEqual(
          [...z.entries.keys()],
          files.map((f) => f.name),
        );
        for (const f of files) assert.deepEqual(z.read(f.name), f.data, f.name);
        const d = z.entry('a/deflated.txt');
        assert.equal(d.method, 8);
        assert.equal(d.size, 2200);
        assert.ok(d.compressedSize < d.size);
        assert.equal(z.readRange('a/stored.bin', 7, 6).toString(), 'stored');
        throwsTf(() => z.readRange('a/deflated.txt', 0, 4), 'TF_ERR_BAD_ZIP', /is compressed \(method 8\)/);
      });
    });
  }

  test('ZIP64 fields are really used (32-bit fields are saturated)', (t) => {
    const buf = buildZip(files, { zip64: true });
    assert.equal(buf.readUInt32LE(buf.length - 22 + 16), 0xffffffff);
    assert.equal(buf.readUInt16LE(buf.length - 22 + 10), 0xffff);
    const path = writeTemp(tempDir(t), 'z64.zip', buf);
    withZip(path, (z) => {
      const e = z.entry('a/stored.bin');
      assert.equal(e.size, 19);
      assert.equal(e.localHeaderOffset, 0);
      assert.ok(z.entry('a/deflated.txt').localHeaderOffset > 0);
    });
  });
});

describe('ZipReader errors', () => {
  test('not a zip', (t) => {
    const dir = tempDir(t);
    throwsTf(
      () =>
        ZipReader.open(writeTemp(dir, 'text.bin', Buffer.from('just some text, no zip here\n'.repeat(10)))),
      'TF_ERR_BAD_ZIP',
      /text\.bin: not a zip archive \(no end-of-central-directory record found\)$/,
    );
    throwsTf(
      () => ZipReader.open(writeTemp(dir, 'empty.bin', Buffer.alloc(0))),
      'TF_ERR_BAD_ZIP',
      /empty\.bin: not a zip archive \(the file is empty\)/,
    );
    throwsTf(() => ZipReader.open(dir), 'TF_ERR_BAD_ZIP', /not a zip archive \(not a regular file\)/);
    throwsTf(
      () => ZipReader.open(join(dir, 'missing.bin')),
      'TF_ERR_NOT_FOUND',
      /missing\.bin: cannot open zip archive/,
    );
  });

  test('the fixture cut at several lengths is reported as truncated', (t) => {
    const dir = tempDir(t);
    const bytes = readFileSync(TINY);
    for (const len of [4, 30, 100, 2624, 200_000, bytes.length - 23, bytes.length - 22, bytes.length - 1]) {
      const path = writeTemp(dir, `cut-${len}.bin`, bytes.subarray(0, len));
      throwsTf(
        () => ZipReader.open(path),
        'TF_ERR_BAD_ZIP',
        new RegExp(
          `cut-${len}\\.bin: zip archive is truncated or incomplete: .*no end-of-central-directory record \\(file is ${len} bytes\\)`,
        ),
      );
    }
  });

  test('central directory beyond its end record (bytes missing in the middle)', (t) => {
    const zip = buildZip([
      { name: 'a', data: Buffer.alloc(1000, 7) },
      { name: 'b', data: Buffer.alloc(10, 1) },
    ]);
    const cd = cdOffsetOf(zip);
    const cut = Buffer.concat([zip.subarray(0, 500), zip.subarray(cd)]);
    const path = writeTemp(tempDir(t), 'hole.zip', cut);
    throwsTf(
      () => ZipReader.open(path),
      'TF_ERR_BAD_ZIP',
      /hole\.zip: zip archive is truncated or corrupt: central directory \(\d+ bytes at offset \d+\) extends beyond the end-of-central-directory record/,
    );
  });

  test("an entry's data beyond the end of the file", (t) => {
    const zip = buildZip([{ name: 'big', data: Buffer.alloc(100, 3) }]);
    const cd = cdOffsetOf(zip);
    zip.writeUInt32LE(1_000_000, cd + 20); // compressed size
    zip.writeUInt32LE(1_000_000, cd + 24); // size
    const path = writeTemp(tempDir(t), 'short.zip', zip);
    withZip(path, (z) => {
      throwsTf(
        () => z.read('big'),
        'TF_ERR_BAD_ZIP',
        /short\.zip: zip archive is truncated: data of entry 'big' \(1000000 bytes at offset 33\) extends beyond the end of the file/,
      );
      throwsTf(
        () => z.readRange('big', 0, 10),
        'TF_ERR_BAD_ZIP',
        /data of entry 'big' .* extends beyond the end/,
      );
    });
  });

  test('bad signatures', (t) => {
    const dir = tempDir(t);
    const zip = buildZip([{ name: 'x', data: Buffer.from('abc') }]);
    const badLocal = Buffer.from(zip);
    badLocal.writeUInt32LE(0x12345678, 0);
    withZip(writeTemp(dir, 'local.zip', badLocal), (z) => {
      throwsTf(
        () => z.read('x'),
        'TF_ERR_BAD_ZIP',
        /local\.zip: bad local file header signature 0x12345678 for entry 'x' at offset 0 \(expected 0x04034b50\)/,
      );
    });
    const badCentral = Buffer.from(zip);
    badCentral.writeUInt32LE(0xdeadbeef, cdOffsetOf(zip));
    throwsTf(
      () => ZipReader.open(writeTemp(dir, 'central.zip', badCentral)),
      'TF_ERR_BAD_ZIP',
      /central\.zip: bad central directory header signature 0xdeadbeef at offset 34 \(entry 0/,
    );
    const bad64 = buildZip([{ name: 'x', data: Buffer.from('abc') }], { zip64: true });
    const recordAt = Number(bad64.readBigUInt64LE(bad64.length - 22 - 20 + 8));
    bad64.writeUInt32LE(0x0badf00d, recordAt);
    throwsTf(
      () => ZipReader.open(writeTemp(dir, 'z64.zip', bad64)),
      'TF_ERR_BAD_ZIP',
      /z64\.zip: bad zip64 end-of-central-directory signature 0x0badf00d/,
    );
  });

  test('unsupported method, encryption, CRC mismatch, missing entry, bad range, closed', (t) => {
    const path = writeTemp(
      tempDir(t),
      'misc.zip',
      buildZip([
        { name: 'bz', data: Buffer.from('x'), methodCode: 12 },
        { name: 'enc', data: Buffer.from('x'), flags: 1 },
        { name: 'crc', data: Buffer.from('payload'), crc: 0x11111111 },
        { name: 'ok', data: Buffer.from('0123456789') },
      ]),
    );
    const z = ZipReader.open(path);
    throwsTf(
      () => z.read('bz'),
      'TF_ERR_BAD_ZIP',
      /misc\.zip: entry 'bz' uses unsupported compression method 12 \(bzip2\); only stored \(0\) and deflate \(8\)/,
    );
    throwsTf(
      () => z.read('enc'),
      'TF_ERR_BAD_ZIP',
      /misc\.zip: entry 'enc' is encrypted, which is not supported/,
    );
    throwsTf(
      () => z.read('crc'),
      'TF_ERR_BAD_ZIP',
      /misc\.zip: CRC-32 mismatch in entry 'crc': computed 0x[0-9a-f]{8}, recorded 0x11111111/,
    );
    throwsTf(() => z.read('nope'), 'TF_ERR_NOT_FOUND', /misc\.zip: zip archive has no entry 'nope'/);
    throwsTf(
      () => z.readRange('ok', 5, 6),
      'TF_ERR_BAD_ZIP',
      /byte range \[5, 11\) is outside entry 'ok' \(10 bytes\)/,
    );
    throwsTf(() => z.readRange('ok', -1, 2), 'TF_ERR_BAD_ZIP', /invalid byte range start=-1/);
    assert.equal(z.readRange('ok', 5, 5).toString(), '56789');
    z.close();
    z.close(); // idempotent
    throwsTf(() => z.readRange('ok', 0, 1), 'TF_ERR_BAD_ZIP', /misc\.zip: zip archive is closed/);
  });
});

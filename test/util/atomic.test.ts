import assert from 'node:assert/strict';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  checkReplaceable,
  type OutputMarker,
  replaceDirAtomic,
  writeAll,
  writeFileAtomic,
  writeJsonAtomic,
} from '../../src/util/atomic.ts';
import { TokenFormerError } from '../../src/util/errors.ts';

let root: string;
before(() => {
  root = mkdtempSync(join(tmpdir(), 'tf-atomic-'));
});
after(() => {
  rmSync(root, { recursive: true, force: true });
});

let counter = 0;
function freshDir(): string {
  const d = join(root, `case-${counter++}`);
  mkdirSync(d);
  return d;
}

describe('writeFileAtomic', () => {
  test('writes strings, bytes and callback-streamed chunks; leaves no temp files', () => {
    const d = freshDir();
    writeFileAtomic(join(d, 'a.txt'), 'héllo');
    assert.equal(readFileSync(join(d, 'a.txt'), 'utf8'), 'héllo');

    writeFileAtomic(join(d, 'b.bin'), new Uint8Array([1, 2, 3]).subarray(1));
    assert.deepEqual([...readFileSync(join(d, 'b.bin'))], [2, 3]);

    writeFileAtomic(join(d, 'c.bin'), (fd) => {
      writeAll(fd, new Uint8Array([1, 2]));
      writeAll(fd, new Float32Array([1]));
      writeAll(fd, new Uint8Array(0));
    });
    assert.deepEqual([...readFileSync(join(d, 'c.bin'))], [1, 2, 0, 0, 0x80, 0x3f]);

    assert.deepEqual(readdirSync(d).sort(), ['a.txt', 'b.bin', 'c.bin']);
  });

  test('replaces an existing file', () => {
    const d = freshDir();
    const p = join(d, 'x.txt');
    writeFileSync(p, 'old content that is longer');
    writeFileAtomic(p, 'new');
    assert.equal(readFileSync(p, 'utf8'), 'new');
    assert.deepEqual(readdirSync(d), ['x.txt']);
  });

  test('a failing callback leaves the old file intact and removes the temp file', () => {
    const d = freshDir();
    const p = join(d, 'x.txt');
    writeFileSync(p, 'old');
    assert.throws(
      () =>
        writeFileAtomic(p, (fd) => {
          writeAll(fd, new Uint8Array([1, 2, 3]));
          throw new Error('boom');
        }),
      /boom/,
    );
    assert.equal(readFileSync(p, 'utf8'), 'old');
    assert.deepEqual(readdirSync(d), ['x.txt']);
  });

  test('a missing directory is an error and creates nothing', () => {
    const d = freshDir();
    assert.throws(() => writeFileAtomic(join(d, 'nope', 'x.txt'), 'x'), { code: 'ENOENT' });
    assert.deepEqual(readdirSync(d), []);
  });
});

describe('writeJsonAtomic', () => {
  test('2-space indent and trailing newline', () => {
    const d = freshDir();
    const p = join(d, 'v.json');
    writeJsonAtomic(p, { a: 1, b: [true, null] });
    assert.equal(readFileSync(p, 'utf8'), '{\n  "a": 1,\n  "b": [\n    true,\n    null\n  ]\n}\n');
  });

  test('non-serialisable values are rejected', () => {
    const d = freshDir();
    assert.throws(() => writeJsonAtomic(join(d, 'u.json'), undefined), TypeError);
    assert.deepEqual(readdirSync(d), []);
  });
});

/** A marker as our commands define them: a JSON file whose `format` field names the output. */
const OURS: OutputMarker = { what: 'a test output', file: 'marker.json', format: 'test-output' };
const markOurs = (dir: string) => writeFileSync(join(dir, 'marker.json'), '{"format": "test-output"}');

describe('replaceDirAtomic', () => {
  test('creates a new directory from a sibling temp dir', async () => {
    const d = freshDir();
    const final = join(d, 'out');
    let seen = '';
    await replaceDirAtomic(final, [OURS], (tmp) => {
      seen = tmp;
      assert.equal(dirname(tmp), d);
      writeFileSync(join(tmp, 'f.txt'), 'one');
    });
    assert.notEqual(seen, final);
    assert.equal(readFileSync(join(final, 'f.txt'), 'utf8'), 'one');
    assert.deepEqual(readdirSync(d), ['out']);
  });

  test('replaces an existing directory and removes the old one (async build)', async () => {
    const d = freshDir();
    const final = join(d, 'out');
    mkdirSync(final);
    markOurs(final);
    writeFileSync(join(final, 'stale.txt'), 'stale');
    await replaceDirAtomic(final, [OURS], async (tmp) => {
      await new Promise((r) => setTimeout(r, 5));
      mkdirSync(join(tmp, 'sub'));
      writeFileSync(join(tmp, 'sub', 'g.txt'), 'two');
    });
    assert.ok(!existsSync(join(final, 'stale.txt')));
    assert.equal(readFileSync(join(final, 'sub', 'g.txt'), 'utf8'), 'two');
    assert.deepEqual(readdirSync(d), ['out']);
  });

  test('a failing build removes the temp dir and leaves the existing directory untouched', async () => {
    const d = freshDir();
    const final = join(d, 'out');
    mkdirSync(final);
    markOurs(final);
    writeFileSync(join(final, 'keep.txt'), 'keep');
    await assert.rejects(
      replaceDirAtomic(final, [OURS], (tmp) => {
        writeFileSync(join(tmp, 'partial.txt'), 'partial');
        throw new Error('build failed');
      }),
      /build failed/,
    );
    assert.deepEqual(readdirSync(final).sort(), ['keep.txt', 'marker.json']);
    assert.deepEqual(readdirSync(d), ['out']);

    await assert.rejects(
      replaceDirAtomic(join(d, 'fresh'), [OURS], async () => {
        throw new Error('async build failed');
      }),
      /async build failed/,
    );
    assert.deepEqual(readdirSync(d), ['out']);
  });

  test('a non-empty folder without the marker is refused untouched; an empty one is replaced', async () => {
    const d = freshDir();
    const precious = join(d, 'precious');
    mkdirSync(precious);
    writeFileSync(join(precious, 'notes.txt'), 'notes');
    // The marker file with another format is not ours either.
    writeFileSync(join(precious, 'marker.json'), '{"format": "something-else"}');
    let built = false;
    await assert.rejects(
      replaceDirAtomic(precious, [OURS], () => {
        built = true;
      }),
      (err: unknown) =>
        err instanceof TokenFormerError &&
        err.code === 'TF_ERR_FOREIGN_OUTPUT' &&
        /precious is a non-empty folder that is not a test output \(marker.json with "format": "test-output"\); refusing/.test(
          err.message,
        ),
    );
    assert.equal(built, false, 'refused before building');
    assert.equal(readFileSync(join(precious, 'notes.txt'), 'utf8'), 'notes');
    assert.deepEqual(readdirSync(d), ['precious']);
    assert.throws(() => checkReplaceable(precious, [OURS]), /refusing to replace it/);

    writeFileSync(join(d, 'file'), 'x');
    assert.throws(() => checkReplaceable(join(d, 'file'), [OURS]), /exists and is not a folder/);

    mkdirSync(join(d, 'empty'));
    await replaceDirAtomic(join(d, 'empty'), [OURS], (tmp) => writeFileSync(join(tmp, 'f'), '1'));
    assert.deepEqual(readdirSync(join(d, 'empty')), ['f']);
  });

  test('a folder that gains foreign content while the build runs is not replaced', async () => {
    const d = freshDir();
    const final = join(d, 'out');
    await assert.rejects(
      replaceDirAtomic(final, [OURS], (tmp) => {
        writeFileSync(join(tmp, 'new'), 'new');
        mkdirSync(final);
        writeFileSync(join(final, 'user.txt'), 'mine');
      }),
      /refusing to replace it/,
    );
    assert.deepEqual(readdirSync(final), ['user.txt']);
    assert.deepEqual(readdirSync(d), ['out']);
  });
});

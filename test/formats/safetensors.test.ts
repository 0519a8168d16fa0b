import assert from 'node:assert/strict';
import {
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  MAX_HEADER_BYTES,
  readSafeTensors,
  SafeTensorsFile,
  writeSafeTensors,
} from '../../src/formats/safetensors.ts';
import { DTYPE_BYTES } from '../../src/util/dtype.ts';
import { TokenFormerError } from '../../src/util/errors.ts';

let root: string;
before(() => {
  root = mkdtempSync(join(tmpdir(), 'tf-safetensors-'));
});
after(() => {
  rmSync(root, { recursive: true, force: true });
});

let counter = 0;
function tmpFile(label: string): string {
  return join(root, `${counter++}-${label}.safetensors`);
}

function u64le(n: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, n, true);
  return b;
}

/** Writes prefix + header + data by hand so every malformed variant can be produced. */
function craft(
  label: string,
  header: string | object | Uint8Array,
  data: Uint8Array | number = 0,
  headerLen?: bigint,
): string {
  const p = tmpFile(label);
  const hb =
    header instanceof Uint8Array
      ? header
      : Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const body = typeof data === 'number' ? new Uint8Array(data) : data;
  writeFileSync(p, Buffer.concat([u64le(headerLen ?? BigInt(hb.byteLength)), hb, body]));
  return p;
}

function expectBad(p: string, re: RegExp): void {
  assert.throws(
    () => SafeTensorsFile.open(p),
    (e: unknown) => {
      assert.ok(e instanceof TokenFormerError, `expected TokenFormerError, got ${String(e)}`);
      assert.equal(e.code, 'TF_ERR_BAD_SAFETENSORS');
      assert.match(e.message, re);
      assert.ok(e.message.includes(p), `message should name the file: ${e.message}`);
      return true;
    },
  );
}

const bytesOf = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

describe('writeSafeTensors → SafeTensorsFile round trip', () => {
  test('F32/F16/BF16/I64/U8 tensors, a 0-element tensor and metadata', () => {
    const p = tmpFile('roundtrip');
    const f32 = new Float32Array([1.5, -2.25, 3e-8, 65504, -0, Infinity]);
    const f16 = new Uint16Array([0x3c00, 0xc000, 0x0001, 0x7bff]);
    const bf16 = new Uint16Array([0x3f80, 0xbf80, 0x4049]);
    const i64 = new BigInt64Array([0n, -1n, 9007199254740993n, -(2n ** 63n)]);
    const u8 = new Uint8Array([7, 8, 9]);
    writeSafeTensors(
      p,
      [
        { name: 'u8', dtype: 'U8', shape: [3], data: u8 },
        { name: 'half', dtype: 'F16', shape: [2, 2], data: f16 },
        { name: 'w', dtype: 'F32', shape: [2, 3], data: f32 },
        { name: 'empty', dtype: 'F32', shape: [0, 4], data: new Float32Array(0) },
        { name: 'brain', dtype: 'BF16', shape: [3], data: bf16 },
        { name: 'ids', dtype: 'I64', shape: [4], data: i64 },
        { name: 'scalar', dtype: 'F64', shape: [], data: new Float64Array([Math.PI]) },
      ],
      { format: 'pt', note: 'héllo' },
    );
    assert.deepEqual(
      readdirSync(root).filter((f) => f.includes('.tmp-')),
      [],
    );

    const f = SafeTensorsFile.open(p);
    try {
      assert.equal(f.path, p);
      assert.deepEqual(f.metadata, { format: 'pt', note: 'héllo' });
      assert.equal(f.tensors.size, 7);
      assert.deepEqual([...f.readF32('w')], [...f32]);
      assert.ok(Object.is(f.readF32('w')[4], -0));
      assert.deepEqual(f.tensors.get('w')!.shape, [2, 3]);
      assert.deepEqual([...f.readF32('half')], [1, -2, 2 ** -24, 65504]);
      assert.deepEqual(new Uint16Array(f.readBytes('half').buffer), f16);
      assert.deepEqual([...f.readF32('brain')], [1, -1, 3.140625]);
      assert.deepEqual(f.readI64('ids'), i64);
      assert.deepEqual([...f.readBytes('u8')], [7, 8, 9]);
      assert.deepEqual([...f.readF32('scalar')], [Math.fround(Math.PI)]);
      assert.deepEqual(f.tensors.get('scalar')!.shape, []);
      const empty = f.tensors.get('empty')!;
      assert.deepEqual(empty.shape, [0, 4]);
      assert.equal(empty.byteLength, 0);
      assert.equal(f.readF32('empty').length, 0);
      assert.equal(f.readBytes('empty').byteLength, 0);
    } finally {
      f.close();
      f.close(); // idempotent
    }

    const all = readSafeTensors(p);
    assert.deepEqual(all.metadata, { format: 'pt', note: 'héllo' });
    assert.deepEqual([...all.tensors.keys()].sort(), ['brain', 'empty', 'half', 'ids', 'scalar', 'u8', 'w']);
    assert.deepEqual(all.tensors.get('ids')!.dtype, 'I64');
    assert.deepEqual(all.tensors.get('ids')!.data, bytesOf(i64));
  });

  test('offsets are aligned: data section at a multiple of 8, each tensor at a multiple of its element size', () => {
    const p = tmpFile('align');
    // Odd-sized narrow tensors listed first would misalign wider ones if written in input order.
    writeSafeTensors(p, [
      { name: 'a_u8', dtype: 'U8', shape: [3], data: new Uint8Array(3) },
      { name: 'b_f16', dtype: 'F16', shape: [1], data: new Uint16Array(1) },
      { name: 'c_f32', dtype: 'F32', shape: [3], data: new Float32Array(3) },
      { name: 'd_f64', dtype: 'F64', shape: [1], data: new Float64Array(1) },
      { name: 'e_i64', dtype: 'I64', shape: [1], data: new BigInt64Array(1) },
      { name: 'f_bool', dtype: 'BOOL', shape: [1], data: new Uint8Array(1) },
      { name: 'g_i32', dtype: 'I32', shape: [1], data: new Int32Array(1) },
    ]);
    const raw = readFileSync(p);
    const n = Number(raw.readBigUInt64LE(0));
    assert.equal((8 + n) % 8, 0);
    assert.match(raw.subarray(8, 8 + n).toString('utf8'), /^\{.*\} *$/);
    const f = SafeTensorsFile.open(p);
    try {
      const infos = [...f.tensors.values()];
      for (const t of infos) {
        assert.equal(t.byteOffset % DTYPE_BYTES[t.dtype], 0, `${t.name} at ${t.byteOffset}`);
      }
      // Descending element size, stable among equal sizes.
      assert.deepEqual(
        infos.map((t) => t.name),
        ['d_f64', 'e_i64', 'c_f32', 'g_i32', 'b_f16', 'a_u8', 'f_bool'],
      );
      assert.equal(infos[0]!.byteOffset, 8 + n);
    } finally {
      f.close();
    }
  });

  test('no tensors, no metadata', () => {
    const p = tmpFile('empty');
    writeSafeTensors(p, []);
    const all = readSafeTensors(p);
    assert.equal(all.tensors.size, 0);
    assert.deepEqual(all.metadata, {});
  });

  test('data views with a non-zero byteOffset are written correctly', () => {
    const p = tmpFile('subarray');
    const base = new Float32Array([9, 1, 2, 3, 9]);
    writeSafeTensors(p, [{ name: 'x', dtype: 'F32', shape: [3], data: base.subarray(1, 4) }]);
    const f = SafeTensorsFile.open(p);
    assert.deepEqual([...f.readF32('x')], [1, 2, 3]);
    f.close();
  });

  test('odd names (__proto__, unicode, numeric) round-trip', () => {
    const p = tmpFile('names');
    writeSafeTensors(
      p,
      [
        { name: '__proto__', dtype: 'U8', shape: [1], data: new Uint8Array([1]) },
        { name: 'ünï', dtype: 'U8', shape: [1], data: new Uint8Array([2]) },
        { name: '0', dtype: 'U8', shape: [1], data: new Uint8Array([3]) },
      ],
      { ['__proto__']: 'x' },
    );
    const all = readSafeTensors(p);
    assert.deepEqual([...all.tensors.get('__proto__')!.data], [1]);
    assert.deepEqual([...all.tensors.get('ünï')!.data], [2]);
    assert.deepEqual([...all.tensors.get('0')!.data], [3]);
    assert.equal(Object.getOwnPropertyDescriptor(all.metadata, '__proto__')?.value, 'x');
    assert.equal(Object.getPrototypeOf(all.metadata), Object.prototype);
  });

  test('reader errors for missing tensors, wrong dtypes and use after close', () => {
    const p = tmpFile('readerr');
    writeSafeTensors(p, [
      { name: 'ids', dtype: 'I64', shape: [1], data: new BigInt64Array(1) },
      { name: 'w', dtype: 'F32', shape: [1], data: new Float32Array(1) },
    ]);
    const f = SafeTensorsFile.open(p);
    assert.throws(() => f.readBytes('nope'), { code: 'TF_ERR_NOT_FOUND', message: /no tensor named "nope"/ });
    assert.throws(() => f.readF32('ids'), { code: 'TF_ERR_BAD_CHECKPOINT', message: /"ids" has dtype I64/ });
    assert.throws(() => f.readI64('w'), {
      code: 'TF_ERR_BAD_CHECKPOINT',
      message: /"w" has dtype F32; expected I64/,
    });
    f.close();
    assert.throws(() => f.readF32('w'), { code: 'TF_ERR_RUNTIME', message: /after close/ });
    assert.throws(() => SafeTensorsFile.open(join(root, 'missing.safetensors')), {
      code: 'TF_ERR_NOT_FOUND',
    });
  });
});

describe('writeSafeTensors data forms', () => {
  test('Float32Array values for F16/BF16 tensors are rounded to nearest-even', () => {
    const p = tmpFile('convert');
    const vals = new Float32Array([1, -2, 1 + 2 ** -11, 1e6, 0.1]);
    writeSafeTensors(p, [
      { name: 'h', dtype: 'F16', shape: [5], data: vals },
      { name: 'b', dtype: 'BF16', shape: [5], data: vals },
    ]);
    const f = SafeTensorsFile.open(p);
    try {
      assert.equal(f.tensors.get('h')!.byteLength, 10);
      assert.deepEqual(
        [...new Uint16Array(f.readBytes('h').buffer)],
        [0x3c00, 0xc000, 0x3c00, 0x7c00, 0x2e66],
      );
      assert.deepEqual(
        [...new Uint16Array(f.readBytes('b').buffer)],
        [0x3f80, 0xc000, 0x3f80, 0x4974, 0x3dcd],
      );
    } finally {
      f.close();
    }
  });

  test('producer functions are called once each, while writing, in layout order', () => {
    const p = tmpFile('lazy');
    const calls: string[] = [];
    const lazy = (name: string, make: () => ArrayBufferView) => () => {
      calls.push(name);
      return make();
    };
    writeSafeTensors(p, [
      { name: 'a', dtype: 'F16', shape: [2], data: lazy('a', () => new Float32Array([0.5, 2])) },
      { name: 'b', dtype: 'I64', shape: [1], data: lazy('b', () => new BigInt64Array([42n])) },
      { name: 'c', dtype: 'F32', shape: [0], data: lazy('c', () => new Float32Array(0)) },
    ]);
    assert.deepEqual(calls, ['b', 'c', 'a']); // I64, F32, F16
    const f = SafeTensorsFile.open(p);
    try {
      assert.deepEqual([...f.readF32('a')], [0.5, 2]);
      assert.deepEqual([...f.readI64('b')], [42n]);
      assert.equal(f.readF32('c').length, 0);
    } finally {
      f.close();
    }
  });

  test('a producer returning the wrong size or throwing leaves no file behind', () => {
    const p = tmpFile('lazy-bad');
    assert.throws(
      () => writeSafeTensors(p, [{ name: 'w', dtype: 'F32', shape: [3], data: () => new Float32Array(2) }]),
      (e: unknown) =>
        e instanceof TokenFormerError &&
        e.code === 'TF_ERR_BAD_ARGS' &&
        e.message.includes(p) &&
        /tensor "w": data is 8 bytes but dtype F32 with shape \[3\] needs 12 bytes/.test(e.message),
    );
    assert.throws(
      () =>
        writeSafeTensors(p, [
          {
            name: 'w',
            dtype: 'F32',
            shape: [1],
            data: () => {
              throw new Error('producer failed');
            },
          },
        ]),
      /producer failed/,
    );
    assert.ok(!existsSync(p));
    assert.deepEqual(
      readdirSync(root).filter((f) => f.includes('.tmp-')),
      [],
    );
  });
});

describe('writeSafeTensors validation', () => {
  const badArgs = (fn: () => void, re: RegExp, p: string) =>
    assert.throws(fn, (e: unknown) => {
      assert.ok(e instanceof TokenFormerError);
      assert.equal(e.code, 'TF_ERR_BAD_ARGS');
      assert.match(e.message, re);
      assert.ok(e.message.includes(p));
      assert.ok(!existsSync(p), 'nothing written');
      return true;
    });

  test('data length must match shape × dtype size', () => {
    const p = tmpFile('w-len');
    badArgs(
      () => writeSafeTensors(p, [{ name: 'w', dtype: 'F32', shape: [2, 3], data: new Float32Array(5) }]),
      /tensor "w".*20 bytes but dtype F32 with shape \[2, 3\] needs 24 bytes/,
      p,
    );
    badArgs(
      () => writeSafeTensors(p, [{ name: 'h', dtype: 'F16', shape: [4], data: new Float32Array(5) }]),
      /tensor "h".*data is 5 float32 values but dtype F16 with shape \[4\] needs 8 bytes/,
      p,
    );
    badArgs(
      () =>
        writeSafeTensors(p, [{ name: 'd', dtype: 'F32', shape: [1], data: [1] as unknown as Float32Array }]),
      /tensor "d".*data must be a typed array/,
      p,
    );
  });

  test('duplicate and reserved names, bad shapes, bad metadata', () => {
    const p = tmpFile('w-names');
    const t = { name: 'a', dtype: 'U8' as const, shape: [1], data: new Uint8Array(1) };
    badArgs(() => writeSafeTensors(p, [t, { ...t }]), /duplicate tensor name "a"/, p);
    badArgs(() => writeSafeTensors(p, [{ ...t, name: '__metadata__' }]), /"__metadata__".*reserved/, p);
    badArgs(() => writeSafeTensors(p, [{ ...t, shape: [-1] }]), /shape must be an array of non-negative/, p);
    badArgs(() => writeSafeTensors(p, [{ ...t, shape: [1.5] }]), /shape must be an array of non-negative/, p);
    badArgs(
      () => writeSafeTensors(p, [t], { n: 3 } as unknown as Record<string, string>),
      /__metadata__ value for key "n" must be a string/,
      p,
    );
  });
});

describe('SafeTensorsFile.open rejects malformed files', () => {
  const f32x2 = { dtype: 'F32', shape: [2], data_offsets: [0, 8] };

  test('a well-formed crafted file opens (control for the cases below)', () => {
    const p = craft('ok', { a: f32x2, __metadata__: { k: 'v' } }, 8);
    const f = SafeTensorsFile.open(p);
    assert.equal(f.tensors.get('a')!.byteLength, 8);
    f.close();
  });

  test('file shorter than 8 bytes', () => {
    const p = tmpFile('short');
    writeFileSync(p, new Uint8Array(5));
    expectBad(p, /file is 5 bytes, shorter than the 8-byte header-length prefix/);
    const p0 = tmpFile('zero');
    writeFileSync(p0, new Uint8Array(0));
    expectBad(p0, /file is 0 bytes/);
  });

  test('not a regular file', () => {
    expectBad(root, /not a regular file/);
  });

  test('header length 0', () => {
    expectBad(craft('hlen0', '', 0), /header length is 0/);
  });

  test('header length above the bound', () => {
    expectBad(craft('hlenbig', '{}', 0, BigInt(MAX_HEADER_BYTES) + 1n), /header length 100000001 exceeds/);
    expectBad(craft('hlenhuge', '{}', 0, 2n ** 64n - 1n), /header length 18446744073709551615 exceeds/);
  });

  test('header length beyond the end of the file', () => {
    expectBad(
      craft('hlenpast', '{}', 0, 100n),
      /header length 100 extends beyond the end of the file \(10 bytes\)/,
    );
  });

  test('header not valid UTF-8', () => {
    expectBad(craft('utf8', new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])), /header is not valid UTF-8/);
  });

  test('header not valid JSON', () => {
    expectBad(craft('json', '{"a": '), /header is not valid JSON/);
  });

  test('header JSON is not an object', () => {
    expectBad(craft('arr', '[1, 2]'), /header must be a JSON object, got \[1,2\]/);
    expectBad(craft('null', 'null'), /header must be a JSON object, got null/);
    expectBad(craft('num', '42      '), /header must be a JSON object, got 42/);
  });

  test('__metadata__ not a string→string map', () => {
    expectBad(craft('meta-arr', { __metadata__: ['a'] }), /__metadata__ must be an object mapping strings/);
    expectBad(craft('meta-str', { __metadata__: 'x' }), /__metadata__ must be an object mapping strings/);
    expectBad(
      craft('meta-val', { __metadata__: { a: 'ok', b: 1 } }),
      /__metadata__ value for key "b" must be a string, got 1/,
    );
    expectBad(
      craft('meta-null', { __metadata__: { c: null } }),
      /__metadata__ value for key "c" must be a string/,
    );
  });

  test('tensor entry not an object', () => {
    expectBad(craft('entry', { a: [1, 2] }), /tensor "a": entry must be an object/);
  });

  test('unknown dtype', () => {
    expectBad(
      craft('dtype', { a: { ...f32x2, dtype: 'F8_E4M3' } }, 8),
      /tensor "a": unknown or unsupported dtype "F8_E4M3"/,
    );
    expectBad(
      craft('dtype-missing', { a: { shape: [2], data_offsets: [0, 8] } }, 8),
      /tensor "a": unknown or unsupported dtype/,
    );
    expectBad(
      craft('dtype-lower', { a: { ...f32x2, dtype: 'f32' } }, 8),
      /unknown or unsupported dtype "f32"/,
    );
  });

  test('shape not an array of non-negative integers', () => {
    const re = /tensor "a": shape must be an array of non-negative integers/;
    expectBad(craft('shape-neg', { a: { ...f32x2, shape: [-2] } }, 8), re);
    expectBad(craft('shape-frac', { a: { ...f32x2, shape: [1.5] } }, 8), re);
    expectBad(craft('shape-str', { a: { ...f32x2, shape: ['2'] } }, 8), re);
    expectBad(craft('shape-obj', { a: { ...f32x2, shape: 2 } }, 8), re);
    expectBad(craft('shape-missing', { a: { dtype: 'F32', data_offsets: [0, 8] } }, 8), re);
  });

  test('data_offsets not two integers with begin <= end', () => {
    const re = /tensor "a": data_offsets must be two non-negative integers/;
    expectBad(craft('off-one', { a: { ...f32x2, data_offsets: [0] } }, 8), re);
    expectBad(craft('off-three', { a: { ...f32x2, data_offsets: [0, 8, 8] } }, 8), re);
    expectBad(craft('off-frac', { a: { ...f32x2, data_offsets: [0, 7.5] } }, 8), re);
    expectBad(craft('off-neg', { a: { ...f32x2, data_offsets: [-8, 0] } }, 8), re);
    expectBad(craft('off-str', { a: { ...f32x2, data_offsets: ['0', '8'] } }, 8), re);
    expectBad(
      craft('off-rev', { a: { ...f32x2, data_offsets: [8, 0] } }, 8),
      /data_offsets begin 8 is greater than end 0/,
    );
  });

  test('byte span does not match shape × dtype size', () => {
    expectBad(
      craft('span', { a: { ...f32x2, data_offsets: [0, 12] } }, 12),
      /tensor "a": data_offsets \[0, 12\] span 12 bytes but dtype F32 with shape \[2\] needs 8 bytes/,
    );
  });

  test('offsets beyond the data section (truncated file)', () => {
    expectBad(
      craft('trunc', { a: f32x2 }, 5),
      /tensor "a": data_offsets \[0, 8\] extend beyond the 5-byte data section \(file truncated\?\)/,
    );
  });

  test('overlapping tensors', () => {
    expectBad(
      craft('overlap', { a: f32x2, b: { ...f32x2, data_offsets: [4, 12] } }, 12),
      /tensors "a" \[0, 8\] and "b" \[4, 12\] overlap/,
    );
    expectBad(
      craft('dup-range', { a: f32x2, b: f32x2 }, 8),
      /tensors "(a|b)" \[0, 8\] and "(a|b)" \[0, 8\] overlap/,
    );
  });

  test('holes between tensors and at the start', () => {
    expectBad(
      craft('hole', { a: f32x2, b: { ...f32x2, data_offsets: [12, 20] } }, 20),
      /hole of 4 unindexed bytes between tensor "a" and tensor "b"/,
    );
    expectBad(
      craft('hole-start', { a: { ...f32x2, data_offsets: [4, 12] } }, 12),
      /hole of 4 unindexed bytes between the start of the data section and tensor "a"/,
    );
  });

  test('unindexed trailing bytes', () => {
    expectBad(craft('trailing', { a: f32x2 }, 11), /3 unindexed trailing bytes after the last tensor/);
    expectBad(craft('trailing-none', {}, 2), /2 unindexed trailing bytes/);
  });
});

describe('large files', () => {
  test('reads a tensor located beyond 2 GiB (sparse file) without reading the rest', () => {
    const p = tmpFile('sparse');
    const big = 2 ** 31 + 16; // a U8 tensor of 2 GiB + 16 bytes, never materialised
    const header = Buffer.from(
      JSON.stringify({
        big: { dtype: 'U8', shape: [big], data_offsets: [0, big] },
        tail: { dtype: 'F32', shape: [2], data_offsets: [big, big + 8] },
      }),
    );
    const fd = openSync(p, 'w');
    try {
      writeSync(fd, u64le(BigInt(header.byteLength)));
      writeSync(fd, header);
      writeSync(fd, bytesOf(new Float32Array([1.25, -7])), 0, 8, 8 + header.byteLength + big);
    } finally {
      closeSync(fd);
    }
    const f = SafeTensorsFile.open(p);
    try {
      const tail = f.tensors.get('tail')!;
      assert.ok(tail.byteOffset > 2 ** 31);
      assert.deepEqual([...f.readF32('tail')], [1.25, -7]);
    } finally {
      f.close();
      rmSync(p);
    }
  });
});

describe('official fixture', () => {
  const golden = fileURLToPath(
    new URL('../../../shared/fixtures/official-tiny/golden.safetensors', import.meta.url),
  );
  const goldenJson = golden.replace(/\.safetensors$/, '.json');

  test('reads golden.safetensors', () => {
    const f = SafeTensorsFile.open(golden);
    try {
      assert.deepEqual(f.metadata.producer, 'independent PyTorch float64 reference');
      const ids = f.tensors.get('input_ids')!;
      assert.equal(ids.dtype, 'I64');
      assert.deepEqual(ids.shape, [2, 24]);
      for (const name of ['logits', 'grown_tau_recomputed_logits']) {
        const info = f.tensors.get(name)!;
        assert.equal(info.dtype, 'F32');
        assert.deepEqual(info.shape, [2, 24, 512]);
        assert.equal(info.byteOffset % 4, 0);
      }
      const expected = JSON.parse(readFileSync(goldenJson, 'utf8')) as {
        input_ids: number[][];
        max_abs_logit: number;
      };
      assert.deepEqual([...f.readI64('input_ids')].map(Number), expected.input_ids.flat());
      const logits = f.readF32('logits');
      assert.equal(logits.length, 2 * 24 * 512);
      let maxAbs = 0;
      for (const v of logits) maxAbs = Math.max(maxAbs, Math.abs(v));
      assert.ok(Math.abs(maxAbs - expected.max_abs_logit) < 1e-5, `max |logit| ${maxAbs}`);
    } finally {
      f.close();
    }
  });
});

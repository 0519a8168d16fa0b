import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { TorchCheckpoint } from '../../src/formats/torch-checkpoint.ts';
import { ZipReader } from '../../src/formats/zip.ts';
import { type ErrorCode, TokenFormerError } from '../../src/util/errors.ts';
import { FIXTURES, tempDir } from '../helpers.ts';
import {
  buildCheckpoint,
  type CheckpointSpec,
  f32Bytes,
  f64Bytes,
  i64Bytes,
  PickleWriter,
  type TensorSpec,
  u16Bytes,
  writeTemp,
} from './helpers.ts';

/** The real implementation, for a spy that delegates to it. */
const readRangeImpl = ZipReader.prototype.readRange;

const TINY = join(FIXTURES, 'official-tiny/checkpoint/pytorch_model.bin');
const GROWN = join(FIXTURES, 'official-tiny/grown-checkpoint/pytorch_model.bin');
const TRAINING = join(FIXTURES, 'training/checkpoint/pytorch_model.bin');

function throwsTf(fn: () => unknown, code: ErrorCode, message: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof TokenFormerError, String(err));
    assert.equal(err.code, code, err.message);
    assert.match(err.message, message);
    return true;
  });
}

function withCkpt<T>(path: string, fn: (c: TorchCheckpoint) => T): T {
  const c = TorchCheckpoint.open(path);
  try {
    return fn(c);
  } finally {
    c.close();
  }
}

function officialShapes(qkv: number, proj: number, ffn: number, vocab: number, hidden: number) {
  const m = new Map<string, number[]>([['sequential.0.word_embeddings.weight', [vocab, hidden]]]);
  for (const layer of [2, 3]) {
    for (const p of ['query', 'key', 'value', 'proj']) {
      for (const kv of ['key', 'value']) {
        m.set(`sequential.${layer}.attention.${p}.${kv}_param_tokens`, [p === 'proj' ? proj : qkv, hidden]);
      }
    }
    for (const kv of ['key', 'value']) m.set(`sequential.${layer}.mlp.${kv}_param_tokens`, [ffn, hidden]);
  }
  m.set('sequential.5.norm.weight', [hidden]);
  m.set('sequential.5.norm.bias', [hidden]);
  return m;
}

describe('TorchCheckpoint on the fixtures', () => {
  test('official-tiny: names, shapes, dtypes, strides', () => {
    withCkpt(TINY, (c) => {
      assert.equal(c.prefix, 'pytorch_model');
      const expected = officialShapes(48, 40, 96, 512, 64);
      assert.deepEqual(new Set(c.tensors.keys()), new Set(expected.keys()));
      for (const [name, shape] of expected) {
        const t = c.tensor(name);
        assert.equal(t.name, name);
        assert.equal(t.dtype, 'F32');
        assert.deepEqual(t.shape, shape, name);
        assert.deepEqual(t.stride, shape.length === 2 ? [shape[1], 1] : [1], name);
        assert.equal(t.storageOffset, 0);
      }
      assert.equal(c.tensor('sequential.0.word_embeddings.weight').storageKey, '0');
      assert.equal(c.tensor('sequential.5.norm.bias').storageKey, '22');
    });
  });

  test('official-tiny: values cross-checked against the raw storage bytes', () => {
    // Expected numbers from python3 (stdlib only):
    //   z = zipfile.ZipFile(p); b = z.read('pytorch_model/data/<key>')
    //   v = struct.unpack('<%df' % (len(b) // 4), b); v[i], math.fsum(v)
    withCkpt(TINY, (c) => {
      const emb = c.readF32('sequential.0.word_embeddings.weight');
      assert.equal(emb.length, 512 * 64);
      assert.equal(emb[0], -0.04415503889322281);
      assert.equal(emb[1], 0.1710243821144104);
      assert.equal(emb[100 * 64 + 7], -0.15794970095157623);
      assert.equal(emb[511 * 64 + 63], -0.7990765571594238);
      assert.ok(Math.abs(emb.reduce((a, b) => a + b, 0) - -5.541234390964746) < 1e-9);

      const w = c.readF32('sequential.5.norm.weight'); // storage 21
      assert.equal(w.length, 64);
      assert.equal(w[0], 1.0222585201263428);
      assert.equal(w[63], 0.7404801845550537);
      assert.ok(Math.abs(w.reduce((a, b) => a + b, 0) - 63.11696481704712) < 1e-9);

      const b = c.readF32('sequential.5.norm.bias'); // storage 22
      assert.equal(b[0], -0.17428289353847504);
      assert.equal(b[63], 0.11502274125814438);

      const q = c.readF32('sequential.2.attention.query.key_param_tokens'); // storage 1, [48, 64]
      assert.equal(q.length, 48 * 64);
      assert.equal(q[0], -0.023126669228076935);
      assert.equal(q[q.length - 1], -0.0003792124625761062);
      assert.ok(Math.abs(q.reduce((a, x) => a + x, 0) - 0.44469835709610095) < 1e-9);

      const pk = c.readF32('sequential.2.attention.proj.key_param_tokens'); // storage 7, [40, 64]
      assert.equal(pk[0], -0.01757008396089077);
      assert.ok(Math.abs(pk.reduce((a, x) => a + x, 0) - 1.6746629615811344) < 1e-9);
    });
  });

  test('grown checkpoint keeps the old tokens as its first rows and zero new keys', () => {
    withCkpt(TINY, (old) =>
      withCkpt(GROWN, (grown) => {
        const expected = officialShapes(80, 64, 160, 512, 64);
        for (const [name, shape] of expected) assert.deepEqual(grown.tensor(name).shape, shape, name);
        const a = old.readF32('sequential.3.attention.query.key_param_tokens');
        const g = grown.readF32('sequential.3.attention.query.key_param_tokens');
        assert.deepEqual(g.subarray(0, a.length), a);
        assert.ok(g.subarray(a.length).every((x) => x === 0));
      }),
    );
  });

  test('training checkpoint loads completely', () => {
    withCkpt(TRAINING, (c) => {
      const expected = officialShapes(24, 16, 48, 64, 32);
      assert.deepEqual(new Set(c.tensors.keys()), new Set(expected.keys()));
      for (const [name, shape] of expected) {
        const x = c.readF32(name);
        assert.equal(
          x.length,
          shape.reduce((p, n) => p * n, 1),
        );
        assert.ok(x.every(Number.isFinite), name);
      }
    });
  });

  test('unknown tensor names', () => {
    withCkpt(TINY, (c) => {
      throwsTf(
        () => c.readF32('nope'),
        'TF_ERR_NOT_FOUND',
        /pytorch_model\.bin: checkpoint has no tensor 'nope'/,
      );
    });
  });
});

// A shared F32 storage S[i] = i / 4 of 20 elements, and several views of it.
const S = Array.from({ length: 20 }, (_, i) => i / 4);
const viewSpecs: TensorSpec[] = [
  // A = S[2:14].view(3, 4)
  { name: 'a', storageType: 'FloatStorage', key: 's', numel: 20, offset: 2, shape: [3, 4], stride: [4, 1] },
  // A.t(): [4, 3] with strides [1, 4]
  { name: 'a_t', storageType: 'FloatStorage', key: 's', numel: 20, offset: 2, shape: [4, 3], stride: [1, 4] },
  // S[3::8][:2] then every other column: [[S3, S5], [S11, S13]]
  {
    name: 'slice',
    storageType: 'FloatStorage',
    key: 's',
    numel: 20,
    offset: 3,
    shape: [2, 2],
    stride: [8, 2],
  },
  // S[5:8].expand(2, 3): stride 0 on the broadcast dim
  {
    name: 'expand',
    storageType: 'FloatStorage',
    key: 's',
    numel: 20,
    offset: 5,
    shape: [2, 3],
    stride: [0, 1],
  },
  // a scalar and an empty tensor
  { name: 'scalar', storageType: 'FloatStorage', key: 's', numel: 20, offset: 19, shape: [], stride: [] },
  {
    name: 'empty',
    storageType: 'FloatStorage',
    key: 's',
    numel: 20,
    offset: 0,
    shape: [0, 4],
    stride: [4, 1],
  },
  // a [2,1,3] tensor whose size-1 dim has an arbitrary stride is still contiguous
  {
    name: 'unit',
    storageType: 'FloatStorage',
    key: 's',
    numel: 20,
    offset: 10,
    shape: [2, 1, 3],
    stride: [3, 99, 1],
  },
];

function craft(t: { after: (fn: () => void) => void }, spec: CheckpointSpec, name = 'model.bin'): string {
  return writeTemp(tempDir(t), name, buildCheckpoint(spec));
}

describe('TorchCheckpoint on crafted archives', () => {
  for (const variant of [
    { label: 'protocol 2, stored pickle' },
    { label: 'protocol 4 OrderedDict with BUILD, deflated pickle, ZIP64', p4: true },
  ]) {
    test(`views of a shared storage (${variant.label})`, (t) => {
      const path = craft(t, {
        tensors: viewSpecs,
        storages: { s: f32Bytes(S) },
        deflatePickle: variant.p4 ?? false,
        zip64: variant.p4 ?? false,
        pickleOptions: variant.p4 ? { protocol: 4, orderedDict: true } : {},
      });
      withCkpt(path, (c) => {
        assert.deepEqual(c.tensor('a_t'), {
          name: 'a_t',
          dtype: 'F32',
          shape: [4, 3],
          stride: [1, 4],
          storageKey: 's',
          storageOffset: 2,
        });
        const a = [...c.readF32('a')];
        assert.deepEqual(a, S.slice(2, 14));
        const at = [...c.readF32('a_t')];
        for (let i = 0; i < 3; i++) for (let j = 0; j < 4; j++) assert.equal(at[j * 3 + i], a[i * 4 + j]);
        assert.deepEqual([...c.readF32('slice')], [S[3], S[5], S[11], S[13]]);
        assert.deepEqual([...c.readF32('expand')], [S[5], S[6], S[7], S[5], S[6], S[7]]);
        assert.deepEqual([...c.readF32('scalar')], [S[19]]);
        assert.deepEqual([...c.readF32('empty')], []);
        assert.deepEqual([...c.readF32('unit')], S.slice(10, 16));
      });
    });
  }

  test('reads only the byte range a tensor covers', (t) => {
    const path = craft(t, { tensors: viewSpecs, storages: { s: f32Bytes(S) } });
    const calls: [string, number, number][] = [];
    t.mock.method(
      ZipReader.prototype,
      'readRange',
      function (this: ZipReader, name: string, start: number, length: number) {
        calls.push([name, start, length]);
        return readRangeImpl.call(this, name, start, length);
      },
    );
    withCkpt(path, (c) => {
      c.readF32('a');
      c.readF32('a_t');
      c.readF32('slice');
      c.readF32('scalar');
    });
    assert.deepEqual(calls, [
      ['archive/data/s', 8, 48],
      ['archive/data/s', 8, 48],
      ['archive/data/s', 12, 44], // elements 3..13
      ['archive/data/s', 76, 4],
    ]);
  });

  test('fp16, bf16, f64 and i64 storages are converted to float32', (t) => {
    // binary16: 1, -2, 0.333251953125 (0x3555), 65504 (max), 2^-24 (smallest subnormal), -0, +inf
    const f16 = [0x3c00, 0xc000, 0x3555, 0x7bff, 0x0001, 0x8000, 0x7c00];
    // bfloat16: 1, -3, 3.140625 (0x4049), 0
    const bf16 = [0x3f80, 0xc040, 0x4049, 0x0000];
    const path = craft(t, {
      tensors: [
        { name: 'half', storageType: 'HalfStorage', key: 'h', numel: 7, shape: [7], stride: [1] },
        // a transposed 2x2 view at offset 1 of the half storage: [[h1, h3], [h2, h4]]
        {
          name: 'half_t',
          storageType: 'HalfStorage',
          key: 'h',
          numel: 7,
          offset: 1,
          shape: [2, 2],
          stride: [1, 2],
        },
        { name: 'bf', storageType: 'BFloat16Storage', key: 'b', numel: 4, shape: [2, 2], stride: [2, 1] },
        { name: 'dbl', storageType: 'DoubleStorage', key: 'd', numel: 3, offset: 1, shape: [2], stride: [1] },
        { name: 'long', storageType: 'LongStorage', key: 'l', numel: 3, shape: [3], stride: [1] },
      ],
      storages: {
        h: u16Bytes(f16),
        b: u16Bytes(bf16),
        d: f64Bytes([0.1, 1 / 3, -2.5]),
        l: i64Bytes([7, -8, 1 << 30]),
      },
    });
    withCkpt(path, (c) => {
      assert.equal(c.tensor('half').dtype, 'F16');
      assert.equal(c.tensor('bf').dtype, 'BF16');
      assert.equal(c.tensor('dbl').dtype, 'F64');
      assert.equal(c.tensor('long').dtype, 'I64');
      const h = [...c.readF32('half')];
      assert.deepEqual(h, [1, -2, 0.333251953125, 65504, 2 ** -24, -0, Number.POSITIVE_INFINITY]);
      assert.ok(Object.is(h[5], -0));
      assert.deepEqual([...c.readF32('half_t')], [-2, 65504, 0.333251953125, 2 ** -24]);
      assert.deepEqual([...c.readF32('bf')], [1, -3, 3.140625, 0]);
      assert.deepEqual([...c.readF32('dbl')], [Math.fround(1 / 3), -2.5]);
      assert.deepEqual([...c.readF32('long')], [7, -8, 1 << 30]);
    });
  });

  test('a state dict nested under "state_dict" with other entries beside it', (t) => {
    const w = new PickleWriter().proto(2).emptyDict().mark();
    w.str('epoch').int(3);
    w.str('state_dict').emptyDict().mark();
    w.str('x').global('torch._utils', '_rebuild_tensor_v2').mark();
    w.mark().str('storage').global('torch', 'FloatStorage').str('0').str('cpu').int(2).tuple().binpersid();
    w.int(0)
      .intTuple([2])
      .intTuple([1])
      .newfalse()
      .global('collections', 'OrderedDict')
      .emptyTuple()
      .reduce();
    w.tuple().reduce().setitems();
    w.setitems().stop();
    const path = craft(t, { tensors: [], storages: { '0': f32Bytes([4, 5]) }, pickle: w.bytes() });
    withCkpt(path, (c) => {
      assert.deepEqual([...c.tensors.keys()], ['x']);
      assert.deepEqual([...c.readF32('x')], [4, 5]);
    });
  });

  test('nn.Parameter pickled through _rebuild_parameter', (t) => {
    const w = new PickleWriter().proto(2).emptyDict().str('p');
    w.global('torch._utils', '_rebuild_parameter').mark();
    w.global('torch._utils', '_rebuild_tensor_v2').mark();
    w.mark().str('storage').global('torch', 'FloatStorage').str('0').str('cpu').int(1).tuple().binpersid();
    w.int(0).emptyTuple().emptyTuple().newfalse().global('collections', 'OrderedDict').emptyTuple().reduce();
    w.tuple().reduce();
    w.raw(0x88).global('collections', 'OrderedDict').emptyTuple().reduce().tuple().reduce();
    w.raw(0x73).stop();
    const path = craft(t, { tensors: [], storages: { '0': f32Bytes([42]) }, pickle: w.bytes() });
    withCkpt(path, (c) => assert.deepEqual([...c.readF32('p')], [42]));
  });
});

describe('TorchCheckpoint errors', () => {
  const one: TensorSpec = {
    name: 'w',
    storageType: 'FloatStorage',
    key: '0',
    numel: 4,
    shape: [2, 2],
    stride: [2, 1],
  };

  test('missing storage entry', (t) => {
    const path = craft(t, { tensors: [{ ...one, key: '7' }], storages: { '0': f32Bytes([1, 2, 3, 4]) } });
    throwsTf(
      () => TorchCheckpoint.open(path),
      'TF_ERR_BAD_CHECKPOINT',
      /model\.bin: tensor 'w' uses storage '7', but the archive has no entry 'archive\/data\/7'$/,
    );
  });

  test('tensor extent beyond its storage', (t) => {
    const path = craft(t, {
      tensors: [
        { ...one, offset: 1 },
        { ...one, name: 't', shape: [2, 3], stride: [1, 2] },
      ],
      storages: { '0': f32Bytes([1, 2, 3, 4]) },
    });
    throwsTf(
      () => TorchCheckpoint.open(path),
      'TF_ERR_BAD_CHECKPOINT',
      /model\.bin: tensor 'w' \(shape \[2, 2\], stride \[2, 1\], storage offset 1\) needs 5 elements but its storage '0' \(archive\/data\/0\) holds only 4$/,
    );
    const path2 = craft(
      t,
      {
        tensors: [{ ...one, name: 't', shape: [2, 3], stride: [1, 2] }],
        storages: { '0': f32Bytes([1, 2, 3, 4]) },
      },
      'transposed.bin',
    );
    throwsTf(
      () => TorchCheckpoint.open(path2),
      'TF_ERR_BAD_CHECKPOINT',
      /tensor 't' .* needs 6 elements .* holds only 4/,
    );
  });

  test('storage entry size disagrees with the declared element count', (t) => {
    const path = craft(t, { tensors: [one], storages: { '0': f32Bytes([1, 2, 3]) } });
    throwsTf(
      () => TorchCheckpoint.open(path),
      'TF_ERR_BAD_CHECKPOINT',
      /storage entry 'archive\/data\/0' is 12 bytes, but the pickle declares 4 F32 elements \(16 bytes\)/,
    );
  });

  test('unsupported global in data.pkl', (t) => {
    const evil = new PickleWriter().proto(2).global('os', 'system').str('rm -rf /').raw(0x85).reduce().stop();
    const path = craft(t, { tensors: [], storages: {}, pickle: evil.bytes() });
    throwsTf(
      () => TorchCheckpoint.open(path),
      'TF_ERR_BAD_PICKLE',
      /^pickle references unsupported global os\.system at byte 2 in .*model\.bin:archive\/data\.pkl$/,
    );
  });

  test('unknown pickle opcode in data.pkl', (t) => {
    const path = craft(t, { tensors: [], storages: {}, pickle: Buffer.from('\x80\x02}(I1\n.', 'latin1') });
    throwsTf(
      () => TorchCheckpoint.open(path),
      'TF_ERR_BAD_PICKLE',
      /^unknown pickle opcode 0x49 \('I'\) at byte 4 in .*model\.bin:archive\/data\.pkl$/,
    );
  });

  test('non-tensor values, non-dict top level, unsupported storage types', (t) => {
    const notTensor = new PickleWriter().proto(2).emptyDict().str('w').int(5).raw(0x73).stop();
    throwsTf(
      () => TorchCheckpoint.open(craft(t, { tensors: [], storages: {}, pickle: notTensor.bytes() }, 'a.bin')),
      'TF_ERR_BAD_CHECKPOINT',
      /a\.bin: state dict entry 'w' is a int, not a tensor/,
    );
    const list = new PickleWriter().proto(2).raw(0x5d).stop();
    throwsTf(
      () => TorchCheckpoint.open(craft(t, { tensors: [], storages: {}, pickle: list.bytes() }, 'b.bin')),
      'TF_ERR_BAD_CHECKPOINT',
      /b\.bin: checkpoint holds a list, expected a state dict/,
    );
    const cfloat = new PickleWriter().proto(2).emptyDict().str('w');
    cfloat.global('torch._utils', '_rebuild_tensor_v2').mark();
    cfloat.mark().str('storage').global('torch', 'ComplexFloatStorage').str('0').str('cpu').int(1).tuple();
    throwsTf(
      () => TorchCheckpoint.open(craft(t, { tensors: [], storages: {}, pickle: cfloat.bytes() }, 'c.bin')),
      'TF_ERR_BAD_PICKLE',
      /pickle references unsupported global torch\.ComplexFloatStorage/,
    );
  });

  test('not a zip, a zip without data.pkl, a legacy torch file', (t) => {
    const dir = tempDir(t);
    throwsTf(
      () => TorchCheckpoint.open(writeTemp(dir, 'x.bin', Buffer.from('{"not": "a zip"}'))),
      'TF_ERR_BAD_ZIP',
      /x\.bin: not a zip archive/,
    );
    throwsTf(
      () => TorchCheckpoint.open(writeTemp(dir, 'legacy.bin', Buffer.from('80028a0a6ccf', 'hex'))),
      'TF_ERR_BAD_CHECKPOINT',
      /legacy\.bin: this is a legacy \(pre-1\.6, non-zip\) torch\.save file/,
    );
    const noPkl = buildCheckpoint({ tensors: [], storages: {}, prefix: 'a/b' });
    throwsTf(
      () => TorchCheckpoint.open(writeTemp(dir, 'nopkl.bin', noPkl)),
      'TF_ERR_BAD_CHECKPOINT',
      /nopkl\.bin: not a torch\.save checkpoint: the zip archive has no '<name>\/data\.pkl' entry/,
    );
  });
});

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { type UnpickleOptions, unpickle } from '../../src/formats/pickle.ts';
import {
  type PickleValue,
  PyDict,
  PyGlobal,
  PyObject,
  PyTuple,
  pyTypeName,
} from '../../src/formats/pickle-values.ts';
import { ZipReader } from '../../src/formats/zip.ts';
import { TokenFormerError } from '../../src/util/errors.ts';
import { FIXTURES } from '../helpers.ts';
import { PickleWriter, torchStateDictPickle } from './helpers.ts';

const SRC = 'test.pkl';

const hex = (s: string): Buffer => Buffer.from(s, 'hex');

/** Accepts only `_codecs.encode` (protocol 2 pickles bytes objects through it). */
function findCodecs(module: string, name: string): PickleValue | undefined {
  if (module === '_codecs' && name === 'encode') {
    return new PyGlobal(module, name, (args) => Buffer.from(args[0] as string, args[1] as BufferEncoding));
  }
  return undefined;
}

const opts: UnpickleOptions = { source: SRC, findClass: findCodecs };

function rejects(data: Uint8Array, message: string | RegExp, o: UnpickleOptions = opts): void {
  assert.throws(
    () => unpickle(data, o),
    (err: unknown) => {
      assert.ok(err instanceof TokenFormerError, String(err));
      assert.equal(err.code, 'TF_ERR_BAD_PICKLE');
      if (typeof message === 'string') assert.equal(err.message, message);
      else assert.match(err.message, message);
      return true;
    },
  );
}

/** Converts unpickled values to plain JS for deepEqual. */
function plain(v: PickleValue): unknown {
  if (v instanceof PyTuple) return { tuple: v.items.map(plain) };
  if (v instanceof PyDict) return Object.fromEntries([...v].map(([k, x]) => [String(k), plain(x)]));
  if (Array.isArray(v)) return v.map(plain);
  if (v instanceof Uint8Array) return { bytes: Buffer.from(v).toString('hex') };
  return v;
}

describe('unpickle: values written by CPython', () => {
  // Produced with python3 (stdlib only):
  //   v = {'a': [1, -2, 3.5, None, True, False, 2**70, -(2**40), b'xy', (1,2), 'ü', 70000, -70000, 255, 256],
  //        'b': (1,), 'c': (), 'd': (1,2,3,4), 'e': {}}
  //   pickle.dumps(v, protocol=p).hex()
  const expected = {
    a: [
      1,
      -2,
      3.5,
      null,
      true,
      false,
      2n ** 70n,
      -(2 ** 40),
      { bytes: '7879' },
      { tuple: [1, 2] },
      'ü',
      70000,
      -70000,
      255,
      256,
    ],
    b: { tuple: [1] },
    c: { tuple: [] },
    d: { tuple: [1, 2, 3, 4] },
    e: {},
  };
  const P2 =
    '80027d71002858010000006171015d7102284b014afeffffff47400c0000000000004e88898a090000000000000000408a06' +
    '0000000000ff635f636f646563730a656e636f64650a710358020000007879710458060000006c6174696e3171058671065271' +
    '074b014b028671085802000000c3bc71094a701101004a90eefeff4bff4d000165580100000062710a4b0185710b5801000000' +
    '63710c29580100000064710d284b014b024b034b0474710e580100000065710f7d7110752e';
  const P4 =
    '80049574000000000000007d94288c0161945d94284b014afeffffff47400c0000000000004e88898a0900000000000000' +
    '00408a060000000000ff43027879944b014b0286948c02c3bc944a701101004a90eefeff4bff4d0001658c0162944b0185' +
    '948c016394298c016494284b014b024b034b0474948c0165947d94752e';
  const P5 = `8005${P4.slice(4)}`;

  test('protocol 2 (GLOBAL, BINPUT, LONG1, BINFLOAT, REDUCE via a caller-supplied global)', () => {
    assert.deepEqual(plain(unpickle(hex(P2), opts)), expected);
  });
  test('protocol 4 (FRAME, SHORT_BINUNICODE, SHORT_BINBYTES, MEMOIZE)', () => {
    assert.deepEqual(plain(unpickle(hex(P4), opts)), expected);
  });
  test('protocol 5', () => {
    assert.deepEqual(plain(unpickle(hex(P5), opts)), expected);
  });
  test('OrderedDict through a whitelisted global', () => {
    // pickle.dumps(collections.OrderedDict(x=1), protocol=2)
    const data = hex(
      '800263636f6c6c656374696f6e730a4f726465726564446963740a71002952710158010000007871024b01732e',
    );
    const v = unpickle(data, {
      source: SRC,
      findClass: (m, n) =>
        m === 'collections' && n === 'OrderedDict'
          ? new PyGlobal(m, n, () => {
              const d = new PyDict();
              d.pyClass = 'collections.OrderedDict';
              return d;
            })
          : undefined,
    });
    assert.ok(v instanceof PyDict);
    assert.equal(pyTypeName(v), 'collections.OrderedDict');
    assert.deepEqual([...v], [['x', 1]]);
  });
});

describe('unpickle: hand-built opcode sequences', () => {
  test('DUP, POP, POP_MARK, LONG_BINPUT/LONG_BINGET, APPEND, SETITEM, LIST, DICT, BINSTRING', () => {
    const w = new PickleWriter().proto(2);
    w.raw(0x28).raw(0x4b, 1).raw(0x4b, 2).raw(0x6c); // MARK 1 2 LIST -> [1, 2]
    w.raw(0x72, 0x10, 0x27, 0, 0); // LONG_BINPUT 10000
    w.raw(0x4b, 3).raw(0x61); // APPEND 3 -> [1, 2, 3]
    w.raw(0x4b, 9).raw(0x30); // push 9, POP
    w.raw(0x28).raw(0x4b, 7).raw(0x4b, 8).raw(0x31); // MARK 7 8 POP_MARK
    w.raw(0x28).str('k').raw(0x6a, 0x10, 0x27, 0, 0).raw(0x64); // MARK 'k' LONG_BINGET DICT -> {'k': [...]}
    w.raw(0x32); // DUP
    w.raw(0x55, 2, 0x68, 0x69).raw(0x54, 1, 0, 0, 0, 0x7a).raw(0x73); // SHORT_BINSTRING 'hi', BINSTRING 'z', SETITEM
    w.raw(0x86).stop(); // TUPLE2 of the dict twice
    const v = unpickle(w.bytes(), opts);
    assert.ok(v instanceof PyTuple);
    assert.equal(v.items[0], v.items[1], 'DUP pushes the same object');
    assert.deepEqual(plain(v), {
      tuple: [
        { k: [1, 2, 3], hi: 'z' },
        { k: [1, 2, 3], hi: 'z' },
      ],
    });
  });

  test('LONG1 edge values and negative BININT', () => {
    const w = new PickleWriter().proto(2).mark();
    w.raw(0x8a, 0); // 0
    w.raw(0x8a, 1, 0xff); // -1
    w.raw(0x8a, 2, 0xff, 0x00); // 255
    w.raw(0x8a, 8, 0, 0, 0, 0, 0, 0, 0, 0x80); // -2**63
    w.raw(0x4a, 0xff, 0xff, 0xff, 0x7f); // 2**31-1
    w.raw(0x4a, 0, 0, 0, 0x80); // -2**31
    w.tuple().stop();
    assert.deepEqual(plain(unpickle(w.bytes(), opts)), {
      tuple: [0, -1, 255, -(2n ** 63n), 2 ** 31 - 1, -(2 ** 31)],
    });
  });

  test('BUILD applies state to dicts and to caller objects', () => {
    class Thing extends PyObject {
      state: PickleValue = null;
      constructor() {
        super('Thing');
      }
      override setState(s: PickleValue): void {
        this.state = s;
      }
    }
    const findClass = (m: string, n: string) =>
      m === 'x' && n === 'Thing' ? new PyGlobal(m, n, () => new Thing()) : undefined;
    const w = new PickleWriter()
      .proto(4)
      .global('x', 'Thing', true)
      .emptyTuple()
      .raw(0x81)
      .int(5)
      .raw(0x62)
      .stop();
    const v = unpickle(w.bytes(), { source: SRC, findClass });
    assert.ok(v instanceof Thing);
    assert.equal(v.state, 5);
    const d = unpickle(new PickleWriter().proto(2).emptyDict().int(3).raw(0x62).stop().bytes(), opts);
    assert.ok(d instanceof PyDict);
    assert.equal(d.attributes, 3);
  });

  test('BINPERSID goes through persistentLoad', () => {
    const data = new PickleWriter().proto(2).str('k').raw(0x51).stop().bytes();
    assert.equal(unpickle(data, { ...opts, persistentLoad: (pid) => `loaded:${pid}` }), 'loaded:k');
    rejects(data, `pickle uses a persistent id, which is not supported here at byte 8 in ${SRC}`);
  });

  test('the official-tiny data.pkl parses with torch globals as opaque values', () => {
    const zip = ZipReader.open(join(FIXTURES, 'official-tiny/checkpoint/pytorch_model.bin'));
    try {
      const pids: PickleValue[] = [];
      const v = unpickle(zip.read('pytorch_model/data.pkl'), {
        source: 'data.pkl',
        findClass: (m, n) => new PyGlobal(m, n, (args) => new PyTuple([`${m}.${n}`, ...args])),
        persistentLoad: (pid) => {
          pids.push(pid);
          return pid;
        },
      });
      assert.ok(v instanceof PyDict);
      assert.equal(v.size, 23);
      assert.equal(pids.length, 23);
      const emb = v.get('sequential.0.word_embeddings.weight');
      assert.ok(emb instanceof PyTuple);
      assert.equal(emb.items[0], 'torch._utils._rebuild_tensor_v2');
      assert.deepEqual(plain(emb.items[3] as PickleValue), { tuple: [512, 64] });
      assert.deepEqual(plain(emb.items[4] as PickleValue), { tuple: [64, 1] });
    } finally {
      zip.close();
    }
  });

  test('a torch-style protocol-4 pickle from the test builder', () => {
    const data = torchStateDictPickle(
      [
        {
          name: 'w',
          storageType: 'HalfStorage',
          key: '0',
          numel: 6,
          offset: 1,
          shape: [2, 2],
          stride: [1, 2],
        },
      ],
      { protocol: 4, orderedDict: true },
    );
    const calls: string[] = [];
    const v = unpickle(data, {
      source: SRC,
      findClass: (m, n) =>
        new PyGlobal(m, n, (args) => {
          calls.push(`${m}.${n}`);
          return m === 'collections' ? new PyDict() : new PyTuple(args);
        }),
      persistentLoad: (pid) => pid,
    });
    assert.ok(v instanceof PyDict);
    assert.deepEqual(calls, [
      'collections.OrderedDict',
      'collections.OrderedDict',
      'torch._utils._rebuild_tensor_v2',
    ]);
    assert.ok(v.attributes instanceof PyDict);
    const t = v.get('w');
    assert.ok(t instanceof PyTuple);
    assert.deepEqual(plain(t.items[2]!), { tuple: [2, 2] });
    assert.deepEqual(plain(t.items[3]!), { tuple: [1, 2] });
  });
});

describe('unpickle: bad input', () => {
  test('unknown opcode names the byte and position', () => {
    // pickle.dumps(42, protocol=0)-style INT opcode is not supported: b'\x80\x02I42\n.'
    rejects(Buffer.from('\x80\x02I42\n.', 'latin1'), `unknown pickle opcode 0x49 ('I') at byte 2 in ${SRC}`);
    rejects(hex('80024b01ff'), `unknown pickle opcode 0xff at byte 4 in ${SRC}`);
  });

  test('non-whitelisted globals are refused, never executed', () => {
    // class E: __reduce__ = lambda self: (os.system, ('ls',)); pickle.dumps(E(), protocol=2) and protocol=4
    rejects(
      hex('800263706f7369780a73797374656d0a710058020000006c7371018571025271032e'),
      `pickle references unsupported global posix.system at byte 2 in ${SRC}`,
    );
    rejects(
      hex('8004951d000000000000008c05706f736978948c0673797374656d9493948c026c7394859452942e'),
      `pickle references unsupported global posix.system at byte 28 in ${SRC}`,
    );
  });

  test('a whitelisted but non-callable global cannot be called', () => {
    const data = new PickleWriter()
      .proto(2)
      .global('torch', 'FloatStorage')
      .emptyTuple()
      .reduce()
      .stop()
      .bytes();
    rejects(data, `pickle calls torch.FloatStorage, which is not supported at byte 23 in ${SRC}`, {
      source: SRC,
      findClass: (m, n) => new PyGlobal(m, n),
    });
  });

  test('errors thrown by caller code get the position', () => {
    const data = new PickleWriter().proto(2).global('a', 'b').emptyTuple().reduce().stop().bytes();
    rejects(data, `boom at byte 8 in ${SRC}`, {
      source: SRC,
      findClass: (m, n) =>
        new PyGlobal(m, n, () => {
          throw new Error('boom');
        }),
    });
  });

  test('truncation, missing STOP, stack and memo errors', () => {
    rejects(
      hex('8002580a000000616263'),
      /^pickle data is truncated: BINUNICODE needs 10 more bytes but only 3 remain at byte 2 in /,
    );
    rejects(hex('80024b'), /^pickle data is truncated: BININT1 needs 1 more bytes/);
    rejects(hex('80024b01'), `pickle data ends without a STOP opcode at byte 4 in ${SRC}`);
    rejects(hex(''), `pickle data ends without a STOP opcode at byte 0 in ${SRC}`);
    rejects(hex('80022e'), `pickle stack underflow in STOP at byte 2 in ${SRC}`);
    rejects(hex('80024b01742e'), `TUPLE without a preceding MARK at byte 4 in ${SRC}`);
    rejects(hex('800268052e'), `BINGET of missing memo entry 5 at byte 2 in ${SRC}`);
    rejects(hex('80064b012e'), `unsupported pickle protocol 6 at byte 0 in ${SRC}`);
    rejects(hex('80024b014b024b03732e'), `SETITEM on a int, expected a dict at byte 8 in ${SRC}`);
    rejects(hex('80024b014b02612e'), `APPEND on a int, expected a list at byte 6 in ${SRC}`);
    rejects(hex('80024b01293f'), /unknown pickle opcode 0x3f \('\?'\) at byte 5/);
  });
});

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'node:test';
import { GraphBuilder } from '../../src/graph/builder.ts';
import { defineFunction } from '../../src/graph/functions.ts';
import { serializeModel } from '../../src/graph/serialize.ts';
import { tensor } from '../../src/graph/types.ts';
import { OrtSession } from '../../src/runtime/ort.ts';
import { tempDir } from '../helpers.ts';

test('shape and dtype errors are raised at build time, naming the op and shapes', () => {
  const g = new GraphBuilder();
  const a = g.input('a', 'float32', ['batch', 3, 4]);
  const b = g.input('b', 'float32', [5, 6]);
  const ids = g.input('ids', 'int64', ['batch', 3]);
  assert.throws(() => g.matmul(a, b), /MatMul: inner dims differ: \[batch, 3, 4\] · \[5, 6\] \(4 vs 5\)/);
  assert.throws(() => g.add(a, b), /Add: cannot broadcast \[batch, 3, 4\] with \[5, 6\]/);
  assert.throws(() => g.add(a, ids), /Add: dtype mismatch a:float32, ids:int64/);
  assert.throws(() => g.reshape(a, [0, 5, -1]), /Reshape: .*not divisible/);
  assert.throws(() => g.reshape(a, [-1, -1]), /at most one -1/);
  assert.throws(() => g.softmax(a, 3), /Softmax: axis 3 out of range for rank 3/);
  assert.throws(() => g.transpose(a, [0, 0, 1]), /not a permutation/);
  assert.throws(() => g.concat([a, b], 0), /Concat: rank mismatch/);
  assert.throws(() => g.erf(ids), /Erf: dtype int64 not supported/);
  assert.throws(() => g.gather(b, a), /Gather: indices must be int64/);
  assert.throws(() => g.input('a', 'float32', [1]), /value name "a" is already used/);
  assert.throws(
    () => tensor('float32', [2, 2], new Float32Array(3)),
    /holds 3 float32 elements but shape \[2, 2\] needs 4/,
  );
  const other = g.input('other', 'float32', ['seq', 4]);
  assert.throws(
    () => g.add(a, other),
    /Add: cannot prove \[batch, 3, 4\] and \[seq, 4\] broadcast \(dims 3 vs seq\)/,
  );
});

test('shape inference follows ONNX semantics for reshape, slice, concat, reduce and gather', () => {
  const g = new GraphBuilder();
  const x = g.input('x', 'float32', ['batch', 'seq', 12]);
  assert.deepEqual(g.reshape(x, [0, 0, 3, 4]).shape, ['batch', 'seq', 3, 4]);
  assert.deepEqual(g.reshape(x, [-1, 12]).shape, ['batch*seq', 12]);
  assert.deepEqual(g.reshape(g.reshape(x, [0, 0, 3, 4]), [0, 0, -1]).shape, ['batch', 'seq', 12]);
  assert.deepEqual(g.slice(x, -1, 2, 100).shape, ['batch', 'seq', 10]);
  assert.deepEqual(g.concat([x, x], -1).shape, ['batch', 'seq', 24]);
  assert.deepEqual(g.concat([x, x], 1).shape, ['batch', 'seq+seq', 12]);
  assert.deepEqual(g.reduce('ReduceL2', x, [-1], true).shape, ['batch', 'seq', 1]);
  assert.deepEqual(g.reduce('ReduceSum', x, [0, 2], false).shape, ['seq']);
  const table = g.input('table', 'float32', [100, 8]);
  const ids = g.input('ids', 'int64', ['batch', 'seq']);
  assert.deepEqual(g.gather(table, ids).shape, ['batch', 'seq', 8]);
  assert.deepEqual(g.matmul(x, g.input('w', 'float32', [12, 5])).shape, ['batch', 'seq', 5]);
});

/** y = scale · x · w + 1 as a local function with a float attribute. */
const AFFINE = defineFunction({
  domain: 'test.domain',
  name: 'Affine',
  inputs: [
    { name: 'x', dtype: 'float32', shape: ['rows', 'k'] },
    { name: 'w', dtype: 'float32', shape: ['k', 'm'] },
  ],
  attributes: ['scale'],
  body: (g, [x, w], attr) => [g.add(g.mul(g.matmul(x!, w!), attr('scale')), g.scalar(1))],
});

async function runAffine(bytes: Uint8Array | string) {
  const s = await OrtSession.create(bytes, { device: 'cpu' });
  try {
    const out = await s.run({ x: [Float32Array.from([1, 2, 3, 4]), [2, 2]] });
    return Array.from(out.y!.data as Float32Array);
  } finally {
    await s.release();
  }
}

function affineGraph(): GraphBuilder {
  const g = new GraphBuilder();
  const x = g.input('x', 'float32', ['rows', 2]);
  const w = g.initializer('w', tensor('float32', [2, 3], Float32Array.from([1, 0, 1, 0, 1, 1])));
  const [y] = g.call(AFFINE, [x, w], { scale: 2 });
  g.output(y!, 'y');
  return g;
}

test('local functions: call checks inputs, infers outputs, and runs in onnxruntime', async () => {
  const g = affineGraph();
  assert.equal(g.nodes.filter((n) => n.op === 'Affine' && n.domain === 'test.domain').length, 1);
  // x·w = [[1,2,3],[3,4,7]] → ·2 + 1
  assert.deepEqual(await runAffine(serializeModel(g, { graphName: 't' })), [3, 5, 7, 7, 9, 15]);
  const bad = new GraphBuilder();
  const x3 = bad.input('x', 'float32', ['rows', 3]);
  const w = bad.input('w', 'float32', [2, 3]);
  assert.throws(() => bad.call(AFFINE, [x3, w], { scale: 1 }), /MatMul: inner dims differ/);
  assert.throws(() => bad.call(AFFINE, [x3], { scale: 1 }), /test.domain::Affine: expected 2 inputs, got 1/);
  assert.throws(() => bad.call(AFFINE, [x3, w], {}), /attribute scale is required/);
  // Inlining gives the same numbers without a custom node.
  const inl = new GraphBuilder();
  const xi = inl.input('x', 'float32', ['rows', 2]);
  const wi = inl.initializer('w', tensor('float32', [2, 3], Float32Array.from([1, 0, 1, 0, 1, 1])));
  inl.output(inl.inline(AFFINE, [xi, wi], { scale: 2 })[0]!, 'y');
  assert.equal(inl.functions.size, 0);
  assert.deepEqual(await runAffine(serializeModel(inl, { graphName: 't' })), [3, 5, 7, 7, 9, 15]);
});

test('external data: initializers are written beside the model and loaded from there', async (t) => {
  const dir = tempDir(t);
  const g = affineGraph();
  const chunks: { bytes: Uint8Array; offset: number }[] = [];
  const bytes = serializeModel(g, {
    graphName: 't',
    externalData: {
      location: 'm.onnx.data',
      writeChunk: (b, offset) => chunks.push({ bytes: b.slice(), offset }),
    },
  });
  assert.equal(chunks.length, 1);
  const data = new Uint8Array(64);
  for (const c of chunks) data.set(c.bytes, c.offset);
  writeFileSync(join(dir, 'm.onnx.data'), data);
  writeFileSync(join(dir, 'm.onnx'), bytes);
  assert.ok(bytes.byteLength < 1000);
  assert.deepEqual(await runAffine(join(dir, 'm.onnx')), [3, 5, 7, 7, 9, 15]);
});

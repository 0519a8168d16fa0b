import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import test from 'node:test';
import { GraphBuilder } from '../../src/graph/builder.ts';
import { serializeModel } from '../../src/graph/serialize.ts';
import { OrtSession } from '../../src/runtime/ort.ts';

function addGraph(): Uint8Array {
  const g = new GraphBuilder();
  const a = g.input('a', 'float32', ['n']);
  const b = g.input('b', 'float32', ['n']);
  g.output(g.add(a, b), 'sum');
  return serializeModel(g, { graphName: 'add' });
}

test('onnxruntime-node is pinned to the version whose binding behaviour DESIGN.md §3 describes', () => {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
    dependencies: Record<string, string>;
  };
  assert.equal(pkg.dependencies['onnxruntime-node'], '1.29.0');
  const installed = createRequire(import.meta.url)('onnxruntime-node/package.json') as { version: string };
  assert.equal(installed.version, '1.29.0');
});

test('missing and unknown inputs are named together with the expected ones', async () => {
  const s = await OrtSession.create(addGraph(), { device: 'cpu' });
  await assert.rejects(
    s.run({ a: [new Float32Array(2), [2]], c: [new Float32Array(2), [2]] }),
    /graph inputs are \[a, b\]; missing: b; unknown: c/,
  );
  const out = await s.run({ a: [Float32Array.from([1, 2]), [2]], b: [Float32Array.from([3, 4]), [2]] });
  assert.deepEqual(Array.from(out.sum!.data as Float32Array), [4, 6]);
  await s.release();
});

test('device auto falls back to CPU with a reason when CUDA cannot be used; cuda alone fails clearly', async (t) => {
  const reasons: string[] = [];
  const s = await OrtSession.create(addGraph(), { device: 'auto', onFallback: (r) => reasons.push(r) });
  if (s.device === 'cuda') {
    t.diagnostic('a usable CUDA provider is present; the fallback path cannot be exercised here');
    await s.release();
    return;
  }
  assert.equal(s.device, 'cpu');
  assert.equal(reasons.length, 1);
  assert.match(reasons[0]!, /^[^\n]+$/, 'one line');
  await s.release();
  await assert.rejects(OrtSession.create(addGraph(), { device: 'cuda' }), /: --device cuda: [^\n]+$/);
});

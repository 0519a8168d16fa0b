import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import test from 'node:test';

/** The layers of STYLE.md: a module may import only from its own layer and the ones listed. */
const ALLOWED: Record<string, readonly string[]> = {
  util: [],
  graph: ['util'],
  tokenizer: ['util'],
  model: ['graph', 'util'],
  export: ['model', 'graph', 'util'],
  train: ['export', 'model', 'graph', 'tokenizer', 'util', 'engine'],
  engine: ['export', 'model', 'graph', 'tokenizer', 'util'],
  server: ['engine', 'tokenizer', 'util'],
};

const SRC = resolve(import.meta.dirname, '../src');

function* sourceFiles(dir: string): Generator<string> {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.isDirectory()) yield* sourceFiles(join(dir, e.name));
    else if (e.name.endsWith('.ts')) yield join(dir, e.name);
  }
}

function imports(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  return [...text.matchAll(/^\s*(?:import|export)\s[^'"]*?from\s+'([^']+)'/gm)].map((m) => m[1]!);
}

test('imports point down the layers of STYLE.md', () => {
  const violations: string[] = [];
  for (const file of sourceFiles(SRC)) {
    const layer = relative(SRC, file).split('/')[0]!;
    assert.ok(layer in ALLOWED, `unknown layer ${layer} (${file}): add it to this table`);
    for (const spec of imports(file)) {
      if (!spec.startsWith('.')) continue;
      const target = relative(SRC, resolve(file, '..', spec)).split('/')[0]!;
      if (target !== layer && !ALLOWED[layer]!.includes(target)) {
        violations.push(`${relative(SRC, file)} imports ${spec} (${layer} → ${target})`);
      }
    }
  }
  assert.deepEqual(violations, []);
});

test('only src/engine/ort.ts imports onnxruntime-node', () => {
  const users = [...sourceFiles(SRC)].filter((f) => imports(f).some((s) => s.startsWith('onnxruntime')));
  assert.deepEqual(
    users.map((f) => relative(SRC, f)),
    ['engine/ort.ts'],
  );
});

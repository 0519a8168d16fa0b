import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import test from 'node:test';

/**
 * The floors of STYLE.md: each layer names the floors directly beneath it, and a module may import
 * from its own layer and from any floor reachable down those arrows (never up, never sideways).
 */
const BENEATH: Record<string, readonly string[]> = {
  util: [],
  formats: ['util'],
  graph: ['util'],
  tokenizer: ['util'],
  model: ['graph', 'formats'],
  export: ['model'],
  runtime: ['graph', 'util'],
  train: ['export', 'runtime', 'model', 'tokenizer'],
  engine: ['export', 'runtime', 'model', 'tokenizer'],
  bench: ['train', 'engine'],
  server: ['engine'],
};

function below(layer: string): Set<string> {
  const seen = new Set<string>();
  const walk = (l: string): void => {
    for (const d of BENEATH[l] ?? []) {
      if (seen.has(d)) continue;
      seen.add(d);
      walk(d);
    }
  };
  walk(layer);
  return seen;
}

const ALLOWED: Record<string, ReadonlySet<string>> = Object.fromEntries(
  Object.keys(BENEATH).map((l) => [l, below(l)]),
);

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
      if (target !== layer && !ALLOWED[layer]!.has(target)) {
        violations.push(`${relative(SRC, file)} imports ${spec} (${layer} → ${target})`);
      }
    }
  }
  assert.deepEqual(violations, []);
});

test('only src/runtime/ort.ts imports onnxruntime-node', () => {
  const users = [...sourceFiles(SRC)].filter((f) => imports(f).some((s) => s.startsWith('onnxruntime')));
  assert.deepEqual(
    users.map((f) => relative(SRC, f)),
    ['runtime/ort.ts'],
  );
});

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'node:test';
import { readLog } from '../../src/train/log.ts';
import { tempDir } from '../helpers.ts';

test('readLog keeps complete lines and drops an append cut short, even one ending in }', (t) => {
  const path = join(tempDir(t), 'train-log.jsonl');
  assert.deepEqual(readLog(path), []);
  writeFileSync(path, '{"step":1,"loss":2.5}\n{"step":2,"loss":2.25}\n');
  assert.deepEqual(readLog(path), [
    { step: 1, loss: 2.5 },
    { step: 2, loss: 2.25 },
  ]);
  writeFileSync(path, '{"step":1,"loss":2.5}\n{"step":2,"lo');
  assert.deepEqual(readLog(path), [{ step: 1, loss: 2.5 }]);
  writeFileSync(path, '{"step":1,"loss":2.5}\n{"step":2,"x":{"a":1}');
  assert.deepEqual(readLog(path), [{ step: 1, loss: 2.5 }]);
});

test('readLog names a damaged complete line instead of skipping it', (t) => {
  const path = join(tempDir(t), 'train-log.jsonl');
  writeFileSync(path, '{"step":1}\n{"step":2,"lo\n{"step":3}\n');
  assert.throws(() => readLog(path), /train-log\.jsonl:2: not a JSON log line/);
});

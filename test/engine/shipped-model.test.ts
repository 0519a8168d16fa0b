import assert from 'node:assert/strict';
import { join, resolve } from 'node:path';
import test from 'node:test';
import { resolveExport } from '../../src/engine/model-dir.ts';
import { ModelRunner } from '../../src/engine/runner.ts';
import { OrtSession } from '../../src/runtime/ort.ts';
import { Tokenizer } from '../../src/tokenizer/tokenizer.ts';
import { tempDir } from '../helpers.ts';

const MODELS = resolve(import.meta.dirname, '../../models');

function argmax(row: Float32Array): number {
  let best = 0;
  for (let v = 1; v < row.length; v++) if (row[v]! > row[best]!) best = v;
  return best;
}

for (const name of ['default', 'default-grown']) {
  test(`shipped model ${name}: greedy KV-cache decoding equals recomputing model.onnx at every step`, async (t) => {
    const { exportDir } = await resolveExport(join(MODELS, name), tempDir(t));
    const tok = Tokenizer.fromFile(join(exportDir, 'tokenizer.json'));
    const prompts = ['The President of the United States', 'Call me Ishmael.'].map((p) => tok.encode(p));
    const full = await OrtSession.create(join(exportDir, 'model.onnx'), { device: 'cpu' });
    const runner = await ModelRunner.create(exportDir, { device: 'cpu', maxSequences: 2 });
    try {
      const ids = prompts.map(() => runner.addSequence());
      const seqs = prompts.map((p) => [...p]);
      let logits = await Promise.all(prompts.map((p, i) => runner.prefill(ids[i]!, p)));
      const v = runner.vocabSize;
      for (let step = 0; step < 16; step++) {
        const next = logits.map(argmax);
        for (let i = 0; i < seqs.length; i++) {
          const ref = await full.run({
            input_ids: [BigInt64Array.from(seqs[i]!, BigInt), [1, seqs[i]!.length]],
          });
          const data = ref.logits!.data as Float32Array;
          const last = data.subarray((seqs[i]!.length - 1) * v, seqs[i]!.length * v);
          assert.equal(next[i], argmax(last), `${name}, sequence ${i}, step ${step}`);
          seqs[i]!.push(next[i]!);
        }
        const out = await runner.decode(ids, next);
        logits = ids.map((_, i) => out.subarray(i * v, (i + 1) * v));
      }
      assert.ok(tok.decode(seqs[1]!.slice(prompts[1]!.length)).length > 0);
    } finally {
      await runner.close();
      await full.release();
    }
  });
}

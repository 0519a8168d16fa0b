import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { after, before } from 'node:test';
import { ModelRunner, type RunnerOptions } from '../../src/engine/runner.ts';
import { exportCheckpoint, type Manifest } from '../../src/export/export.ts';
import { SafeTensorsFile } from '../../src/formats/safetensors.ts';
import { importOfficial } from '../../src/model/official/import.ts';
import { OrtSession } from '../../src/runtime/ort.ts';
import { type ErrorCode, TokenFormerError } from '../../src/util/errors.ts';
import { FIXTURES, maxAbsDiff, tempDir } from '../helpers.ts';

/**
 * The KV-cache path (decoder.onnx + KvCache + ModelRunner) against the full-sequence model.onnx
 * recomputed at every step, on the imported official fixture (vocab 512, max_seq_len 2048).
 */

const TINY = join(FIXTURES, 'official-tiny');
const V = 512;
let work: string;
let exportDir: string;
let full: OrtSession;
let golden: { ids: number[][]; logits: Float32Array };

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'tf-runner-'));
  await importOfficial(join(TINY, 'checkpoint'), join(work, 'ckpt'));
  exportDir = join(work, 'export');
  await exportCheckpoint(join(work, 'ckpt'), exportDir);
  full = await OrtSession.create(join(exportDir, 'model.onnx'), { device: 'cpu' });
  const f = SafeTensorsFile.open(join(TINY, 'golden.safetensors'));
  try {
    const flat = Array.from(f.readI64('input_ids'), Number);
    golden = { ids: [flat.slice(0, 24), flat.slice(24)], logits: f.readF32('logits') };
  } finally {
    f.close();
  }
});

after(async () => {
  await full?.release();
  if (work) rmSync(work, { recursive: true, force: true });
});

async function runner(t: { after: (fn: () => Promise<void>) => void }, opts: Partial<RunnerOptions> = {}) {
  const r = await ModelRunner.create(exportDir, { device: 'cpu', threads: 1, maxSequences: 4, ...opts });
  t.after(() => r.close());
  return r;
}

/** Full-sequence logits of the last position of `tokens`, recomputed from scratch. */
async function fullLast(tokens: readonly number[]): Promise<Float32Array> {
  const out = await full.run({ input_ids: [BigInt64Array.from(tokens, BigInt), [1, tokens.length]] });
  return (out.logits!.data as Float32Array).slice((tokens.length - 1) * V);
}

function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

/** Greedy generation by recomputing model.onnx over the whole context at every step. */
async function referenceGreedy(prompt: readonly number[], steps: number) {
  const ctx = [...prompt];
  const logits: Float32Array[] = [];
  for (let s = 0; s < steps; s++) {
    const l = await fullLast(ctx);
    logits.push(l);
    ctx.push(argmax(l));
  }
  return { tokens: ctx.slice(prompt.length), logits };
}

function row(x: Float32Array, r: number): Float32Array {
  return x.subarray(r * V, (r + 1) * V);
}

function tfError(code: ErrorCode, message: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof TokenFormerError, `expected a TokenFormerError, got ${String(err)}`);
    assert.equal(err.code, code);
    assert.match(err.message, message);
    return true;
  };
}

/** Compares a generated run with the reference: identical tokens, logits within `tol`. */
async function checkAgainstReference(
  t: { diagnostic: (m: string) => void },
  what: string,
  prompt: readonly number[],
  gen: { tokens: number[]; logits: Float32Array[] },
  tol = 1e-4,
) {
  const ref = await referenceGreedy(prompt, gen.tokens.length);
  assert.deepEqual(gen.tokens, ref.tokens, `${what}: greedy tokens differ from full recomputation`);
  const diff = Math.max(...gen.logits.map((l, i) => maxAbsDiff(l, ref.logits[i]!)));
  t.diagnostic(`${what}: ${gen.tokens.length} tokens, max |cache − full| logit = ${diff.toExponential(2)}`);
  assert.ok(diff <= tol, `${what}: max |cache − full| = ${diff}`);
}

test('batch 1: 30 greedy tokens through the KV cache equal full recomputation at every step', async (t) => {
  const r = await runner(t);
  const prompt = golden.ids[0]!.slice(0, 8);
  const id = r.addSequence();
  let logits = await r.prefill(id, prompt);
  const gen = { tokens: [] as number[], logits: [] as Float32Array[] };
  for (let s = 0; s < 30; s++) {
    gen.logits.push(logits);
    gen.tokens.push(argmax(logits));
    if (s < 29) logits = await r.decode([id], [gen.tokens.at(-1)!]);
  }
  assert.equal(r.length(id), 8 + 29);
  await checkAgainstReference(t, 'batch 1', prompt, gen);
});

test('batch 3: sequences join at different steps, one leaves early, its slot is reused', async (t) => {
  const r = await runner(t, { maxSequences: 3, initialCapacity: 16 });
  interface Seq {
    name: string;
    id: number;
    prompt: number[];
    tokens: number[];
    logits: Float32Array[];
  }
  const active: Seq[] = [];
  const done: Seq[] = [];
  const join_ = async (name: string, prompt: number[]) => {
    const s: Seq = { name, id: r.addSequence(), prompt, tokens: [], logits: [] };
    const l = await r.prefill(s.id, prompt, 4);
    s.logits.push(l);
    s.tokens.push(argmax(l));
    active.push(s);
  };
  const step = async (seqs: Seq[]) => {
    const out = await r.decode(
      seqs.map((s) => s.id),
      seqs.map((s) => s.tokens.at(-1)!),
    );
    seqs.forEach((s, i) => {
      s.logits.push(row(out, i).slice());
      s.tokens.push(argmax(row(out, i)));
    });
  };
  const [g0, g1] = [golden.ids[0]!, golden.ids[1]!];
  await join_('A', g0.slice(0, 7));
  for (let s = 1; s <= 40; s++) {
    if (s === 3) await join_('B', g1.slice(0, 12));
    if (s === 6) await join_('C', g0.slice(10, 13));
    if (s === 9) {
      assert.throws(() => r.addSequence(), tfError('TF_ERR_NO_CAPACITY', /all 3 sequence slots are in use/));
    }
    if (s === 10) {
      const a = active.shift()!; // A leaves early: C moves into its slot
      r.release(a.id);
      done.push(a);
      assert.equal(r.sequenceCount, 2);
    }
    if (s === 11) await join_('D', g1.slice(5, 10)); // only possible because A's slot was freed
    const finished = active.filter((q) => q.tokens.length >= 30);
    for (const q of finished) {
      r.release(q.id);
      active.splice(active.indexOf(q), 1);
      done.push(q);
    }
    if (active.length === 0) break;
    // Reversed order, and at step 8 leave B (slot 1) out: a non-contiguous decode set.
    await step(s === 8 ? active.filter((q) => q.name !== 'B').reverse() : [...active].reverse());
  }
  done.push(...active);
  assert.deepEqual(done.map((q) => q.name).sort(), ['A', 'B', 'C', 'D']);
  assert.ok(done.find((q) => q.name === 'A')!.tokens.length < 15, 'A left early');
  for (const q of done) await checkAgainstReference(t, q.name, q.prompt, q);
});

test('prefill in chunks of 5 equals one chunk; growing the cache mid-generation changes nothing', async (t) => {
  const prompt = golden.ids[1]!.slice(0, 23);
  const big = await runner(t, { maxSequences: 2 });
  const small = await runner(t, { maxSequences: 2, initialCapacity: 2 });
  const a = big.addSequence();
  const b = small.addSequence();
  const one = await big.prefill(a, prompt);
  assert.equal(small.stats().capacity, 2);
  const chunked = await small.prefill(b, prompt, 5);
  assert.equal(small.stats().capacity, 32, 'grew 2 → 4 → … → 32 during the chunked prefill');
  const chunkDiff = maxAbsDiff(chunked, one);
  t.diagnostic(`chunk 5 vs one chunk: max |Δ logit| = ${chunkDiff.toExponential(2)}`);
  assert.ok(chunkDiff <= 1e-5, `chunked prefill differs by ${chunkDiff}`);
  assert.ok(maxAbsDiff(one, await fullLast(prompt)) <= 1e-4);
  // Decode both side by side, each with a second sequence so growth re-lays out two slots.
  const [a2, b2] = [big.addSequence(), small.addSequence()];
  const p2 = golden.ids[0]!.slice(0, 3);
  let [la, lb] = [
    [one, await big.prefill(a2, p2)],
    [chunked, await small.prefill(b2, p2)],
  ];
  const gen = { tokens: [] as number[], logits: [] as Float32Array[] };
  let maxDiff = 0;
  for (let s = 0; s < 30; s++) {
    const next = la.map(argmax);
    assert.deepEqual(lb.map(argmax), next, `step ${s}: tokens differ after growth`);
    maxDiff = Math.max(maxDiff, ...la.map((l, i) => maxAbsDiff(l, lb[i]!)));
    gen.logits.push(la[0]!);
    gen.tokens.push(next[0]!);
    const [oa, ob] = [await big.decode([a, a2], next), await small.decode([b, b2], next)];
    la = [row(oa, 0), row(oa, 1)];
    lb = [row(ob, 0), row(ob, 1)];
  }
  assert.equal(small.stats().capacity, 64, 'grew again mid-generation (23 + 30 > 32)');
  assert.equal(big.stats().capacity, 64);
  t.diagnostic(`small-cap vs large-cap run: max |Δ logit| = ${maxDiff.toExponential(2)}`);
  assert.ok(maxDiff <= 1e-5, `growth changed logits by ${maxDiff}`);
  await checkAgainstReference(t, 'after growth', prompt, gen);
});

test('golden fixture: logits at every position reproduced token by token through the cache (≤ 1e-4)', async (t) => {
  const r = await runner(t, { maxSequences: 2, initialCapacity: 8 });
  const ids = [r.addSequence(), r.addSequence()];
  let worst = 0;
  for (let pos = 0; pos < 24; pos++) {
    const out = await r.decode(ids, [golden.ids[0]![pos]!, golden.ids[1]![pos]!]);
    for (let b = 0; b < 2; b++) {
      const want = golden.logits.subarray((b * 24 + pos) * V, (b * 24 + pos + 1) * V);
      worst = Math.max(worst, maxAbsDiff(row(out, b), want));
    }
  }
  t.diagnostic(`max |cache − golden| over 2 × 24 positions = ${worst.toExponential(2)}`);
  assert.ok(worst <= 1e-4, `max |cache − golden| = ${worst}`);
  assert.equal(r.stats().capacity, 32);
});

test('bad inputs fail with clear errors and leave the sequence usable', async (t) => {
  const r = await runner(t, { maxSequences: 1 });
  const id = r.addSequence();
  await assert.rejects(
    r.prefill(id, [1, 512, 3]),
    tfError('TF_ERR_BAD_ARGS', /token id 512 at index 1.*\[0, 512\)/),
  );
  await assert.rejects(r.prefill(id, [-1]), tfError('TF_ERR_BAD_ARGS', /token id -1/));
  await assert.rejects(r.decode([id], [2.5]), tfError('TF_ERR_BAD_ARGS', /token id 2\.5/));
  await assert.rejects(r.prefill(id, []), tfError('TF_ERR_BAD_ARGS', /at least one token/));
  await assert.rejects(r.prefill(id, [1], 0), tfError('TF_ERR_BAD_ARGS', /chunkSize/));
  await assert.rejects(r.decode([id], [1, 2]), tfError('TF_ERR_BAD_ARGS', /1 ids, 2 tokens/));
  await assert.rejects(r.decode([id, id], [1, 2]), tfError('TF_ERR_BAD_ARGS', /duplicate/));
  await assert.rejects(r.decode([99], [1]), tfError('TF_ERR_NOT_FOUND', /unknown sequence id 99/));
  await assert.rejects(r.prefill(99, [1]), tfError('TF_ERR_NOT_FOUND', /unknown sequence id 99/));
  assert.throws(() => r.release(99), tfError('TF_ERR_NOT_FOUND', /unknown sequence id 99/));
  assert.throws(() => r.addSequence(), tfError('TF_ERR_NO_CAPACITY', /all 1 sequence slots/));
  assert.equal(r.length(id), 0, 'failed calls cached nothing');
  // max_seq_len is 2048.
  const long = Array.from({ length: 2049 }, (_, i) => i % V);
  await assert.rejects(
    r.prefill(id, long),
    tfError('TF_ERR_CONTEXT_LENGTH', /0 cached \+ 2049 new tokens = 2049 exceeds max_seq_len 2048/),
  );
  await r.prefill(id, long.slice(0, 2047), 512);
  await r.decode([id], [7]);
  assert.equal(r.length(id), 2048);
  assert.equal(r.stats().capacity, 2048);
  await assert.rejects(r.decode([id], [7]), tfError('TF_ERR_CONTEXT_LENGTH', /2048 cached \+ 1 new/));
  assert.equal(r.length(id), 2048);
  r.release(id);
  await assert.rejects(r.decode([id], [1]), tfError('TF_ERR_NOT_FOUND', /unknown sequence id/));
  const again = r.addSequence();
  const l = await r.prefill(again, golden.ids[0]!.slice(0, 5));
  assert.ok(maxAbsDiff(l, await fullLast(golden.ids[0]!.slice(0, 5))) <= 1e-4, 'a reused slot starts clean');
});

test('an export without a decoder graph is refused with a clear error', async (t) => {
  const dir = tempDir(t);
  const m = JSON.parse(readFileSync(join(exportDir, 'manifest.json'), 'utf8')) as Manifest;
  m.graphs = m.graphs.filter((g) => g.role !== 'decoder');
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(m));
  await assert.rejects(
    ModelRunner.create(dir, { device: 'cpu', maxSequences: 1 }),
    tfError('TF_ERR_BAD_CHECKPOINT', /no decoder graph.*re-export/),
  );
  await assert.rejects(
    ModelRunner.create(join(dir, 'missing'), { device: 'cpu', maxSequences: 1 }),
    tfError('TF_ERR_NOT_FOUND', /manifest\.json/),
  );
});

test('a release during a run takes effect after it; calls are serialized', async (t) => {
  const r = await runner(t, { maxSequences: 2 });
  const [a, b] = [r.addSequence(), r.addSequence()];
  const pa = r.prefill(a, golden.ids[0]!.slice(0, 6));
  const pb = r.prefill(b, golden.ids[1]!.slice(0, 4));
  await Promise.resolve(); // a's run is in flight
  r.release(a);
  await assert.rejects(r.decode([a], [1]), tfError('TF_ERR_NOT_FOUND', /unknown sequence id/));
  await pa;
  const lb = await pb;
  assert.equal(r.sequenceCount, 1);
  assert.equal(r.length(b), 4, 'b moved into a’s slot with its cache');
  const next = await r.decode([b], [argmax(lb)]);
  assert.ok(maxAbsDiff(next, await fullLast([...golden.ids[1]!.slice(0, 4), argmax(lb)])) <= 1e-4);
});

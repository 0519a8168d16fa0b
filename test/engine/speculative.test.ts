import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { GeneratedToken } from '../../src/engine/protocol.ts';
import { ModelRunner } from '../../src/engine/runner.ts';
import { type SamplingParams, validateSamplingParams } from '../../src/engine/sampling/params.ts';
import { type SampleResult, Sampler } from '../../src/engine/sampling/sampler.ts';
import { Scheduler } from '../../src/engine/scheduler.ts';
import { acceptOrResample, type SpecSequence, Speculator } from '../../src/engine/speculative.ts';
import { exportCheckpoint, exportModel } from '../../src/export/export.ts';
import type { CheckpointMeta } from '../../src/model/checkpoint.ts';
import { Rng } from '../../src/util/rng.ts';
import { f32Params } from '../export/params.ts';
import { tempDir, tinyConfig } from '../helpers.ts';
import { swapModelsRoot } from './served-model.ts';

/**
 * Speculative decoding against decoding without a draft, on real exported models: greedy output
 * (tokens and logprobs) identical over many prompts in continuous batches, with a draft that
 * predicts like the target (a zero/keep growth of it) and with one that does not (random growth,
 * so drafts are often rejected); and sampled output distributed as the target's (chi-square on a
 * vocabulary-8 model, with a draft of other random weights).
 */

const cleanups: (() => void)[] = [];
let exports: Record<'served' | 'a' | 'b' | 'c', string>;
let tiny: { target: string; draft: string };

before(async () => {
  const dir = tempDir({ after: (fn) => cleanups.push(fn) });
  const root = await swapModelsRoot(dir);
  exports = {
    served: join(dir, 'served', 'export'),
    a: join(dir, 'x-a'),
    b: join(dir, 'x-b'),
    c: join(dir, 'x-c'),
  };
  for (const n of ['a', 'b', 'c'] as const) await exportCheckpoint(join(root, n), exports[n]);
  const cfg = tinyConfig({ vocab_size: 8, max_seq_len: 32 });
  const meta = (step: number): CheckpointMeta => ({
    format: 'tokenformer-checkpoint',
    format_version: 1,
    model: cfg,
    tokenizer: null,
    provenance: { source: 'test', created: '' },
    step,
    parent: null,
    weights_sha256: `tiny-${step}`, // never read back: these exports come from weights in memory
  });
  tiny = { target: join(dir, 'tiny-target'), draft: join(dir, 'tiny-draft') };
  // Weights scaled down so that the vocabulary-8 distributions are spread, not one-hot.
  const soft = (seed: number) =>
    new Map([...f32Params(cfg, seed)].map(([n, p]) => [n, n === 'embed.weight' ? p.map((x) => x / 40) : p]));
  await exportModel({ dir: join(dir, 't'), meta: meta(1), params: soft(11) }, tiny.target);
  await exportModel({ dir: join(dir, 'd'), meta: meta(2), params: soft(12) }, tiny.draft);
});
after(() => {
  for (const c of cleanups) c();
});

const runner = (exportDir: string, maxSequences = 6) =>
  ModelRunner.create(exportDir, { device: 'cpu', threads: 1, maxSequences });

/** Runs every request to the end through one scheduler; returns each one's tokens. */
async function generateAll(
  target: ModelRunner,
  spec: Speculator | undefined,
  requests: { prompt: number[]; params: SamplingParams }[],
): Promise<GeneratedToken[][]> {
  const sched = new Scheduler(
    target,
    { maxSequences: 6, maxQueue: 1000, prefillChunk: 16, eosTokenId: null },
    spec,
  );
  const out: GeneratedToken[][] = requests.map(() => []);
  requests.forEach((r, i) => {
    sched.add(i, r.prompt, r.params);
  });
  while (!sched.idle) {
    const { updates } = await sched.step();
    for (const u of updates) {
      assert.equal(u.error, undefined);
      out[u.id]!.push(...u.tokens);
    }
  }
  return out;
}

function prompts(n: number, vocab: number, seed: number): number[][] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () =>
    Array.from({ length: 1 + Math.floor(rng.nextFloat() * 20) }, () => Math.floor(rng.nextFloat() * vocab)),
  );
}

for (const [draftName, label] of [
  ['served', 'the parent (zero/keep growth: the same function)'],
  ['c', 'an unrelated draft (random growth: many rejections)'],
] as const) {
  test(`greedy output with ${label} as draft equals decoding without it`, async (t) => {
    const target = await runner(exports.a);
    const draft = await runner(exports[draftName]);
    t.after(async () => {
      await target.close();
      await draft.close();
    });
    const reqs = prompts(40, 512, draftName === 'c' ? 2 : 1).map((prompt, i) => ({
      prompt,
      params: validateSamplingParams({
        temperature: 0,
        max_tokens: 5 + (i % 23),
        logprobs: i % 3 === 0 ? 2 : undefined,
        repetition_penalty: i % 4 === 1 ? 1.3 : 1,
        frequency_penalty: i % 5 === 2 ? 0.5 : 0,
      }),
    }));
    const plain = await generateAll(target, undefined, reqs);
    const spec = new Speculator(target, draft, { fixedK: 4 });
    const fast = await generateAll(target, spec, reqs);
    t.diagnostic(
      `drafted ${spec.totals.drafted}, accepted ${spec.totals.accepted} ` +
        `(${((100 * spec.totals.accepted) / spec.totals.drafted).toFixed(1)}%)`,
    );
    assert.ok(spec.totals.drafted > 200, 'speculation ran');
    if (draftName === 'served') assert.ok(spec.totals.accepted / spec.totals.drafted > 0.9);
    else assert.ok(spec.totals.accepted < spec.totals.drafted * 0.9, 'the unrelated draft is often rejected');
    reqs.forEach((_, i) => {
      assert.deepEqual(
        fast[i]!.map((x) => x.token),
        plain[i]!.map((x) => x.token),
        `request ${i}: tokens`,
      );
      fast[i]!.forEach((x, j) => {
        const y = plain[i]![j]!;
        assert.ok(Math.abs(x.logprob - y.logprob) < 1e-4, `request ${i} token ${j}: logprob`);
        assert.deepEqual(
          x.top?.map((a) => a.token),
          y.top?.map((a) => a.token),
        );
      });
    });
  });
}

test('the rejection rule reproduces p exactly from any q (exact expectation)', () => {
  const p = Float64Array.from([0.5, 0.3, 0.2, 0]);
  const q = Float64Array.from([0.1, 0.1, 0.4, 0.4]);
  // P(out = x) = Σ_d q(d) P(out = x | d); with u enumerating a fine grid it is computed exactly.
  const got = new Float64Array(4);
  const steps = 400;
  for (let d = 0; d < 4; d++) {
    for (let a = 0; a < steps; a++) {
      for (let b = 0; b < steps; b++) {
        const us = [(a + 0.5) / steps, (b + 0.5) / steps];
        let i = 0;
        const r = acceptOrResample(p, q, d, () => us[i++]!);
        got[r.token] = got[r.token]! + q[d]! / steps ** 2;
      }
    }
  }
  for (let x = 0; x < 4; x++) assert.ok(Math.abs(got[x]! - p[x]!) < 5e-3, `p(${x}): ${got[x]} vs ${p[x]}`);
});

/** Pearson's chi-square of counts against probabilities, cells with expectation < 5 pooled. */
function chiSquare(counts: number[], probs: number[], n: number): { stat: number; df: number } {
  let stat = 0;
  let cells = 0;
  let poolObs = 0;
  let poolExp = 0;
  counts.forEach((c, i) => {
    const e = probs[i]! * n;
    if (e < 5) {
      poolObs += c;
      poolExp += e;
      return;
    }
    stat += (c - e) ** 2 / e;
    cells++;
  });
  if (poolExp > 0) {
    stat += (poolObs - poolExp) ** 2 / poolExp;
    cells++;
  }
  return { stat, df: cells - 1 };
}

/** Upper 0.1 % point of chi-square with df degrees of freedom (Wilson–Hilferty). */
function chiSquareCritical(df: number): number {
  const z = 3.090232;
  return df * (1 - 2 / (9 * df) + z * Math.sqrt(2 / (9 * df))) ** 3;
}

for (const [name, raw] of [
  ['temperature 1', { temperature: 1 }],
  ['temperature 0.7, top_k 5', { temperature: 0.7, top_k: 5 }],
] as const) {
  test(`sampled speculative output follows the target's distribution (chi-square, ${name})`, async (t) => {
    const V = 8;
    const target = await runner(tiny.target, 2);
    const draft = await runner(tiny.draft, 2);
    const ref = await runner(tiny.target, 2);
    t.after(async () => {
      await Promise.all([target.close(), draft.close(), ref.close()]);
    });
    const params = validateSamplingParams({ ...raw, max_tokens: 8, seed: 5 });
    const prompt = [3, 1, 4];
    // The exact joint distribution of the first two generated tokens.
    const refSampler = new Sampler(params, prompt, V);
    const rid = ref.addSequence();
    const p1 = refSampler.distribution(await ref.prefill(rid, prompt));
    const joint: number[] = [];
    for (let a = 0; a < V; a++) {
      const id = ref.addSequence();
      const p2 = refSampler.distribution(await ref.prefill(id, [...prompt, a]));
      ref.release(id);
      for (let b = 0; b < V; b++) joint.push(p1[a]! * p2[b]!);
    }
    // Speculative: the first token comes from the prefill (plain sampling) is not what is tested,
    // so the prompt's last token is left pending and both generated tokens come out of drafts
    // verified by the rejection rule.
    const spec = new Speculator(target, draft, { fixedK: 3 });
    const n = 2500;
    const counts = new Array<number>(V * V).fill(0);
    const rng = new Rng(99);
    for (let trial = 0; trial < n; trial++) {
      const seqParams = { ...params, seed: Math.floor(rng.nextFloat() * 2 ** 31) };
      const seq: SpecSequence & { out: number[] } = {
        runnerId: target.addSequence(),
        fed: [...prompt],
        sampler: new Sampler(seqParams, prompt, V),
        draft: { id: draft.addSequence(), sampler: new Sampler(seqParams, prompt, V) },
        budget: 4,
        out: [],
      };
      await target.prefill(seq.runnerId, prompt.slice(0, -1));
      await draft.prefill(seq.draft!.id, prompt.slice(0, -1));
      while (seq.out.length < 2) {
        await spec.step([seq], 3, {
          alive: () => true,
          take: (s, r: SampleResult) => {
            s.out.push(r.token);
            (s.fed as number[]).push(r.token);
            s.sampler.accept(r.token);
            s.draft!.sampler.accept(r.token);
            return true;
          },
          fail: (_s, err) => {
            throw err;
          },
        });
      }
      counts[seq.out[0]! * V + seq.out[1]!]!++;
      target.release(seq.runnerId);
      draft.release(seq.draft!.id);
    }
    const { stat, df } = chiSquare(counts, joint, n);
    const crit = chiSquareCritical(df);
    t.diagnostic(
      `chi-square ${stat.toFixed(1)} on ${df} df (0.1 % critical ${crit.toFixed(1)}); ` +
        `acceptance ${((100 * spec.totals.accepted) / spec.totals.drafted).toFixed(1)}%`,
    );
    assert.ok(spec.totals.accepted < spec.totals.drafted, 'some drafts were rejected');
    assert.ok(spec.totals.accepted > 0, 'some drafts were accepted');
    assert.ok(stat < crit, `chi-square ${stat} ≥ ${crit} (df ${df})`);
  });
}

test('cancelling speculating sequences frees their slots in both models; survivors stay exact', async (t) => {
  const target = await runner(exports.a);
  const draft = await runner(exports.served);
  t.after(async () => {
    await target.close();
    await draft.close();
  });
  const params = validateSamplingParams({ temperature: 0, max_tokens: 40, ignore_eos: true });
  const reqs = prompts(4, 512, 3).map((prompt) => ({ prompt, params }));
  const plain = await generateAll(target, undefined, reqs);
  const spec = new Speculator(target, draft, { fixedK: 3 });
  const sched = new Scheduler(
    target,
    { maxSequences: 6, maxQueue: 10, prefillChunk: 16, eosTokenId: null },
    spec,
  );
  const out: number[][] = reqs.map(() => []);
  reqs.forEach((r, i) => {
    sched.add(i, r.prompt, r.params);
  });
  for (let step = 0; !sched.idle; step++) {
    if (step === 3) {
      sched.cancel(1);
      sched.cancel(2);
    }
    for (const u of (await sched.step()).updates) out[u.id]!.push(...u.tokens.map((x) => x.token));
  }
  assert.equal(target.sequenceCount, 0);
  assert.equal(draft.sequenceCount, 0);
  assert.ok(spec.totals.drafted > 0);
  for (const i of [0, 3])
    assert.deepEqual(
      out[i],
      plain[i]!.map((x) => x.token),
      `request ${i}`,
    );
  for (const i of [1, 2]) assert.ok(out[i]!.length < 40, `request ${i} was cancelled`);
});

import assert from 'node:assert/strict';
import test from 'node:test';
import { GREEDY_TEMPERATURE, validateSamplingParams } from '../../../src/engine/sampling/params.ts';
import { Sampler } from '../../../src/engine/sampling/sampler.ts';
import { TokenFormerError } from '../../../src/util/errors.ts';
import { Rng } from '../../../src/util/rng.ts';

const params = (raw: Record<string, unknown> = {}) => validateSamplingParams(raw);
const row = (...xs: number[]) => Float32Array.from(xs);
const sampler = (raw: Record<string, unknown>, logits: Float32Array, prompt: number[] = []) =>
  new Sampler(params(raw), prompt, logits.length);

/** Softmax in float64 of float32 logits (what the sampler sees), with the logits first rounded. */
function softmax(xs: ArrayLike<number>, temperature = 1): number[] {
  const z = Array.from(Float32Array.from(xs as ArrayLike<number>));
  const m = Math.max(...z);
  const e = z.map((x) => Math.exp((x - m) / temperature));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}

function support(p: ArrayLike<number>): number[] {
  const out: number[] = [];
  for (let i = 0; i < p.length; i++) if (p[i]! > 0) out.push(i);
  return out;
}

function counts(s: Sampler, logits: Float32Array, n: number): number[] {
  const c = new Array<number>(logits.length).fill(0);
  for (let i = 0; i < n; i++) c[s.sample(logits).token]!++;
  return c;
}

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number): void {
  assert.equal(actual.length, expected.length);
  for (let i = 0; i < actual.length; i++) {
    assert.ok(
      Math.abs(actual[i]! - expected[i]!) <= tol,
      `[${i}] ${actual[i]} vs ${expected[i]} (tol ${tol})`,
    );
  }
}

/**
 * Reference filter by full sort, in the documented order: temperature, then top-k, then top-p
 * over the top-k set, then min-p against the max; ties broken by the lower id.
 */
function reference(logits: Float32Array, p: { t: number; k: number; topP: number; minP: number }): number[] {
  const z = Array.from(logits);
  const m = Math.max(...z);
  const w = z.map((x) => Math.exp((x - m) / p.t));
  const order = w.map((_, i) => i).sort((a, b) => w[b]! - w[a]! || a - b);
  let keep = p.k > 0 ? order.slice(0, p.k) : order;
  if (p.topP < 1) {
    const mass = keep.reduce((a, i) => a + w[i]!, 0);
    let acc = 0;
    let n = 0;
    while (acc < p.topP * mass) acc += w[keep[n++]!]!;
    keep = keep.slice(0, n);
  }
  keep = keep.filter((i) => w[i]! >= p.minP);
  const s = keep.reduce((a, i) => a + w[i]!, 0);
  const out = new Array<number>(z.length).fill(0);
  for (const i of keep) out[i] = w[i]! / s;
  return out;
}

test('greedy is the argmax, ties going to the lowest id, and draws nothing from the rng', () => {
  const logits = row(1, 3, -2, 3, 2.5);
  const s = sampler({ temperature: 0 }, logits);
  for (let i = 0; i < 5; i++) assert.equal(s.sample(logits).token, 1);
  assert.equal(sampler({ temperature: 0 }, row(-5, -5, -5)).sample(row(-5, -5, -5)).token, 0);
  const { logprob } = s.sample(logits);
  assert.ok(Math.abs(logprob - Math.log(softmax(logits)[1]!)) < 1e-12);
  const fresh = new Rng(s.rng.seed);
  assert.equal(s.rng.nextUint32(), fresh.nextUint32(), 'greedy sampling consumed random numbers');
});

test('the same seed gives the same 100 tokens; a different seed gives different ones', () => {
  const rng = new Rng(11);
  const logits = Float32Array.from({ length: 50 }, () => rng.nextFloat() * 4);
  const run = (seed: number) => {
    const s = sampler({ seed, temperature: 0.9, top_p: 0.95 }, logits);
    return Array.from({ length: 100 }, () => s.sample(logits).token);
  };
  assert.deepEqual(run(1234), run(1234));
  assert.notDeepEqual(run(1234), run(1235));
});

test('an unseeded sampler reports the random seed it drew, and that seed replays it', () => {
  const logits = row(0, 1, 2, 0.5, -1);
  const a = sampler({}, logits);
  const b = sampler({}, logits);
  assert.notEqual(a.rng.seed, b.rng.seed);
  const replay = sampler({ seed: a.rng.seed }, logits);
  for (let i = 0; i < 50; i++) assert.equal(a.sample(logits).token, replay.sample(logits).token);
});

test('20k draws at temperature 1 follow the softmax (chi-square and per-token bounds)', () => {
  const logits = row(0, 1, 2, 0.5, -1, 1.5, -3, 0.25);
  const n = 20_000;
  const c = counts(sampler({ seed: 7 }, logits), logits, n);
  const p = softmax(logits);
  let chi2 = 0;
  for (let i = 0; i < p.length; i++) {
    chi2 += (c[i]! - n * p[i]!) ** 2 / (n * p[i]!);
    assert.ok(Math.abs(c[i]! / n - p[i]!) < 0.015, `token ${i}: ${c[i]! / n} vs ${p[i]}`);
  }
  assert.ok(chi2 < 24.3, `chi-square ${chi2} over 7 degrees of freedom (p = 0.001 at 24.3)`);
});

test('draws with temperature and filters follow distribution()', () => {
  const rng = new Rng(5);
  const logits = Float32Array.from({ length: 40 }, () => rng.nextFloat() * 6);
  const s = sampler({ seed: 8, temperature: 0.7, top_k: 12, top_p: 0.8, min_p: 0.02 }, logits);
  const p = s.distribution(logits);
  const n = 20_000;
  const c = counts(s, logits, n);
  for (let i = 0; i < p.length; i++) {
    if (p[i] === 0) assert.equal(c[i], 0, `token ${i} is filtered out but was drawn`);
    else assert.ok(Math.abs(c[i]! / n - p[i]!) < 0.015, `token ${i}: ${c[i]! / n} vs ${p[i]}`);
  }
});

test('top_k = 1 is greedy, ties included', () => {
  const rng = new Rng(9);
  for (let round = 0; round < 50; round++) {
    const logits = Float32Array.from({ length: 30 }, () => Math.round(rng.nextFloat() * 5));
    const g = sampler({ temperature: 0 }, logits).sample(logits).token;
    const s = sampler({ temperature: 1.3, top_k: 1, seed: round }, logits);
    for (let i = 0; i < 5; i++) assert.equal(s.sample(logits).token, g);
  }
});

test('top_p keeps the smallest set whose mass reaches p, ties to the lowest ids', () => {
  const logits = row(...[0.5, 0.25, 0.15, 0.1].map(Math.log));
  const can = (top_p: number) => support(sampler({ top_p }, logits).distribution(logits));
  assert.deepEqual(can(0.4), [0]);
  assert.deepEqual(can(0.7), [0, 1]);
  assert.deepEqual(can(0.8), [0, 1, 2]);
  assert.deepEqual(can(0.95), [0, 1, 2, 3]);
  assert.deepEqual(can(1), [0, 1, 2, 3]);

  // Probabilities 0.2, 0.3, 0.2, 0.3: 0.6 does not reach 0.65, so one 0.2 joins: the lower id.
  const tied = row(...[0.2, 0.3, 0.2, 0.3].map(Math.log));
  assert.deepEqual(support(sampler({ top_p: 0.65 }, tied).distribution(tied)), [0, 1, 3]);
  assert.deepEqual(support(sampler({ top_p: 0.5 }, tied).distribution(tied)), [1, 3]);

  // The draws agree: over many draws exactly the kept tokens appear, renormalised.
  const c = counts(sampler({ top_p: 0.7, seed: 3 }, logits), logits, 6000);
  assert.deepEqual(support(c), [0, 1]);
  assert.ok(Math.abs(c[0]! / 6000 - 2 / 3) < 0.03);
});

test('min_p drops tokens below min_p · p_max', () => {
  const logits = row(...[0.5, 0.3, 0.1, 0.06, 0.04].map(Math.log));
  const p = sampler({ min_p: 0.15 }, logits).distribution(logits); // threshold 0.075
  assert.deepEqual(support(p), [0, 1, 2]);
  assertClose(p, [0.5 / 0.9, 0.3 / 0.9, 0.1 / 0.9, 0, 0], 1e-6);
  assert.deepEqual(support(sampler({ min_p: 0.7 }, logits).distribution(logits)), [0]);
});

test('filters match a full-sort reference on random rows with many ties', () => {
  const rng = new Rng(21);
  for (let round = 0; round < 200; round++) {
    const v = 1 + (rng.nextUint32() % 400);
    const levels = round % 2 === 0 ? 4 : 0;
    const logits = Float32Array.from({ length: v }, () => {
      const u = rng.nextFloat() * 8;
      return levels > 0 ? Math.floor(u / 2) * 2 : u;
    });
    const cfg = {
      t: [0.3, 0.8, 1, 1.7][round % 4]!,
      k: round % 3 === 0 ? 0 : 1 + (rng.nextUint32() % v),
      topP: round % 5 === 0 ? 1 : 0.05 + 0.9 * rng.nextFloat(),
      minP: round % 4 === 1 ? 0.2 * rng.nextFloat() : 0,
    };
    const s = sampler({ temperature: cfg.t, top_k: cfg.k, top_p: cfg.topP, min_p: cfg.minP }, logits);
    const actual = s.distribution(logits);
    const expected = reference(logits, cfg);
    assert.deepEqual(support(actual), support(expected), `round ${round} ${JSON.stringify(cfg)}`);
    assertClose(actual, expected, 1e-9);
  }
});

test('when the heavy tokens cannot hold the answer the whole vocabulary is used (exact)', () => {
  // One token at 0 and 100k tokens at -17 (weight 4e-8, below the pool's floor): together the
  // tail carries ~0.4% of the mass, so top_p 0.999 and top_k 5 both need tail tokens.
  const v = 100_001;
  const logits = new Float32Array(v).fill(-17);
  logits[0] = 0;
  const tail = Math.exp(-17);
  const total = 1 + (v - 1) * tail;

  const k = sampler({ top_k: 5 }, logits).distribution(logits);
  assert.deepEqual(support(k), [0, 1, 2, 3, 4]);

  const p = sampler({ top_p: 0.999 }, logits).distribution(logits);
  const needed = Math.ceil((0.999 * total - 1) / tail);
  assert.ok(
    Math.abs(support(p).length - (1 + needed)) <= 1,
    `kept ${support(p).length}, about ${1 + needed}`,
  );
  assert.equal(support(p).at(-1), support(p).length - 1, 'tail ties go to the lowest ids');

  const m = sampler({ min_p: 1e-9 }, logits).distribution(logits);
  assert.equal(support(m).length, v);
});

test('as temperature falls towards 0 the distribution approaches greedy', () => {
  const logits = row(1, 2.2, 2, -1, 0.5);
  let last = 0;
  for (const t of [1.5, 1, 0.5, 0.2, 0.05, 0.01]) {
    const pMax = sampler({ temperature: t }, logits).distribution(logits)[1]!;
    assert.ok(pMax > last, `p(argmax) ${pMax} at temperature ${t} should exceed ${last}`);
    last = pMax;
  }
  assert.ok(last > 1 - 1e-8);
  const s = sampler({ temperature: 0.01, seed: 1 }, logits);
  for (let i = 0; i < 200; i++) assert.equal(s.sample(logits).token, 1);
});

test('temperatures below GREEDY_TEMPERATURE, top_p 0 and min_p 1 are greedy, with finite logprobs', () => {
  const rng = new Rng(5);
  for (let round = 0; round < 20; round++) {
    const logits = Float32Array.from({ length: 40 }, () => Math.round(rng.nextFloat() * 6));
    const g = sampler({ temperature: 0, logprobs: 2 }, logits).sample(logits);
    // 1 / 1e-310 is Infinity: without the epsilon, 0 · Infinity made the row NaN.
    for (const raw of [
      { temperature: 1e-310 },
      { temperature: GREEDY_TEMPERATURE / 2 },
      { temperature: 1.5, top_p: 0 },
      { temperature: 1.5, min_p: 1 },
    ]) {
      const s = sampler({ ...raw, seed: round, logprobs: 2 }, logits);
      for (let i = 0; i < 3; i++) assert.deepEqual(s.sample(logits), g, JSON.stringify(raw));
      const p = s.distribution(logits);
      assert.equal(p[g.token], 1);
    }
  }
});

test('logit_bias adds to the logits: the distribution is softmax(logits + bias); -100 bans, 100 forces', () => {
  const logits = row(1, 2.2, 2, -1, 0.5);
  const biased = (bias: Record<string, number>, raw: Record<string, unknown> = {}) =>
    new Sampler(params({ logit_bias: bias, ...raw }), [], logits.length);
  const p = biased({ '0': 1.5, '3': -0.25 }).distribution(logits);
  assertClose(p, softmax([2.5, 2.2, 2, -1.25, 0.5]), 1e-12);
  assert.equal(biased({ '1': -100 }, { temperature: 0 }).sample(logits).token, 2);
  const forced = biased({ '3': 100 }, { seed: 1 });
  for (let i = 0; i < 50; i++) assert.equal(forced.sample(logits).token, 3);
  // Logprobs describe the biased distribution, like the draws.
  const r = biased({ '0': 1.5 }, { temperature: 0, logprobs: 1 }).sample(logits);
  assert.equal(r.token, 0);
  assert.ok(Math.abs(r.logprob - Math.log(softmax([2.5, 2.2, 2, -1, 0.5])[0]!)) < 1e-6);
  assert.throws(() => biased({ '5': 1 }), /logit_bias token 5 is outside the vocabulary \[0, 5\)/);
});

test('min_tokens holds back the end-of-text token and stop_token_ids until that many tokens are out', () => {
  const eos = 1;
  const logits = row(1, 9, 2, 8.5, 0.5); // eos is the argmax, stop token 3 the runner-up
  const s = new Sampler(
    params({ temperature: 0, min_tokens: 2, stop_token_ids: [3], logprobs: 2 }),
    [],
    5,
    eos,
  );
  const first = s.sample(logits);
  assert.equal(first.token, 2);
  assert.equal(first.top![0]!.token, 2); // banned tokens have logprob -Infinity
  s.accept(first.token);
  assert.equal(s.sample(logits).token, 2);
  assert.ok(s.distribution(logits)[eos] === 0);
  s.accept(2);
  assert.equal(s.sample(logits).token, eos);
  // With temperature: 2000 draws never hit a held-back token.
  const t = new Sampler(
    params({ temperature: 1.5, min_tokens: 16, stop_token_ids: [3], seed: 2 }),
    [],
    5,
    eos,
  );
  for (let i = 0; i < 2000; i++) assert.ok(![eos, 3].includes(t.sample(logits).token));
  // ignore_eos: end-of-text is an ordinary token, min_tokens does not touch it.
  const g = new Sampler(params({ temperature: 0, min_tokens: 3, ignore_eos: true }), [], 5, eos);
  assert.equal(g.sample(logits).token, eos);
});

test('repetition penalty divides positive and multiplies negative logits of seen tokens', () => {
  const logits = row(2, -1, 1, 0);
  const base = softmax(logits);
  // Token 0 (positive logit) seen in the prompt: 2 → 1.
  const pos = sampler({ repetition_penalty: 2 }, logits, [0]).distribution(logits);
  assertClose(pos, softmax([1, -1, 1, 0]), 1e-9);
  assert.ok(pos[0]! < base[0]!);
  // Token 1 (negative logit): -1 → -2, so it also becomes less likely.
  const neg = sampler({ repetition_penalty: 2 }, logits, [1]).distribution(logits);
  assertClose(neg, softmax([2, -2, 1, 0]), 1e-9);
  assert.ok(neg[1]! < base[1]!);
  // Generated tokens count too; a penalty below 1 favours repeats.
  const s = sampler({ repetition_penalty: 0.5 }, logits);
  s.accept(2);
  assertClose(s.distribution(logits), softmax([2, -1, 2, 0]), 1e-9);
});

test('an extreme repetition penalty saturates the logit instead of making it infinite', () => {
  const logits = row(2, -1, 1, 0);
  // 2 / 1e-100 overflows float32; the seen token is then (all but) certain, not a NaN softmax.
  const tiny = sampler({ repetition_penalty: 1e-100, temperature: 0 }, logits, [2]);
  assert.equal(tiny.sample(logits).token, 2);
  const p = tiny.distribution(logits);
  assert.ok(p.every((x) => Number.isFinite(x)));
  assert.ok(Math.abs(p[2]! - 1) < 1e-12);
  // -1 · 1e300 the other way: token 1 can never be drawn, the rest are unchanged.
  const huge = sampler({ repetition_penalty: 1e300 }, logits, [1]).distribution(logits);
  assert.equal(huge[1], 0);
  assertClose([huge[0]!, huge[2]!, huge[3]!], softmax([2, 1, 0]), 1e-9);
});

test('presence and frequency penalties subtract presence + count · frequency over generated tokens only', () => {
  const logits = row(1, 1, 1, 1, 1);
  const s = sampler({ presence_penalty: 0.5, frequency_penalty: 0.25 }, logits, [0, 0, 4]);
  for (const t of [2, 2, 3]) s.accept(t);
  // token 2: 1 − 0.5 − 2·0.25 = 0; token 3: 1 − 0.5 − 0.25 = 0.25; prompt tokens 0, 4 untouched.
  assertClose(s.distribution(logits), softmax([1, 1, 0, 0.25, 1]), 1e-9);
  const top = s.sample(logits);
  assert.ok(Math.abs(top.logprob - Math.log(softmax([1, 1, 0, 0.25, 1])[top.token]!)) < 1e-9);

  const neg = sampler({ presence_penalty: -1, frequency_penalty: -0.5 }, logits);
  neg.accept(1);
  assertClose(neg.distribution(logits), softmax([1, 2.5, 1, 1, 1]), 1e-9);
});

test("the caller's logits are never modified", () => {
  const logits = row(3, -2, 1, 0.5);
  const copy = Float32Array.from(logits);
  const s = sampler(
    { repetition_penalty: 1.5, presence_penalty: 1, frequency_penalty: 1, top_p: 0.9 },
    logits,
    [0, 1],
  );
  s.accept(2);
  s.sample(logits);
  s.distribution(logits);
  assert.deepEqual(logits, copy);
});

test('logprobs: a log-softmax that sums to 1, top alternatives sorted, chosen rank reported', () => {
  const rng = new Rng(2);
  const small = Float32Array.from({ length: 20 }, () => rng.nextFloat() * 10 - 5);
  const all = sampler({ logprobs: 20, seed: 1 }, small).sample(small).top!;
  assert.equal(all.length, 20);
  assert.ok(Math.abs(all.reduce((a, x) => a + Math.exp(x.logprob), 0) - 1) < 1e-9);

  const v = 1000;
  const logits = Float32Array.from({ length: v }, () => rng.nextFloat() * 10 - 5);
  logits[10] = logits[20] = 7; // a tie at the top: the lower id is listed first
  const s = sampler({ logprobs: 5, seed: 3, temperature: 1.5 }, logits);
  for (let i = 0; i < 50; i++) {
    const r = s.sample(logits);
    const top = r.top!;
    assert.equal(top.length, 5);
    assert.deepEqual(
      top.slice(0, 2).map((x) => x.token),
      [10, 20],
    );
    for (let j = 1; j < top.length; j++) assert.ok(top[j - 1]!.logprob >= top[j]!.logprob);
    const expectedRank = 1 + Array.from(logits).filter((x) => x > logits[r.token]!).length;
    assert.equal(r.rank, expectedRank);
    if (r.rank! <= 5) assert.equal(top[r.rank! - 1]!.logprob, r.logprob);
    // Logprobs are taken at temperature 1 (the model's distribution), not at 1.5.
    assert.ok(Math.abs(r.logprob - Math.log(softmax(logits)[r.token]!)) < 1e-9);
  }
  // A tie at the edge of the list: the lower id is listed, the higher one left out.
  const edge = row(5, 3, 1, 3);
  assert.deepEqual(
    sampler({ logprobs: 2 }, edge)
      .sample(edge)
      .top!.map((x) => x.token),
    [0, 1],
  );
  const greedy = sampler({ temperature: 0, logprobs: 3 }, logits).sample(logits);
  assert.equal(greedy.token, 10);
  assert.equal(greedy.rank, 1);
  assert.deepEqual(sampler({ logprobs: 0 }, logits).sample(logits).top, []);
  assert.equal(sampler({}, logits).sample(logits).top, undefined);
});

test('bad rows and tokens are reported', () => {
  const logits = row(0, 1, 2);
  const s = sampler({}, logits);
  const code = (c: string) => (err: unknown) => err instanceof TokenFormerError && err.code === c;
  assert.throws(() => s.sample(row(0, 1)), code('TF_ERR_BAD_ARGS'));
  assert.throws(() => s.accept(3), /accepted token 3 is outside the vocabulary \[0, 3\)/);
  assert.throws(() => sampler({}, logits, [5]), /prompt token 5 is outside the vocabulary/);
  assert.throws(() => s.sample(row(-Infinity, -Infinity, -Infinity)), code('TF_ERR_RUNTIME'));
  assert.throws(() => s.sample(row(0, Number.NaN, 1)), /logits row contains NaN/);
  assert.throws(() => sampler({ temperature: 0 }, logits).sample(row(0, Number.NaN, 1)), /NaN/);
});

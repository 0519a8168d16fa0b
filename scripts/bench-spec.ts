import { copyFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { CONFIG_FILE, readCheckpointMeta, TOKENIZER_FILE, WEIGHTS_FILE } from '../src/model/checkpoint.ts';
import { growDirectory } from '../src/model/grow.ts';
import { writeJsonAtomic } from '../src/util/atomic.ts';
import { type FlagSpec, helpText, parseCommandLine, runMain } from '../src/util/cli.ts';
import { fail } from '../src/util/errors.ts';
import { sseJson } from './harness/sse.ts';
import { startSoakServer } from './soak/server.ts';

/**
 * Speculative decoding, served: for each target model, one server drafting with its parent
 * (`--draft-model auto`) and two without (`--draft-model none`; the second is a control for how
 * much identical servers differ), the same batch-1 SSE requests sent to each in turn (rotating
 * which goes first) after untimed warm-up passes, tokens counted from `usage`. Reports
 * tokens/s with and without the draft, the speed-up, the control's ratio, the draft's acceptance (from /metrics) and whether the greedy
 * texts were identical. Targets: a zero/keep growth of models/default (the same function as its
 * draft) and models/default-grown (grown, then trained on). Ratios are within one run.
 */

const USAGE =
  'npm run bench:spec -- [--out DIR] [--max-tokens N] [--rounds N] [--warmup-rounds N] [--threads N] [--device cpu|cuda|auto] [--json]';
const ROOT = resolve(import.meta.dirname, '..');
const PROMPTS = [
  'Call me Ishmael. Some years ago',
  'The President said that the nation',
  'It was a dark and stormy night; the rain',
  'Fellow citizens, the state of the Union',
  'The whale rose slowly from the sea and',
  'In the year of our Lord',
  'We hold these truths to be self-evident,',
  'The ship sailed out of the harbour at dawn',
];

interface Timed {
  ms: number;
  tokens: number;
  text: string;
}

/** One streamed completion; tokens from the final usage chunk. */
async function complete(url: string, body: Record<string, unknown>): Promise<Timed> {
  const started = performance.now();
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
  });
  if (res.status !== 200) fail('TF_ERR_RUNTIME', `HTTP ${res.status}: ${await res.text()}`);
  const raw = await res.text();
  const ms = performance.now() - started;
  const chunks = sseJson<{ choices: { text?: string }[]; usage?: { completion_tokens: number } | null }>(raw);
  const text = chunks.map((c) => c.choices[0]?.text ?? '').join('');
  const tokens = chunks.findLast((c) => c.usage)?.usage?.completion_tokens;
  if (tokens === undefined) fail('TF_ERR_RUNTIME', 'the stream had no usage chunk');
  return { ms, tokens, text };
}

interface Row {
  target: string;
  draft: string;
  temperature: number;
  requests: number;
  tokens_per_s_with_draft: number;
  tokens_per_s_without: number;
  speedup: number;
  /**
   * A second server without a draft against the first (tokens/s): how far two identical servers
   * differ here, the floor under which a speed-up means nothing.
   */
  control_ratio: number;
  acceptance: number;
  drafted: number;
  accepted: number;
  identical_texts: string;
}

const INTRO = `Speculative decoding bench: serves target models with and without a draft model and
compares tokens/s, acceptance and the texts.`;

const FLAGS = {
  out: {
    kind: 'string',
    arg: 'DIR',
    help: 'working directory (models, logs, results)',
    default: '.cache/bench-spec',
  },
  'max-tokens': { kind: 'int', min: 1, help: 'tokens generated per request', default: '128' },
  rounds: { kind: 'int', min: 1, help: 'measured passes over the prompts per configuration', default: '2' },
  'warmup-rounds': {
    kind: 'int',
    min: 0,
    help: "untimed passes first, so the figures are a running server's (the draft's k settled, every shape planned)",
    default: '1',
  },
  threads: { kind: 'int', min: 1, help: "server's --threads", default: '1' },
  device: { kind: 'string', arg: 'DEVICE', help: "server's --device", default: 'cpu' },
  json: { kind: 'boolean', help: 'print the rows as JSON' },
} as const satisfies Record<string, FlagSpec>;

runMain(async () => {
  const flags = parseCommandLine(USAGE, FLAGS);
  if (flags.help) return void console.log(helpText(USAGE, INTRO, FLAGS));
  const maxTokens = flags['max-tokens'] ?? 128;
  const rounds = flags.rounds ?? 2;
  const warmupRounds = flags['warmup-rounds'] ?? 1;
  const threads = flags.threads ?? 1;
  const device = flags.device ?? 'cpu';
  const out = resolve(flags.out ?? join(ROOT, '.cache', 'bench-spec'));
  const log = (m: string) => process.stderr.write(`${m}\n`);

  // A models root of its own: the shipped pair, and a zero/keep growth of models/default to the
  // grown model's sizes (the same function as models/default, so every draft should be accepted).
  const models = join(out, 'models');
  mkdirSync(models, { recursive: true });
  for (const m of ['default', 'default-grown']) {
    mkdirSync(join(models, m), { recursive: true });
    for (const f of [CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE])
      copyFileSync(join(ROOT, 'models', m, f), join(models, m, f));
  }
  if (!existsSync(join(models, 'default-zero', CONFIG_FILE))) {
    const grown = readCheckpointMeta(join(models, 'default-grown')).model;
    log('growing models/default (zero keys, tau kept) → default-zero');
    await growDirectory(join(models, 'default'), join(models, 'default-zero'), {
      target: { qkv: grown.qkv.tokens, proj: grown.proj.tokens, ffn: grown.ffn.tokens },
      init: 'zero',
      tau: 'keep',
    });
  }

  const rows: Row[] = [];
  for (const [target, temps] of [
    ['default-zero', [0]],
    ['default-grown', [0, 0.8]],
  ] as const) {
    const start = (draft: string) =>
      startSoakServer({
        modelsRoot: models,
        model: target,
        cwd: out,
        adminToken: 'bench',
        maxSequences: 4,
        maxQueue: 16,
        device,
        threads,
        extraArgs: ['--draft-model', draft],
      });
    log(`${target}: starting a server with its parent as draft and two without`);
    const servers = {
      spec: await start('auto'),
      plain: await start('none'),
      control: await start('none'),
    };
    const { spec } = servers;
    const kinds = ['spec', 'plain', 'control'] as const;
    try {
      for (const s of Object.values(servers)) await s.warm();
      for (const temperature of temps) {
        for (let r = 0; r < warmupRounds; r++)
          for (const prompt of PROMPTS)
            for (const server of Object.values(servers))
              await complete(server.url, { prompt, max_tokens: maxTokens, temperature, ignore_eos: true });
        const m0 = await spec.metrics();
        const time = { spec: 0, plain: 0, control: 0 };
        const toks = { spec: 0, plain: 0, control: 0 };
        let same = 0;
        let n = 0;
        for (let r = 0; r < rounds; r++) {
          for (const [i, prompt] of PROMPTS.entries()) {
            const body = { prompt, max_tokens: maxTokens, temperature, ignore_eos: true };
            // Rotate which server goes first, so drift in the machine's load hits all three.
            const order = kinds.map((_, j) => kinds[(r + i + j) % kinds.length]!);
            const got: Partial<Record<(typeof kinds)[number], Timed>> = {};
            for (const which of order) {
              got[which] = await complete(servers[which].url, body);
              time[which] += got[which].ms;
              toks[which] += got[which].tokens;
            }
            if (got.spec!.text === got.plain!.text) same++;
            n++;
          }
        }
        const m1 = await spec.metrics();
        const delta = (k: string) => (m1.get(k) ?? 0) - (m0.get(k) ?? 0);
        const drafted = delta('tokenformer_spec_draft_tokens_total');
        const accepted = delta('tokenformer_spec_accepted_tokens_total');
        const withDraft = (1000 * toks.spec) / time.spec;
        const without = (1000 * toks.plain) / time.plain;
        const control = (1000 * toks.control) / time.control;
        const row: Row = {
          target,
          draft: 'default',
          temperature,
          requests: n,
          tokens_per_s_with_draft: withDraft,
          tokens_per_s_without: without,
          speedup: withDraft / without,
          control_ratio: control / without,
          acceptance: drafted > 0 ? accepted / drafted : 0,
          drafted,
          accepted,
          identical_texts: temperature === 0 ? `${same}/${n}` : 'n/a (sampled)',
        };
        rows.push(row);
        log(
          `${target} T=${temperature}: ${withDraft.toFixed(1)} vs ${without.toFixed(1)} tokens/s ` +
            `(×${row.speedup.toFixed(2)}; two servers without: ×${row.control_ratio.toFixed(2)}), ` +
            `acceptance ${(100 * row.acceptance).toFixed(1)}% ` +
            `(${accepted}/${drafted}), identical texts ${row.identical_texts}`,
        );
      }
    } finally {
      for (const s of Object.values(servers)) await s.stop();
    }
  }
  const loadavg = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  const report = {
    conditions: {
      device,
      threads,
      max_tokens: maxTokens,
      rounds,
      warmup_rounds: warmupRounds,
      prompts: PROMPTS.length,
      batch: 1,
      loadavg,
    },
    rows,
  };
  writeJsonAtomic(join(out, 'report.json'), report);
  if (flags.json) console.log(JSON.stringify(report));
  else {
    console.log(
      '| target | draft | T | tokens/s with draft | without | speed-up | control | acceptance | identical greedy texts |',
    );
    console.log('|---|---|---|---|---|---|---|---|---|');
    for (const r of rows) {
      console.log(
        `| ${r.target} | ${r.draft} | ${r.temperature} | ${r.tokens_per_s_with_draft.toFixed(1)} | ` +
          `${r.tokens_per_s_without.toFixed(1)} | ×${r.speedup.toFixed(2)} | ×${r.control_ratio.toFixed(2)} | ` +
          `${(100 * r.acceptance).toFixed(1)}% | ` +
          `${r.identical_texts} |`,
      );
    }
    console.log(`(load average at the end: ${loadavg})`);
  }
});

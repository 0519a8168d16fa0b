import { evaluateServer } from '../src/train/server-eval.ts';
import { parseFlags, requireFlag, runMain } from '../src/util/cli.ts';
import { fail } from '../src/util/errors.ts';

const USAGE = `npm run eval -- --url URL --model NAME [--data PATH]… [--seq-len N] [--val-fraction X]
    [--windows-per-request N] [--concurrency N] [--json]   (API key: TOKENFORMER_API_KEY)`;

function number(flags: Record<string, unknown>, name: string, fallback: number, int: boolean): number {
  const raw = flags[name];
  if (raw === undefined) return fallback;
  const v = Number(raw);
  if (!Number.isFinite(v) || v <= 0 || (int && !Number.isInteger(v)))
    fail(
      'TF_ERR_BAD_ARGS',
      `--${name} must be a positive ${int ? 'integer' : 'number'}, got ${String(raw)}\nusage: ${USAGE}`,
    );
  return v;
}

runMain(async () => {
  const s = { type: 'string' } as const;
  const flags = parseFlags(USAGE, {
    url: s,
    model: s,
    data: { type: 'string', multiple: true },
    'seq-len': s,
    'val-fraction': s,
    'windows-per-request': s,
    concurrency: s,
    json: { type: 'boolean' },
  });
  if (flags.help) return void console.log(USAGE);
  const apiKey = process.env.TOKENFORMER_API_KEY;
  let shown = -1;
  const r = await evaluateServer({
    url: requireFlag(USAGE, flags, 'url'),
    model: requireFlag(USAGE, flags, 'model'),
    data: flags.data ?? [],
    // The shipped models were trained on 128-token windows; the trainer's default validation split.
    seqLen: number(flags, 'seq-len', 128, true),
    valFraction: number(flags, 'val-fraction', 0.05, false),
    windowsPerRequest: number(flags, 'windows-per-request', 8, true),
    concurrency: number(flags, 'concurrency', 2, true),
    ...(apiKey ? { apiKey } : {}),
    onProgress: (done, total) => {
      const pct = Math.floor((100 * done) / total);
      if (pct !== shown && process.stderr.isTTY) process.stderr.write(`\reval: ${done}/${total} windows`);
      shown = pct;
    },
  });
  if (process.stderr.isTTY) process.stderr.write('\n');
  if (flags.json) console.log(JSON.stringify(r));
  else
    console.log(
      `${r.model}: perplexity ${r.perplexity.toFixed(4)} (loss ${r.loss.toFixed(6)}) over ${r.windows} windows of ${r.seq_len} tokens (${r.tokens} tokens)`,
    );
});

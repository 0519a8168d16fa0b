import { evaluateServer } from '../src/train/server-eval.ts';
import { type FlagSpec, helpText, parseCommandLine, requireFlag, runMain } from '../src/util/cli.ts';

const USAGE = `npm run eval -- --url URL --model NAME [--data PATH]… [--encoding utf8|latin1] [--seq-len N] [--val-fraction X]
    [--windows-per-request N] [--concurrency N] [--json]   (API key: TOKENFORMER_API_KEY)`;

const INTRO = `Perplexity of a running server's model over held-out text, scored through the
completions API (echo + logprobs). The API key, if the server wants one, is read from
TOKENFORMER_API_KEY.`;

const FLAGS = {
  url: { kind: 'string', arg: 'URL', help: 'base URL of the server (required)' },
  model: { kind: 'string', arg: 'NAME', help: 'model name to score (required)' },
  data: {
    kind: 'list',
    arg: 'PATH',
    help: 'text file(s) to score; repeatable',
    default: 'the bundled corpus',
  },
  encoding: {
    kind: 'string',
    choices: ['utf8', 'latin1'],
    help: 'how the text files are decoded (as for training)',
    default: 'utf8',
  },
  'seq-len': { kind: 'int', min: 1, help: 'tokens per scored window', default: '128' },
  'val-fraction': {
    kind: 'number',
    above: 0,
    help: 'held-out tail of the text that is scored',
    default: '0.05',
  },
  'windows-per-request': { kind: 'int', min: 1, help: 'windows sent in one request', default: '8' },
  concurrency: { kind: 'int', min: 1, help: 'requests in flight at once', default: '2' },
  json: { kind: 'boolean', help: 'print the result as one JSON line' },
} as const satisfies Record<string, FlagSpec>;

runMain(async () => {
  const flags = parseCommandLine(USAGE, FLAGS);
  if (flags.help) return void console.log(helpText(USAGE, INTRO, FLAGS));
  const apiKey = process.env.TOKENFORMER_API_KEY;
  let shown = -1;
  const r = await evaluateServer({
    url: requireFlag(USAGE, flags, 'url'),
    model: requireFlag(USAGE, flags, 'model'),
    data: flags.data ?? [],
    encoding: flags.encoding ?? 'utf8',
    // The shipped models were trained on 128-token windows; the trainer's default validation split.
    seqLen: flags['seq-len'] ?? 128,
    valFraction: flags['val-fraction'] ?? 0.05,
    windowsPerRequest: flags['windows-per-request'] ?? 8,
    concurrency: flags.concurrency ?? 2,
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

import { type GrowTarget, growDirectory, growSummary } from '../src/model/grow.ts';
import { parseFlags, progress, requireFlag, runMain } from '../src/util/cli.ts';
import { fail } from '../src/util/errors.ts';

const USAGE =
  'npm run grow -- --checkpoint DIR --out DIR [--qkv-tokens N] [--proj-tokens N] [--ffn-tokens N] ' +
  '[--init zero|random] [--tau keep|recompute] [--optimizer carry|reset] [--seed S]';

const HELP = `${USAGE}

Progressive scaling: appends key/value parameter tokens to every Pattention of a checkpoint and
writes the grown checkpoint to --out (the source is not changed). Old tokens keep their rows.

  --qkv-tokens N     new token count of the query/key/value Pattentions (omitted: unchanged)
  --proj-tokens N    new token count of the attention output Pattention (omitted: unchanged)
  --ffn-tokens N     new token count of the FFN Pattention (omitted: unchanged)
  --init zero        new keys are zero: with --tau keep the model computes exactly the same
                     function (default)
  --init random      new keys ~ N(0, 0.02²), as the official code
  --tau keep         every τ stays as it is (default)
  --tau recompute    τ = √n_new for each grown kind, as the official code
  --optimizer carry  Adam moments of old rows are copied, new rows start at zero (default;
                     a source without optimizer state gives a fresh start)
  --optimizer reset  no optimizer state: training from the grown checkpoint starts fresh
  --seed S           seed of the new rows' random draws (default 0)

New values are always random, N(0, (2/(L·√d))²) (official init), so gradients reach new keys.
Counts can only grow. Only token counts are growable: depth, width, heads and vocabulary stay
as they are (there are no flags for them), so the KV-cache shapes do not change.`;

/** A flag's positive integer, or undefined when the flag is absent. */
function count(flags: Record<string, unknown>, name: string): number | undefined {
  const v = flags[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || !/^\d+$/.test(v) || Number(v) <= 0 || !Number.isSafeInteger(Number(v))) {
    fail('TF_ERR_BAD_ARGS', `--${name} must be a positive integer, got ${JSON.stringify(v)}`);
  }
  return Number(v);
}

function oneOf<const T extends string>(name: string, v: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(v)) {
    fail('TF_ERR_BAD_ARGS', `--${name} must be ${allowed.join(' or ')}, got ${JSON.stringify(v)}`);
  }
  return v as T;
}

runMain(async () => {
  const flags = parseFlags(USAGE, {
    checkpoint: { type: 'string' },
    out: { type: 'string' },
    'qkv-tokens': { type: 'string' },
    'proj-tokens': { type: 'string' },
    'ffn-tokens': { type: 'string' },
    init: { type: 'string', default: 'zero' },
    tau: { type: 'string', default: 'keep' },
    optimizer: { type: 'string', default: 'carry' },
    seed: { type: 'string', default: '0' },
  });
  if (flags.help) return void console.log(HELP);
  const checkpoint = requireFlag(USAGE, flags, 'checkpoint');
  const out = requireFlag(USAGE, flags, 'out');
  const target: GrowTarget = {};
  for (const kind of ['qkv', 'proj', 'ffn'] as const) {
    const n = count(flags, `${kind}-tokens`);
    if (n !== undefined) target[kind] = n;
  }
  if (!/^-?\d+$/.test(flags.seed) || !Number.isSafeInteger(Number(flags.seed))) {
    fail('TF_ERR_BAD_ARGS', `--seed must be an integer, got ${JSON.stringify(flags.seed)}`);
  }
  const result = await growDirectory(checkpoint, out, {
    target,
    init: oneOf('init', flags.init, ['zero', 'random']),
    tau: oneOf('tau', flags.tau, ['keep', 'recompute']),
    optimizer: oneOf('optimizer', flags.optimizer, ['carry', 'reset']),
    seed: Number(flags.seed),
    onProgress: progress('grow'),
  });
  console.log(growSummary(out, result));
});

import { type GrowTarget, growDirectory, growSummary } from '../src/model/grow.ts';
import {
  type FlagSpec,
  helpText,
  parseCommandLine,
  progress,
  requireFlag,
  runMain,
} from '../src/util/cli.ts';

const USAGE =
  'npm run grow -- --checkpoint DIR --out DIR [--qkv-tokens N] [--proj-tokens N] [--ffn-tokens N] ' +
  '[--init zero|random] [--tau keep|recompute] [--optimizer carry|reset] [--seed S]';

const INTRO = `Progressive scaling: appends key/value parameter tokens to every Pattention of a checkpoint and
writes the grown checkpoint to --out (the source is not changed). Old tokens keep their rows.
New values are always random, N(0, (2/(L·√d))²) (official init), so gradients reach new keys.
Counts can only grow. Only token counts are growable: depth, width, heads and vocabulary stay
as they are (there are no flags for them), so the KV-cache shapes do not change.`;

const FLAGS = {
  checkpoint: { kind: 'string', arg: 'DIR', help: 'checkpoint to grow (required; not changed)' },
  out: { kind: 'string', arg: 'DIR', help: 'where the grown checkpoint is written (required)' },
  'qkv-tokens': {
    kind: 'int',
    min: 1,
    help: 'new token count of the query/key/value Pattentions',
    default: 'unchanged',
  },
  'proj-tokens': {
    kind: 'int',
    min: 1,
    help: 'new token count of the attention output Pattention',
    default: 'unchanged',
  },
  'ffn-tokens': { kind: 'int', min: 1, help: 'new token count of the FFN Pattention', default: 'unchanged' },
  init: {
    kind: 'string',
    choices: ['zero', 'random'],
    help: 'zero: new keys are zero, so with --tau keep the model computes exactly the same function; random: new keys ~ N(0, 0.02²), as the official code',
    default: 'zero',
  },
  tau: {
    kind: 'string',
    choices: ['keep', 'recompute'],
    help: 'keep: every τ stays as it is; recompute: τ = √n_new for each grown kind, as the official code',
    default: 'keep',
  },
  optimizer: {
    kind: 'string',
    choices: ['carry', 'reset'],
    help: 'carry: Adam moments of old rows are copied, new rows start at zero (a source without optimizer state gives a fresh start); reset: no optimizer state, training from the grown checkpoint starts fresh',
    default: 'carry',
  },
  seed: { kind: 'int', arg: 'S', help: "seed of the new rows' random draws", default: '0' },
} as const satisfies Record<string, FlagSpec>;

runMain(async () => {
  const flags = parseCommandLine(USAGE, FLAGS);
  if (flags.help) return void console.log(helpText(USAGE, INTRO, FLAGS));
  const checkpoint = requireFlag(USAGE, flags, 'checkpoint');
  const out = requireFlag(USAGE, flags, 'out');
  const target: GrowTarget = {};
  for (const kind of ['qkv', 'proj', 'ffn'] as const) {
    const n = flags[`${kind}-tokens`];
    if (n !== undefined) target[kind] = n;
  }
  const result = await growDirectory(checkpoint, out, {
    target,
    init: flags.init ?? 'zero',
    tau: flags.tau ?? 'keep',
    optimizer: flags.optimizer ?? 'carry',
    seed: flags.seed ?? 0,
    onProgress: progress('grow'),
  });
  console.log(growSummary(out, result));
});

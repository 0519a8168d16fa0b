import { importOfficial } from '../src/model/official/import.ts';
import { paramCount } from '../src/model/params.ts';
import {
  type FlagSpec,
  helpText,
  parseCommandLine,
  progress,
  requireFlag,
  runMain,
} from '../src/util/cli.ts';

const USAGE = 'npm run import -- --from DIR --out DIR';

const INTRO = `Converts an official TokenFormer release (Hugging Face layout: config.json + pytorch_model.bin,
plus tokenizer.json and tokenizer_config.json when present) into a checkpoint directory, one
tensor at a time.`;

const FLAGS = {
  from: { kind: 'string', arg: 'DIR', help: 'the official release (required; not changed)' },
  out: { kind: 'string', arg: 'DIR', help: 'where the checkpoint is written (required)' },
} as const satisfies Record<string, FlagSpec>;

runMain(async () => {
  const flags = parseCommandLine(USAGE, FLAGS);
  if (flags.help) return void console.log(helpText(USAGE, INTRO, FLAGS));
  const from = requireFlag(USAGE, flags, 'from');
  const out = requireFlag(USAGE, flags, 'out');
  const meta = await importOfficial(from, out, { onProgress: progress('import') });
  const m = meta.model;
  console.log(
    `imported ${from} → ${out}: ${m.num_layers} layers, hidden ${m.hidden_size}, ${m.num_heads} heads, ` +
      `tokens qkv/proj/ffn ${m.qkv.tokens}/${m.proj.tokens}/${m.ffn.tokens}, vocab ${m.vocab_size}, ` +
      `${(paramCount(m) / 1e6).toFixed(2)}M parameters${meta.tokenizer ? ', with tokenizer' : ''}`,
  );
});

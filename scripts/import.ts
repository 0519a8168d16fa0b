import { importOfficial } from '../src/model/official/import.ts';
import { paramCount } from '../src/model/params.ts';
import { parseFlags, progress, requireFlag, runMain } from '../src/util/cli.ts';

const USAGE = 'npm run import -- --from DIR --out DIR';

runMain(async () => {
  const flags = parseFlags(USAGE, { from: { type: 'string' }, out: { type: 'string' } });
  if (flags.help) return void console.log(USAGE);
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

import { Engine } from '../src/engine/engine.ts';
import { findModelDir, resolveExport } from '../src/engine/model-dir.ts';
import { validateSamplingParams } from '../src/engine/sampling/params.ts';
import { SERVE_DEFAULTS as D } from '../src/server/defaults.ts';
import {
  type FlagSpec,
  helpText,
  parseCommandLine,
  progress,
  requireFlag,
  runMain,
} from '../src/util/cli.ts';
import { fail } from '../src/util/errors.ts';

const USAGE =
  'npm run generate -- --model NAME|DIR --prompt TEXT [--max-tokens N] [--temperature X] [--top-p X] ' +
  '[--top-k N] [--seed N] [--device auto|cpu|cuda] [--models-dir DIR]';

const INTRO = `Generates text from the command line, without a server: the continuation of --prompt is written
to stdout as it is produced, a summary line to stderr. --model is a name under --models-dir, a
checkpoint (exported into .cache/exports/ on first use) or an export directory, as for serve.`;

const FLAGS = {
  model: { kind: 'string', arg: 'NAME|DIR', help: 'the model', default: 'default' },
  prompt: { kind: 'string', arg: 'TEXT', help: 'the text to continue' },
  'max-tokens': { kind: 'int', min: 1, help: 'tokens to generate at most', default: '64' },
  temperature: { kind: 'number', min: 0, help: 'sampling temperature; 0 is greedy', default: '0.8' },
  'top-p': { kind: 'number', min: 0, help: 'nucleus sampling mass', default: '0.95' },
  'top-k': { kind: 'int', min: 0, help: 'keep the k most likely tokens; 0 is off', default: '0' },
  seed: { kind: 'int', min: 0, help: 'makes sampling reproducible', default: 'random' },
  device: {
    kind: 'string',
    choices: ['auto', 'cpu', 'cuda'],
    help: 'where the model runs',
    default: D.device,
  },
  'models-dir': { kind: 'string', arg: 'DIR', help: 'where model names are looked up', default: D.modelsDir },
} as const satisfies Record<string, FlagSpec>;

runMain(async () => {
  const flags = parseCommandLine(USAGE, FLAGS);
  if (flags.help) return void console.log(helpText(USAGE, INTRO, FLAGS));
  const prompt = requireFlag(USAGE, flags, 'prompt');
  const params = validateSamplingParams({
    max_tokens: flags['max-tokens'] ?? 64,
    temperature: flags.temperature ?? 0.8,
    top_p: flags['top-p'] ?? 0.95,
    top_k: flags['top-k'] ?? 0,
    ...(flags.seed !== undefined ? { seed: flags.seed } : {}),
  });
  const log = progress('generate');
  const modelDir = findModelDir(flags.model ?? 'default', flags['models-dir'] ?? D.modelsDir);
  const { exportDir, verified } = await resolveExport(modelDir, '.cache', log);
  const engine = await Engine.start({
    exportDir,
    ...(verified ? { verified } : {}),
    device: flags.device ?? D.device,
    maxSequences: 1,
    maxQueue: 0,
    prefillChunk: D.prefillChunk,
  });
  try {
    const ids = engine.tokenizer.encode(prompt);
    if (ids.length === 0) fail('TF_ERR_BAD_ARGS', '--prompt encodes to no tokens; give some text');
    for await (const e of engine.generate(ids, params)) {
      if (e.type === 'delta') process.stdout.write(e.text);
      else {
        process.stdout.write('\n');
        log(
          `${e.promptTokens} prompt tokens, ${e.completionTokens} generated, finish reason ${e.finishReason}`,
        );
      }
    }
  } finally {
    await engine.close();
  }
});

import { cudaProblem } from '../src/runtime/cuda.ts';
import { trainInWorker } from '../src/train/launch.ts';
import { TRAIN_FLAGS, TRAIN_INTRO, TRAIN_USAGE, trainOptionsFromFlags } from '../src/train/options.ts';
import { progressRenderer } from '../src/train/progress.ts';
import { helpText, parseCommandLine, runMain, stopOnSignals } from '../src/util/cli.ts';
import { fail } from '../src/util/errors.ts';

runMain(async () => {
  const flags = parseCommandLine(TRAIN_USAGE, TRAIN_FLAGS);
  if (flags.help) return void console.log(helpText(TRAIN_USAGE, TRAIN_INTRO, TRAIN_FLAGS));
  const opts = trainOptionsFromFlags(flags);
  // Before the corpus is read or anything written: a missing CUDA piece is one line, at once.
  const cuda = opts.device === 'cuda' ? cudaProblem() : undefined;
  if (cuda) fail('TF_ERR_RUNTIME', `--device cuda: ${cuda}`);
  const stop = stopOnSignals('stopping at the next step boundary with a checkpoint');
  const outcome = await trainInWorker(opts, progressRenderer(process.stderr), { signal: stop.signal });
  if (outcome === 'stopped') process.exitCode = stop.exitCode() ?? 1;
});

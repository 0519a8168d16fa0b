import { trainInWorker } from '../src/train/launch.ts';
import { TRAIN_FLAGS, TRAIN_INTRO, TRAIN_USAGE, trainOptionsFromFlags } from '../src/train/options.ts';
import { progressRenderer } from '../src/train/progress.ts';
import { helpText, parseCommandLine, runMain, stopOnSignals } from '../src/util/cli.ts';

runMain(async () => {
  const flags = parseCommandLine(TRAIN_USAGE, TRAIN_FLAGS);
  if (flags.help) return void console.log(helpText(TRAIN_USAGE, TRAIN_INTRO, TRAIN_FLAGS));
  const opts = trainOptionsFromFlags(flags);
  const stop = stopOnSignals('stopping at the next step boundary with a checkpoint');
  const outcome = await trainInWorker(opts, progressRenderer(process.stderr), { signal: stop.signal });
  if (outcome === 'stopped') process.exitCode = stop.exitCode() ?? 1;
});

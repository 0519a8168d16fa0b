import { type ParseArgsConfig, parseArgs } from 'node:util';
import { fail, TokenFormerError } from './errors.ts';

/**
 * Shared plumbing of the command-line scripts: strict flag parsing with a usage line in every
 * error, and one top-level handler that prints user errors without a stack trace.
 */

type Options = NonNullable<ParseArgsConfig['options']>;

export function parseFlags<T extends Options>(usage: string, options: T, argv = process.argv.slice(2)) {
  try {
    return parseArgs({
      args: argv,
      options: { ...options, help: { type: 'boolean', short: 'h' } },
      strict: true,
    }).values;
  } catch (err) {
    fail('TF_ERR_BAD_ARGS', `${(err as Error).message}\nusage: ${usage}`);
  }
}

export function requireFlag(usage: string, values: Record<string, unknown>, name: string): string {
  const v = values[name];
  if (typeof v !== 'string' || v === '') fail('TF_ERR_BAD_ARGS', `--${name} is required\nusage: ${usage}`);
  return v;
}

/** Runs a script's main; user errors print `error: …` and exit 1 (2 for bad arguments). */
export function runMain(main: () => Promise<void>): void {
  main().catch((err: unknown) => {
    if (err instanceof TokenFormerError) {
      process.stderr.write(`error: ${err.message}\n`);
      process.exitCode = err.code === 'TF_ERR_BAD_ARGS' ? 2 : 1;
    } else {
      process.stderr.write(
        `unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
      );
      process.exitCode = 1;
    }
  });
}

/** Progress lines go to stderr with elapsed seconds, so stdout stays machine-readable. */
export function progress(tag: string): (message: string) => void {
  const start = Date.now();
  return (message) =>
    process.stderr.write(`[${tag} ${((Date.now() - start) / 1000).toFixed(1)}s] ${message}\n`);
}

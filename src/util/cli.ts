import { type ParseArgsConfig, parseArgs } from 'node:util';
import { fail, TokenFormerError } from './errors.ts';

/**
 * Shared plumbing of the command-line scripts: strict flag parsing with a usage line in every
 * error, and one top-level handler that prints user errors without a stack trace.
 */

type Options = NonNullable<ParseArgsConfig['options']>;

function parseFlags<T extends Options>(usage: string, options: T, argv = process.argv.slice(2)) {
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

/**
 * Turns the first SIGINT or SIGTERM into a request to stop gracefully (`signal` aborts) and a
 * second into an immediate exit. The exit status after a graceful stop is the shell's
 * convention for death by that signal: 130 (SIGINT), 143 (SIGTERM).
 */
export function stopOnSignals(message: string): { signal: AbortSignal; exitCode: () => number | undefined } {
  const ac = new AbortController();
  let received: { name: NodeJS.Signals; at: number } | undefined;
  const codes: Partial<Record<NodeJS.Signals, number>> = { SIGINT: 130, SIGTERM: 143 };
  const on = (name: NodeJS.Signals) => {
    if (!received) {
      received = { name, at: Date.now() };
      process.stderr.write(`\n${name}: ${message} (send it again to quit at once)\n`);
      ac.abort();
      return;
    }
    // Ctrl-C reaches npm, tsx and node at once and npm and tsx pass it on: one keypress can
    // arrive more than once within a moment, and must not count as the second request.
    if (Date.now() - received.at < 1000) return;
    process.exit(codes[name] ?? 1);
  };
  process.on('SIGINT', on).on('SIGTERM', on);
  return { signal: ac.signal, exitCode: () => (received ? codes[received.name] : undefined) };
}

/**
 * One command-line flag: how its text is parsed and checked, and what `--help` says about it.
 * Flags are declared once per command as a table of these (helpText renders it).
 */
export interface FlagSpec {
  /** `range`: two integers `MIN-MAX` with MIN ≤ MAX, e.g. 8-96. */
  kind: 'int' | 'number' | 'string' | 'boolean' | 'list' | 'range';
  /** Smallest value allowed (int, number; both ends of a range). */
  min?: number;
  /** Largest value allowed (int, number). */
  max?: number;
  /** A bound the value must exceed (number): `above: 0` is "positive". */
  above?: number;
  /** Values allowed (string). */
  choices?: readonly string[];
  /** The value's placeholder in the help: N, X, DIR, PATH… */
  arg?: string;
  /** What the flag does, one or two short sentences. */
  help: string;
  /** The default as the help shows it; computed defaults in words ("steps/10"). */
  default?: string;
  /** An environment variable read (and checked the same way) when the flag is absent; empty is unset. */
  env?: string;
}

type FlagValue<S extends FlagSpec> = S['kind'] extends 'int' | 'number'
  ? number
  : S['kind'] extends 'range'
    ? [number, number]
    : S['kind'] extends 'boolean'
      ? boolean
      : S['kind'] extends 'list'
        ? string[]
        : S extends { choices: readonly (infer C extends string)[] }
          ? C
          : string;

/** The flags given on the command line, parsed and checked; absent ones are undefined. */
export type FlagValues<T extends Record<string, FlagSpec>> = {
  -readonly [K in keyof T]?: FlagValue<T[K]>;
} & {
  help?: boolean;
};

function parseValue(label: string, spec: FlagSpec, raw: string): number | string | [number, number] {
  // One line: the flag and the value name the mistake; the usage line is for unknown flags.
  const bad = (what: string) =>
    fail('TF_ERR_BAD_ARGS', `${label} must be ${what}, got ${raw === '' ? '""' : raw}`);
  if (spec.kind === 'string') {
    const c = spec.choices;
    if (c && !c.includes(raw)) bad(c.length > 1 ? `${c.slice(0, -1).join(', ')} or ${c.at(-1)}` : c.join(''));
    return raw;
  }
  if (spec.kind === 'range') {
    const m = /^(\d+)-(\d+)$/.exec(raw);
    const lo = Number(m?.[1]);
    const hi = Number(m?.[2]);
    if (!m || lo < (spec.min ?? 0) || hi < lo) bad(`MIN-MAX with ${spec.min ?? 0} ≤ MIN ≤ MAX`);
    return [lo, hi];
  }
  const v = raw.trim() === '' ? Number.NaN : Number(raw);
  const bounds = [
    spec.min !== undefined ? `≥ ${spec.min}` : '',
    spec.above !== undefined ? `> ${spec.above}` : '',
    spec.max !== undefined ? `≤ ${spec.max}` : '',
  ].filter(Boolean);
  const within = bounds.length ? ` ${bounds.join(' and ')}` : '';
  const inRange =
    (spec.min === undefined || v >= spec.min) &&
    (spec.above === undefined || v > spec.above) &&
    (spec.max === undefined || v <= spec.max);
  if (spec.kind === 'int' && (!Number.isSafeInteger(v) || !inRange)) bad(`an integer${within}`);
  if (!Number.isFinite(v) || !inRange) bad(`a number${within}`);
  return v;
}

/**
 * Parses argv against a table of flags: unknown flags, missing values and values of the wrong
 * kind are argument errors (exit 2) naming the flag, with the usage line.
 */
export function parseCommandLine<T extends Record<string, FlagSpec>>(
  usage: string,
  specs: T,
  argv = process.argv.slice(2),
): FlagValues<T> {
  const options: Options = {};
  for (const [name, spec] of Object.entries(specs)) {
    options[name] =
      spec.kind === 'boolean' ? { type: 'boolean' } : { type: 'string', multiple: spec.kind === 'list' };
  }
  const raw = parseFlags(usage, options, argv) as Record<string, string | boolean | string[] | undefined>;
  const out: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(raw)) {
    const spec = specs[name];
    if (spec === undefined || typeof value !== 'string') out[name] = value;
    else out[name] = parseValue(`--${name}`, spec, value);
  }
  for (const [name, spec] of Object.entries(specs)) {
    const fromEnv = spec.env === undefined ? undefined : process.env[spec.env];
    if (out[name] !== undefined || !fromEnv || spec.kind === 'boolean' || spec.kind === 'list') continue;
    out[name] = parseValue(spec.env as string, spec, fromEnv);
  }
  return out as FlagValues<T>;
}

/** `--help`: the usage line, a paragraph, then every flag with its meaning and default. */
export function helpText(usage: string, intro: string, specs: Record<string, FlagSpec>): string {
  const rows = Object.entries(specs).map(([name, s]) => {
    const arg =
      s.kind === 'boolean'
        ? ''
        : ` ${s.arg ?? (s.choices ? s.choices.join('|') : s.kind === 'int' ? 'N' : s.kind === 'range' ? 'MIN-MAX' : 'X')}`;
    return [
      `--${name}${arg}`,
      `${s.help}${s.default !== undefined ? ` (default: ${s.default})` : ''}${s.env ? ` [env ${s.env}]` : ''}`,
    ] as const;
  });
  const width = Math.min(28, Math.max(...rows.map(([f]) => f.length)) + 2);
  // Descriptions wrap at 100 columns, continued under their first line.
  const wrap = (text: string): string => {
    const lines: string[] = [];
    let line = '';
    for (const word of text.split(' ')) {
      if (line && width + 2 + line.length + 1 + word.length > 100) {
        lines.push(line);
        line = word;
      } else line = line ? `${line} ${word}` : word;
    }
    lines.push(line);
    return lines.join(`\n  ${' '.repeat(width)}`);
  };
  const lines = rows
    .map(([f, h0]) => [f, wrap(h0)] as const)
    .map(([f, h]) =>
      f.length + 2 > width ? `  ${f}\n  ${' '.repeat(width)}${h}` : `  ${f.padEnd(width)}${h}`,
    );
  return `${usage}\n\n${intro}\n\n${lines.join('\n')}`;
}

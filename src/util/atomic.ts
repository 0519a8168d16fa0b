/**
 * Crash-safe file and directory replacement: output is built under a temporary sibling name,
 * flushed, then renamed into place, so a reader sees either the old content or the complete new
 * content, never a partial write.
 */
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fail } from './errors.ts';

/** Largest chunk handed to one write(2); Linux writes at most ~2 GiB per call. */
const MAX_IO_CHUNK = 1 << 30;

/**
 * When process `pid` started, in clock ticks since boot (/proc/PID/stat field 22); undefined
 * where there is no /proc or the process is gone.
 */
function startTicks(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which may itself hold spaces and parentheses.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/**
 * Who writes a temporary sibling: the pid, and where /proc has it the pid's start time, because
 * pids are reused (pid_max is often 32768, and threads draw from the same numbers) — a live
 * process with a dead writer's pid must not keep its leftovers forever.
 */
const STARTED = startTicks(process.pid);
const WRITER = STARTED === undefined ? `${process.pid}` : `${process.pid}s${STARTED}`;

function tempSuffix(kind: string): string {
  return `.${kind}-${WRITER}-${randomBytes(6).toString('hex')}`;
}

/** Writes all of `data` to `fd` at the current position, looping over short writes. */
export function writeAll(fd: number, data: ArrayBufferView): void {
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  let done = 0;
  while (done < bytes.byteLength) {
    const len = Math.min(bytes.byteLength - done, MAX_IO_CHUNK);
    done += writeSync(fd, bytes, done, len);
  }
}

/** fsyncs a directory so a rename inside it is durable; silently skipped where unsupported. */
function fsyncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    // Some platforms/filesystems (Windows, some network mounts) cannot open or fsync directories.
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * Atomically replaces `path` with `data`. The callback form receives an fd open for writing so a
 * caller can stream many chunks (use `writeAll`) without building the whole file in memory.
 */
export function writeFileAtomic(path: string, data: string | Uint8Array | ((fd: number) => void)): void {
  const tmp = `${path}${tempSuffix('tmp')}`;
  let fd: number | undefined;
  try {
    fd = openSync(tmp, 'wx');
    if (typeof data === 'function') data(fd);
    else writeAll(fd, typeof data === 'string' ? Buffer.from(data, 'utf8') : data);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, path);
  } catch (err) {
    if (fd !== undefined) {
      try {
        closeSync(fd);
      } catch {
        // already failing; the original error is what matters
      }
    }
    rmSync(tmp, { force: true });
    throw err;
  }
  fsyncDir(dirname(resolve(path)));
}

/** Atomically writes `value` as JSON with 2-space indentation and a trailing newline. */
export function writeJsonAtomic(path: string, value: unknown): void {
  const text = JSON.stringify(value, null, 2);
  if (text === undefined) throw new TypeError(`cannot write ${path}: value is not JSON-serialisable`);
  writeFileAtomic(path, `${text}\n`);
}

/**
 * Whether the writer `pid` (started at `start` ticks, when its name recorded it) still runs
 * (EPERM: a process of another user). A process with that pid but another start time is not it.
 */
function alive(pid: number, start: string | undefined): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  if (start === undefined) return true;
  const now = startTicks(pid);
  return now === undefined || now === start;
}

/**
 * Repairs what a replaceDirAtomic killed part-way (SIGKILL, power loss) left beside `finalDir`.
 * A directory cannot be renamed over a non-empty one, so the swap is two renames (old aside, new
 * in) and a crash between them leaves no `finalDir` at all — only `<final>.old-*` (the complete
 * previous content) and `<final>.tmp-*` (the complete new one). Recovery rolls back: the aside copy
 * is renamed back, so a reader finds exactly the last directory that was ever visible. Leftovers
 * of dead writers (a half-built `.tmp-*`, an `.old-*` whose successor is in place) are deleted.
 * Siblings of live processes are in use and left alone, so this is safe beside a running writer.
 */
export function recoverReplacedDir(finalDir: string): void {
  const target = resolve(finalDir);
  const parent = dirname(target);
  if (!existsSync(parent)) return;
  const prefix = `${basename(target)}.`;
  const stale = readdirSync(parent)
    .map((name) => {
      const m = /^(tmp|old)-(\d+)(?:s(\d+))?-[0-9a-f]{12}$/.exec(
        name.startsWith(prefix) ? name.slice(prefix.length) : '',
      );
      return m && !alive(Number(m[2]), m[3]) ? { path: join(parent, name), kind: m[1]! } : null;
    })
    .filter((e): e is { path: string; kind: string } => e !== null);
  if (!existsSync(target)) {
    const asides = stale.filter((e) => e.kind === 'old');
    // Normally one: the next replace recovers before it swaps. Of several, the newest was visible last.
    const newest = asides.sort((a, b) => statSync(b.path).mtimeMs - statSync(a.path).mtimeMs)[0];
    if (newest) {
      renameSync(newest.path, target);
      fsyncDir(parent);
    }
  }
  for (const e of stale) if (existsSync(e.path)) rmSync(e.path, { recursive: true, force: true });
}

/**
 * What marks a directory as a command's own output: a JSON file in it whose `format` field holds
 * `format` (a checkpoint's config.json, an export's manifest.json).
 */
export interface OutputMarker {
  /** What the output is called in messages, with its article: "a checkpoint", "an export directory". */
  what: string;
  file: string;
  format: string;
}

function hasMarker(dir: string, m: OutputMarker): boolean {
  try {
    const json = JSON.parse(readFileSync(join(dir, m.file), 'utf8')) as unknown;
    return typeof json === 'object' && json !== null && (json as { format?: unknown }).format === m.format;
  } catch {
    return false;
  }
}

/**
 * Refuses to replace `dir` unless it is missing, empty, or marked as one of `kinds`: an --out
 * that names a folder of the user's must never be deleted. Commands call it before any work so
 * the refusal comes first; replaceDirAtomic calls it again before it swaps.
 */
export function checkReplaceable(dir: string, kinds: readonly OutputMarker[]): void {
  const target = resolve(dir);
  recoverReplacedDir(target); // a swap killed between its renames left the real directory aside
  if (!existsSync(target)) return;
  if (!statSync(target).isDirectory()) {
    fail('TF_ERR_FOREIGN_OUTPUT', `${target} exists and is not a folder; refusing to replace it`);
  }
  if (readdirSync(target).length === 0 || kinds.some((k) => hasMarker(target, k))) return;
  const names = kinds.map((k) => `${k.what} (${k.file} with "format": "${k.format}")`).join(' or ');
  fail(
    'TF_ERR_FOREIGN_OUTPUT',
    `${target} is a non-empty folder that is not ${names}; refusing to replace it ` +
      '(choose another output folder, or empty this one)',
  );
}

/**
 * Builds a complete directory in a sibling temp dir, then swaps it in for `finalDir`, which must
 * be missing, empty or one of `replaces` (checkReplaceable). If `build`
 * fails, the temp dir is removed and any existing `finalDir` is left untouched. An existing
 * `finalDir` is renamed aside, the new one renamed in, and only then is the old one deleted; if the
 * rename-in fails the old directory is put back. A process killed between the two renames leaves
 * no `finalDir`: readers that must survive that (a training run's --resume) call
 * recoverReplacedDir first, and so does the next replace.
 */
export async function replaceDirAtomic(
  finalDir: string,
  replaces: readonly OutputMarker[],
  build: (tmpDir: string) => void | Promise<void>,
): Promise<void> {
  const target = resolve(finalDir);
  const parent = dirname(target);
  mkdirSync(parent, { recursive: true });
  checkReplaceable(target, replaces);
  const tmp = `${target}${tempSuffix('tmp')}`;
  mkdirSync(tmp);
  try {
    await build(tmp);
    checkReplaceable(target, replaces); // again: the build may have taken hours
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
  fsyncDir(tmp);

  let old: string | undefined;
  try {
    if (existsSync(target)) {
      old = `${target}${tempSuffix('old')}`;
      renameSync(target, old);
    }
    renameSync(tmp, target);
  } catch (err) {
    if (old !== undefined && !existsSync(target)) {
      try {
        renameSync(old, target);
        old = undefined;
      } catch {
        // leave the old copy at its aside name rather than lose it
      }
    }
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
  fsyncDir(parent);
  if (old !== undefined) rmSync(old, { recursive: true, force: true });
}

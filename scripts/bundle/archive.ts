import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { fail } from '../../src/util/errors.ts';

/**
 * Writes the staged folder as one archive a bare Linux host unpacks with `tar -xf`: gzip (Node's
 * zlib) or xz (the `xz` tool, multithreaded). Progress is reported as the share of the staged
 * bytes streamed through. The archive appears under its final name only when complete.
 */

export type ArchiveFormat = 'gz' | 'xz';

export async function writeArchive(opts: {
  stageParent: string;
  name: string;
  outDir: string;
  format: ArchiveFormat;
  stagedBytes: number;
  log: (m: string) => void;
}): Promise<string> {
  const file = join(opts.outDir, `${opts.name}.tar.${opts.format}`);
  const tmp = `${file}.${process.pid}.tmp`;
  const tar = spawn('tar', ['-cf', '-', '--owner=0', '--group=0', '-C', opts.stageParent, opts.name], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let tarErr = '';
  tar.stderr.on('data', (d: Buffer) => {
    tarErr += d.toString();
  });
  let seen = 0;
  let shown = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, done) {
      seen += chunk.length;
      const pct = Math.min(100, Math.floor((100 * seen) / Math.max(1, opts.stagedBytes)));
      if (pct >= shown + 10) {
        shown = pct - (pct % 10);
        opts.log(`compressing (${opts.format}): ${shown}% of ${(opts.stagedBytes / 2 ** 20).toFixed(0)} MiB`);
      }
      done(null, chunk);
    },
  });
  try {
    if (opts.format === 'gz') {
      await pipeline(tar.stdout, counter, createGzip({ level: 6 }), createWriteStream(tmp));
    } else {
      const xz = spawn('xz', ['-T0', '-6', '-c'], { stdio: ['pipe', 'pipe', 'inherit'] });
      const written = pipeline(xz.stdout, createWriteStream(tmp));
      await pipeline(tar.stdout, counter, xz.stdin);
      await written;
      const code = await new Promise<number | null>((r) =>
        xz.exitCode !== null ? r(xz.exitCode) : xz.once('exit', r),
      );
      if (code !== 0) fail('TF_ERR_RUNTIME', `xz exited with ${code}`);
    }
    const code = await new Promise<number | null>((r) =>
      tar.exitCode !== null ? r(tar.exitCode) : tar.once('exit', r),
    );
    if (code !== 0) fail('TF_ERR_RUNTIME', `tar exited with ${code}: ${tarErr.trim()}`);
    renameSync(tmp, file);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  return file;
}

function sha256(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/**
 * Cuts `archive` into numbered parts of `mib` MiB beside it and writes SHA256SUMS (every part
 * and the whole archive) and JOIN.sh (join, then check everything). The whole archive is removed:
 * the parts are what travels. Returns the join command.
 */
export function splitArchive(
  archive: string,
  mib: number,
  log: (m: string) => void,
): { parts: string[]; join: string } {
  const dir = join(archive, '..');
  const name = basename(archive);
  const whole = sha256(archive);
  const r = spawnSync('split', ['-b', `${mib}M`, '-d', '-a', '3', name, `${name}.part-`], {
    cwd: dir,
    encoding: 'utf8',
  });
  if (r.status !== 0) fail('TF_ERR_RUNTIME', `split failed: ${r.stderr.trim()}`);
  const parts = (spawnSync('sh', ['-c', `ls ${name}.part-*`], { cwd: dir, encoding: 'utf8' }).stdout ?? '')
    .split('\n')
    .filter(Boolean);
  const sums = parts.map((p) => `${sha256(join(dir, p))}  ${p}`);
  sums.push(`${whole}  ${name}`);
  writeFileSync(join(dir, 'SHA256SUMS'), `${sums.join('\n')}\n`);
  const joinCmd = `cat ${name}.part-* > ${name} && sha256sum -c SHA256SUMS`;
  writeFileSync(
    join(dir, 'JOIN.sh'),
    `#!/bin/sh\n# Joins the parts and checks every part and the whole archive.\nset -e\ncd "$(dirname "$0")"\n${joinCmd}\n`,
  );
  log(`${parts.length} parts of ≤ ${mib} MiB (${(statSync(archive).size / 2 ** 20).toFixed(1)} MiB in all)`);
  rmSync(archive);
  return { parts, join: joinCmd };
}

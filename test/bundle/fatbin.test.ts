import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import test from 'node:test';
import { parseArchs, trimFatbin } from '../../scripts/bundle/fatbin.ts';
import { verifiedFile } from '../../scripts/cuda/install.ts';
import { ortBinaryDir } from '../../src/runtime/cuda.ts';
import { tempDir } from '../helpers.ts';

/** A fatbin container: entries of [kind, sm, payload byte]. */
function fatbin(entries: [number, number, number][]): Buffer {
  const parts = entries.map(([kind, arch, fill]) => {
    const h = Buffer.alloc(64);
    h.writeUInt16LE(kind, 0);
    h.writeUInt32LE(64, 4);
    h.writeBigUInt64LE(100n, 8);
    h.writeUInt32LE(arch, 28);
    return Buffer.concat([h, Buffer.alloc(100, fill)]);
  });
  const body = Buffer.concat(parts);
  const head = Buffer.alloc(16);
  head.writeUInt32LE(0xba55ed50, 0);
  head.writeUInt16LE(1, 4);
  head.writeUInt16LE(16, 6);
  head.writeBigUInt64LE(BigInt(body.length), 8);
  return Buffer.concat([head, body]);
}

/** A minimal ELF64 whose only named section is .nv_fatbin holding `section`. */
function elf(section: Buffer): { file: Buffer; at: number } {
  const names = Buffer.from('\0.nv_fatbin\0.shstrtab\0');
  const at = 64;
  const strAt = at + section.length;
  const shoff = strAt + names.length;
  const sh = (name: number, offset: number, size: number) => {
    const b = Buffer.alloc(64);
    b.writeUInt32LE(name, 0);
    b.writeBigUInt64LE(BigInt(offset), 24);
    b.writeBigUInt64LE(BigInt(size), 32);
    return b;
  };
  const header = Buffer.alloc(64);
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]).copy(header);
  header.writeBigUInt64LE(BigInt(shoff), 0x28);
  header.writeUInt16LE(64, 0x3a);
  header.writeUInt16LE(3, 0x3c);
  header.writeUInt16LE(2, 0x3e);
  const file = Buffer.concat([
    header,
    section,
    names,
    sh(0, 0, 0),
    sh(1, at, section.length),
    sh(11, strAt, names.length),
  ]);
  return { file, at };
}

test('trimming zeroes other architectures’ ELF code only, in fatbins that hold a kept one', () => {
  const a = fatbin([
    [2, 80, 0x11],
    [2, 90, 0x22],
    [1, 80, 0x33], // PTX stays
  ]);
  const b = fatbin([[2, 75, 0x44]]); // no sm_90 here: left whole
  const { file, at } = elf(Buffer.concat([a, b]));
  const before = Buffer.from(file);
  const r = trimFatbin(file, [90]);
  assert.equal(file.length, before.length);
  assert.deepEqual(r.architectures, { sm_80: 100, sm_90: 100, sm_75: 100 });
  assert.equal(r.zeroedBytes, 100);
  assert.equal(r.fatbins, 2);
  assert.equal(r.fatbinsWithoutKept, 1);
  const payload = (fat: number, entry: number) => at + fat + 16 + entry * 164 + 64;
  assert.ok(
    file.subarray(payload(0, 0), payload(0, 0) + 100).every((x) => x === 0),
    'sm_80 zeroed',
  );
  assert.ok(
    file.subarray(payload(0, 1), payload(0, 1) + 100).every((x) => x === 0x22),
    'sm_90 kept',
  );
  assert.ok(
    file.subarray(payload(0, 2), payload(0, 2) + 100).every((x) => x === 0x33),
    'PTX kept',
  );
  // Outside the zeroed payload, every byte (headers included) is unchanged.
  let changed = 0;
  for (let i = 0; i < file.length; i++) if (file[i] !== before[i]) changed++;
  assert.equal(changed, 100);
  assert.deepEqual(parseArchs('sm_90,sm_120'), [90, 120]);
  assert.throws(() => parseArchs('hopper'), /--cuda-arch takes SM names/);
  assert.throws(() => trimFatbin(Buffer.alloc(128), [90]), /not a 64-bit little-endian ELF/);
});

test('on the real provider the TypeScript trim equals ../shared/gpu/trim-fatbin.py byte for byte', (t) => {
  const so = join(ortBinaryDir(), 'libonnxruntime_providers_cuda.so');
  const py = resolve(import.meta.dirname, '../../../shared/gpu/trim-fatbin.py');
  if (!verifiedFile(so, 'libonnxruntime_providers_cuda.so') || !existsSync(py)) {
    return t.skip('needs npm run setup:cuda and ../shared/gpu/trim-fatbin.py');
  }
  const out = join(tempDir(t), 'py.so');
  const r = spawnSync('python3', [py, so, out, '90'], { encoding: 'utf8' });
  if (r.status !== 0) return t.skip(`python3 could not run the reference: ${r.stderr}`);
  const elfBytes = readFileSync(so);
  const report = trimFatbin(elfBytes, [90]);
  t.diagnostic(
    `kept ${(report.keptBytes / 2 ** 20).toFixed(1)} MiB, zeroed ${(report.zeroedBytes / 2 ** 20).toFixed(1)} MiB`,
  );
  const hash = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  assert.equal(hash(elfBytes), hash(readFileSync(out)));
  assert.deepEqual(Object.keys(report.architectures).sort(), [
    'sm_120',
    'sm_75',
    'sm_80',
    'sm_86',
    'sm_89',
    'sm_90',
  ]);
});

import { fail } from '../../src/util/errors.ts';

/**
 * Trims a CUDA library to some GPU architectures without changing its layout: in the ELF's
 * `.nv_fatbin` section, the device-code (ELF) entries of other architectures are zeroed. Sizes,
 * offsets and every header stay as they are, so the library loads exactly as before on the kept
 * architectures, and the zeroed bytes compress to almost nothing. A fatbin without any kept
 * architecture is left whole (zeroing it would leave those kernels with no code at all).
 *
 * Fatbin container: magic 0xBA55ED50, u16 version (1), u16 header size (16), u64 payload size;
 * then entries: u16 kind (2 = ELF cubin, 1 = PTX), u16, u32 entry header size, u64 payload size,
 * …, u32 SM number at entry offset 28; the payload follows the entry header.
 */

const FATBIN_MAGIC = 0xba55ed50;
const KIND_ELF = 2;

export interface TrimReport {
  /** SM numbers of every ELF entry seen, with their bytes before trimming. */
  architectures: Record<string, number>;
  zeroedBytes: number;
  keptBytes: number;
  fatbins: number;
  /** Fatbins that hold none of the kept architectures (left whole). */
  fatbinsWithoutKept: number;
}

/** `sm_90` / `90` / `sm_90,sm_120` → [90] / [90, 120]. */
export function parseArchs(spec: string): number[] {
  const archs = spec.split(',').map((a) => a.trim().replace(/^sm_/, ''));
  if (!archs.length || archs.some((a) => !/^\d{2,3}$/.test(a))) {
    fail('TF_ERR_BAD_ARGS', `--cuda-arch takes SM names like sm_90 or sm_80,sm_90, got ${spec}`);
  }
  return archs.map(Number);
}

function fatbinSection(elf: Buffer): { start: number; end: number } {
  if (elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf[5] !== 1) {
    fail('TF_ERR_BAD_ARGS', 'not a 64-bit little-endian ELF file');
  }
  const shoff = Number(elf.readBigUInt64LE(0x28));
  const shentsize = elf.readUInt16LE(0x3a);
  const shnum = elf.readUInt16LE(0x3c);
  const shstrndx = elf.readUInt16LE(0x3e);
  const header = (i: number) => {
    const o = shoff + i * shentsize;
    return {
      name: elf.readUInt32LE(o),
      offset: Number(elf.readBigUInt64LE(o + 24)),
      size: Number(elf.readBigUInt64LE(o + 32)),
    };
  };
  const strtab = header(shstrndx).offset;
  for (let i = 0; i < shnum; i++) {
    const h = header(i);
    const nameEnd = elf.indexOf(0, strtab + h.name);
    if (elf.toString('latin1', strtab + h.name, nameEnd) === '.nv_fatbin') {
      return { start: h.offset, end: h.offset + h.size };
    }
  }
  return fail('TF_ERR_BAD_ARGS', 'the library has no .nv_fatbin section');
}

/** Zeroes, in place, the ELF entries of architectures not in `keep` (see the file comment). */
export function trimFatbin(elf: Buffer, keep: readonly number[]): TrimReport {
  const { start, end } = fatbinSection(elf);
  const magic = Buffer.alloc(4);
  magic.writeUInt32LE(FATBIN_MAGIC);
  const report: TrimReport = {
    architectures: {},
    zeroedBytes: 0,
    keptBytes: 0,
    fatbins: 0,
    fatbinsWithoutKept: 0,
  };
  let i = start;
  while (i < end) {
    const j = elf.indexOf(magic, i);
    if (j < 0 || j >= end) break;
    const version = elf.readUInt16LE(j + 4);
    const headerSize = elf.readUInt16LE(j + 6);
    const payload = Number(elf.readBigUInt64LE(j + 8));
    if (version !== 1 || headerSize !== 16) {
      fail(
        'TF_ERR_BAD_ARGS',
        `fatbin at 0x${j.toString(16)}: version ${version}, header ${headerSize} (expected 1, 16)`,
      );
    }
    const entries: { kind: number; arch: number; at: number; size: number }[] = [];
    const stop = j + headerSize + payload;
    let k = j + headerSize;
    while (k < stop) {
      const kind = elf.readUInt16LE(k);
      const entryHeader = elf.readUInt32LE(k + 4);
      const size = Number(elf.readBigUInt64LE(k + 8));
      entries.push({ kind, arch: elf.readUInt32LE(k + 28), at: k + entryHeader, size });
      k += entryHeader + size;
    }
    if (k !== stop) fail('TF_ERR_BAD_ARGS', `fatbin at 0x${j.toString(16)}: entries overrun its size`);
    report.fatbins++;
    for (const e of entries) {
      if (e.kind === KIND_ELF) {
        const name = `sm_${e.arch}`;
        report.architectures[name] = (report.architectures[name] ?? 0) + e.size;
      }
    }
    const hasKept = entries.some((e) => e.kind === KIND_ELF && keep.includes(e.arch));
    if (!hasKept) report.fatbinsWithoutKept++;
    for (const e of entries) {
      if (hasKept && e.kind === KIND_ELF && !keep.includes(e.arch)) {
        elf.fill(0, e.at, e.at + e.size);
        report.zeroedBytes += e.size;
      } else {
        report.keptBytes += e.size;
      }
    }
    i = stop;
  }
  return report;
}

/**
 * A minimal, read-only ZIP reader for `torch.save` archives.
 *
 * Real checkpoints reach several GB, so nothing here reads the whole file: the central directory
 * is located from the end of the file, and entry data is read on demand at byte offsets with
 * `fs.readSync`. ZIP64 (end-of-central-directory record + locator, zip64 extra fields) is
 * supported, as PyTorch always writes the ZIP64 records and real files exceed 4 GiB.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { crc32, inflateRawSync } from 'node:zlib';
import { fail } from '../util/errors.ts';

export interface ZipEntry {
  readonly name: string;
  /** 0 = stored, 8 = deflate; anything else is rejected when the entry is read. */
  readonly method: number;
  readonly compressedSize: number;
  readonly size: number;
  readonly crc32: number;
  readonly localHeaderOffset: number;
  /** General-purpose bit flags (bit 0 = encrypted). */
  readonly flags: number;
}

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;

const EOCD_SIZE = 22;
const ZIP64_LOCATOR_SIZE = 20;
const ZIP64_EOCD_MIN_SIZE = 56;
const CENTRAL_HEADER_SIZE = 46;
const LOCAL_HEADER_SIZE = 30;
const MAX_COMMENT = 0xffff;
/** fs.readSync reads at most INT32_MAX bytes per call; stay well below. */
const READ_CHUNK = 1 << 30;

const METHOD_NAMES: Readonly<Record<number, string>> = {
  1: 'shrink',
  6: 'implode',
  9: 'deflate64',
  12: 'bzip2',
  14: 'lzma',
  93: 'zstd',
  95: 'xz',
  98: 'ppmd',
  99: 'AES encryption',
};

function hex(n: number): string {
  return '0x' + n.toString(16).padStart(8, '0');
}

function u64(buf: Buffer, at: number, what: string, path: string): number {
  const v = buf.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
    fail('TF_ERR_BAD_ZIP', `${path}: ${what} ${v} is too large to be a valid zip offset/size`);
  }
  return Number(v);
}

export class ZipReader {
  readonly path: string;
  readonly fileSize: number;
  readonly entries: ReadonlyMap<string, ZipEntry>;
  private fd: number | undefined;
  private readonly dataOffsets = new Map<string, number>();

  private constructor(path: string, fd: number, fileSize: number, entries: Map<string, ZipEntry>) {
    this.path = path;
    this.fd = fd;
    this.fileSize = fileSize;
    this.entries = entries;
  }

  /** Opens `path` and reads its central directory. Throws TF_ERR_BAD_ZIP on malformed input. */
  static open(path: string): ZipReader {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (err) {
      fail('TF_ERR_NOT_FOUND', `${path}: cannot open zip archive: ${(err as Error).message}`, err);
    }
    try {
      const stat = fstatSync(fd);
      if (!stat.isFile()) fail('TF_ERR_BAD_ZIP', `${path}: not a zip archive (not a regular file)`);
      const fileSize = stat.size;
      const entries = readCentralDirectory(path, fd, fileSize);
      return new ZipReader(path, fd, fileSize, entries);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  /** The entry called `name`; throws TF_ERR_NOT_FOUND if the archive has none. */
  entry(name: string): ZipEntry {
    const e = this.entries.get(name);
    if (e === undefined) fail('TF_ERR_NOT_FOUND', `${this.path}: zip archive has no entry '${name}'`);
    return e;
  }

  /**
   * Absolute file offset where `entry`'s data begins, from its local file header (whose extra
   * field may differ from the central directory's; PyTorch pads it to align data to 64 bytes).
   * Also checks that the entry's data lies within the file.
   */
  dataOffset(entry: ZipEntry): number {
    const cached = this.dataOffsets.get(entry.name);
    if (cached !== undefined) return cached;
    const at = entry.localHeaderOffset;
    if (at + LOCAL_HEADER_SIZE > this.fileSize) {
      fail(
        'TF_ERR_BAD_ZIP',
        `${this.path}: zip archive is truncated: local header of entry '${entry.name}' at offset ${at} ` +
          `lies beyond the end of the file (${this.fileSize} bytes)`,
      );
    }
    const hdr = this.readAt(at, LOCAL_HEADER_SIZE);
    const sig = hdr.readUInt32LE(0);
    if (sig !== SIG_LOCAL) {
      fail(
        'TF_ERR_BAD_ZIP',
        `${this.path}: bad local file header signature ${hex(sig)} for entry '${entry.name}' at offset ${at} ` +
          `(expected ${hex(SIG_LOCAL)})`,
      );
    }
    const nameLen = hdr.readUInt16LE(26);
    const extraLen = hdr.readUInt16LE(28);
    const start = at + LOCAL_HEADER_SIZE + nameLen + extraLen;
    if (start + entry.compressedSize > this.fileSize) {
      fail(
        'TF_ERR_BAD_ZIP',
        `${this.path}: zip archive is truncated: data of entry '${entry.name}' (${entry.compressedSize} bytes ` +
          `at offset ${start}) extends beyond the end of the file (${this.fileSize} bytes)`,
      );
    }
    this.dataOffsets.set(entry.name, start);
    return start;
  }

  /** Reads and decompresses a whole entry, verifying its CRC-32. */
  read(name: string): Buffer {
    const entry = this.entry(name);
    this.checkReadable(entry);
    const start = this.dataOffset(entry);
    const raw = this.readAt(start, entry.compressedSize);
    let data: Buffer;
    if (entry.method === 0) {
      if (entry.compressedSize !== entry.size) {
        fail(
          'TF_ERR_BAD_ZIP',
          `${this.path}: stored entry '${name}' has compressed size ${entry.compressedSize} ` +
            `but uncompressed size ${entry.size}`,
        );
      }
      data = raw;
    } else {
      try {
        data = inflateRawSync(raw);
      } catch (err) {
        fail(
          'TF_ERR_BAD_ZIP',
          `${this.path}: cannot inflate entry '${name}': ${(err as Error).message}`,
          err,
        );
      }
      if (data.length !== entry.size) {
        fail(
          'TF_ERR_BAD_ZIP',
          `${this.path}: entry '${name}' inflated to ${data.length} bytes, expected ${entry.size}`,
        );
      }
    }
    const crc = crc32(data) >>> 0;
    if (crc !== entry.crc32) {
      fail(
        'TF_ERR_BAD_ZIP',
        `${this.path}: CRC-32 mismatch in entry '${name}': computed ${hex(crc)}, recorded ${hex(entry.crc32)}`,
      );
    }
    return data;
  }

  /**
   * Reads `length` bytes starting `start` bytes into a stored (uncompressed) entry, without CRC
   * verification. The returned buffer owns a fresh ArrayBuffer with byteOffset 0, so typed-array
   * views on it are aligned.
   */
  readRange(name: string, start: number, length: number): Buffer {
    const entry = this.entry(name);
    this.checkReadable(entry);
    if (entry.method !== 0) {
      fail(
        'TF_ERR_BAD_ZIP',
        `${this.path}: entry '${name}' is compressed (method ${entry.method}); ranged reads need a stored entry`,
      );
    }
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(length) || start < 0 || length < 0) {
      fail('TF_ERR_BAD_ZIP', `${this.path}: invalid byte range start=${start} length=${length} in '${name}'`);
    }
    if (start + length > entry.size) {
      fail(
        'TF_ERR_BAD_ZIP',
        `${this.path}: byte range [${start}, ${start + length}) is outside entry '${name}' (${entry.size} bytes)`,
      );
    }
    return this.readAt(this.dataOffset(entry) + start, length);
  }

  close(): void {
    if (this.fd !== undefined) {
      closeSync(this.fd);
      this.fd = undefined;
    }
  }

  private checkReadable(entry: ZipEntry): void {
    if ((entry.flags & 1) !== 0) {
      fail('TF_ERR_BAD_ZIP', `${this.path}: entry '${entry.name}' is encrypted, which is not supported`);
    }
    if (entry.method !== 0 && entry.method !== 8) {
      const label = METHOD_NAMES[entry.method];
      fail(
        'TF_ERR_BAD_ZIP',
        `${this.path}: entry '${entry.name}' uses unsupported compression method ${entry.method}` +
          (label ? ` (${label})` : '') +
          '; only stored (0) and deflate (8) are supported',
      );
    }
  }

  private readAt(position: number, length: number): Buffer {
    if (this.fd === undefined) fail('TF_ERR_BAD_ZIP', `${this.path}: zip archive is closed`);
    return readExactly(this.path, this.fd, position, length);
  }
}

function readExactly(path: string, fd: number, position: number, length: number): Buffer {
  const buf = Buffer.from(new ArrayBuffer(length));
  let done = 0;
  while (done < length) {
    const n = readSync(fd, buf, done, Math.min(READ_CHUNK, length - done), position + done);
    if (n === 0) {
      fail(
        'TF_ERR_BAD_ZIP',
        `${path}: zip archive is truncated: unexpected end of file at offset ${position + done} ` +
          `while reading ${length} bytes at offset ${position}`,
      );
    }
    done += n;
  }
  return buf;
}

interface DirectoryLocation {
  entryCount: number;
  cdSize: number;
  cdOffset: number;
  /** Offset of the first end-of-directory structure (zip64 record or classic EOCD). */
  end: number;
}

function findDirectory(path: string, fd: number, fileSize: number): DirectoryLocation {
  if (fileSize === 0) fail('TF_ERR_BAD_ZIP', `${path}: not a zip archive (the file is empty)`);
  const tailLen = Math.min(fileSize, EOCD_SIZE + MAX_COMMENT);
  const tailStart = fileSize - tailLen;
  const tail = readExactly(path, fd, tailStart, tailLen);
  let eocd = -1;
  for (let i = tailLen - EOCD_SIZE; i >= 0; i--) {
    if (tail.readUInt32LE(i) === SIG_EOCD && i + EOCD_SIZE + tail.readUInt16LE(i + 20) === tailLen) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) {
    const head = readExactly(path, fd, 0, Math.min(4, fileSize));
    if (head.length === 4 && head.readUInt32LE(0) === SIG_LOCAL) {
      fail(
        'TF_ERR_BAD_ZIP',
        `${path}: zip archive is truncated or incomplete: it starts with a zip local file header but has ` +
          `no end-of-central-directory record (file is ${fileSize} bytes)`,
      );
    }
    fail('TF_ERR_BAD_ZIP', `${path}: not a zip archive (no end-of-central-directory record found)`);
  }
  const eocdPos = tailStart + eocd;
  const disk = tail.readUInt16LE(eocd + 4);
  const cdDisk = tail.readUInt16LE(eocd + 6);
  let loc: DirectoryLocation = {
    entryCount: tail.readUInt16LE(eocd + 10),
    cdSize: tail.readUInt32LE(eocd + 12),
    cdOffset: tail.readUInt32LE(eocd + 16),
    end: eocdPos,
  };
  const diskEntries = tail.readUInt16LE(eocd + 8);

  // ZIP64 locator immediately precedes the EOCD record.
  let zip64 = false;
  if (eocdPos >= ZIP64_LOCATOR_SIZE) {
    const locator = readExactly(path, fd, eocdPos - ZIP64_LOCATOR_SIZE, ZIP64_LOCATOR_SIZE);
    if (locator.readUInt32LE(0) === SIG_ZIP64_LOCATOR) {
      zip64 = true;
      const recordAt = u64(locator, 8, 'zip64 end-of-central-directory offset', path);
      const totalDisks = locator.readUInt32LE(16);
      if (totalDisks > 1) fail('TF_ERR_BAD_ZIP', `${path}: multi-disk zip archives are not supported`);
      if (recordAt + ZIP64_EOCD_MIN_SIZE > eocdPos - ZIP64_LOCATOR_SIZE) {
        fail(
          'TF_ERR_BAD_ZIP',
          `${path}: zip64 end-of-central-directory record offset ${recordAt} is invalid ` +
            `(locator at offset ${eocdPos - ZIP64_LOCATOR_SIZE})`,
        );
      }
      const rec = readExactly(path, fd, recordAt, ZIP64_EOCD_MIN_SIZE);
      const sig = rec.readUInt32LE(0);
      if (sig !== SIG_ZIP64_EOCD) {
        fail(
          'TF_ERR_BAD_ZIP',
          `${path}: bad zip64 end-of-central-directory signature ${hex(sig)} at offset ${recordAt} ` +
            `(expected ${hex(SIG_ZIP64_EOCD)})`,
        );
      }
      if (rec.readUInt32LE(16) !== 0 || rec.readUInt32LE(20) !== 0) {
        fail('TF_ERR_BAD_ZIP', `${path}: multi-disk zip archives are not supported`);
      }
      loc = {
        entryCount: u64(rec, 32, 'zip64 entry count', path),
        cdSize: u64(rec, 40, 'zip64 central directory size', path),
        cdOffset: u64(rec, 48, 'zip64 central directory offset', path),
        end: recordAt,
      };
      if (u64(rec, 24, 'zip64 entries on disk', path) !== loc.entryCount) {
        fail('TF_ERR_BAD_ZIP', `${path}: multi-disk zip archives are not supported`);
      }
    }
  }
  if (!zip64 && (disk !== 0 || cdDisk !== 0 || diskEntries !== loc.entryCount)) {
    fail('TF_ERR_BAD_ZIP', `${path}: multi-disk zip archives are not supported`);
  }
  if (loc.cdOffset + loc.cdSize > loc.end) {
    fail(
      'TF_ERR_BAD_ZIP',
      `${path}: zip archive is truncated or corrupt: central directory (${loc.cdSize} bytes at offset ` +
        `${loc.cdOffset}) extends beyond ${loc.end === eocdPos ? 'the end-of-central-directory record' : 'the zip64 end-of-central-directory record'} at offset ${loc.end} (file is ${fileSize} bytes)`,
    );
  }
  return loc;
}

function readCentralDirectory(path: string, fd: number, fileSize: number): Map<string, ZipEntry> {
  const loc = findDirectory(path, fd, fileSize);
  const cd = readExactly(path, fd, loc.cdOffset, loc.cdSize);
  const entries = new Map<string, ZipEntry>();
  let p = 0;
  for (let i = 0; i < loc.entryCount; i++) {
    const at = loc.cdOffset + p;
    if (p + CENTRAL_HEADER_SIZE > cd.length) {
      fail(
        'TF_ERR_BAD_ZIP',
        `${path}: central directory ends after ${i} of ${loc.entryCount} entries (${loc.cdSize} bytes at offset ${loc.cdOffset})`,
      );
    }
    const sig = cd.readUInt32LE(p);
    if (sig !== SIG_CENTRAL) {
      fail(
        'TF_ERR_BAD_ZIP',
        `${path}: bad central directory header signature ${hex(sig)} at offset ${at} (entry ${i}, expected ${hex(SIG_CENTRAL)})`,
      );
    }
    const flags = cd.readUInt16LE(p + 8);
    const method = cd.readUInt16LE(p + 10);
    const crc = cd.readUInt32LE(p + 16);
    let compressedSize = cd.readUInt32LE(p + 20);
    let size = cd.readUInt32LE(p + 24);
    const nameLen = cd.readUInt16LE(p + 28);
    const extraLen = cd.readUInt16LE(p + 30);
    const commentLen = cd.readUInt16LE(p + 32);
    let diskStart = cd.readUInt16LE(p + 34);
    let localHeaderOffset = cd.readUInt32LE(p + 42);
    const recordLen = CENTRAL_HEADER_SIZE + nameLen + extraLen + commentLen;
    if (p + recordLen > cd.length) {
      fail('TF_ERR_BAD_ZIP', `${path}: central directory entry ${i} at offset ${at} overruns the directory`);
    }
    const nameBytes = cd.subarray(p + CENTRAL_HEADER_SIZE, p + CENTRAL_HEADER_SIZE + nameLen);
    const name = nameBytes.toString((flags & 0x800) !== 0 ? 'utf8' : 'latin1');
    const extra = cd.subarray(
      p + CENTRAL_HEADER_SIZE + nameLen,
      p + CENTRAL_HEADER_SIZE + nameLen + extraLen,
    );

    // ZIP64 extended information: only the fields saturated in the fixed header are present, in order.
    let q = 0;
    while (q + 4 <= extra.length) {
      const id = extra.readUInt16LE(q);
      const len = extra.readUInt16LE(q + 2);
      if (q + 4 + len > extra.length) {
        fail('TF_ERR_BAD_ZIP', `${path}: malformed extra field in central directory entry '${name}'`);
      }
      if (id === 0x0001) {
        let r = q + 4;
        const end = q + 4 + len;
        const take = (what: string): number => {
          if (r + 8 > end) {
            fail('TF_ERR_BAD_ZIP', `${path}: zip64 extra field of entry '${name}' is missing the ${what}`);
          }
          const v = u64(extra, r, `zip64 ${what} of entry '${name}'`, path);
          r += 8;
          return v;
        };
        if (size === 0xffffffff) size = take('uncompressed size');
        if (compressedSize === 0xffffffff) compressedSize = take('compressed size');
        if (localHeaderOffset === 0xffffffff) localHeaderOffset = take('local header offset');
        if (diskStart === 0xffff) {
          if (r + 4 > end) {
            fail(
              'TF_ERR_BAD_ZIP',
              `${path}: zip64 extra field of entry '${name}' is missing the disk number`,
            );
          }
          diskStart = extra.readUInt32LE(r);
        }
      }
      q += 4 + len;
    }
    if (size === 0xffffffff || compressedSize === 0xffffffff || localHeaderOffset === 0xffffffff) {
      fail(
        'TF_ERR_BAD_ZIP',
        `${path}: entry '${name}' has saturated 32-bit sizes/offset but no zip64 extra field`,
      );
    }
    if (diskStart !== 0) fail('TF_ERR_BAD_ZIP', `${path}: multi-disk zip archives are not supported`);
    if (localHeaderOffset + LOCAL_HEADER_SIZE > loc.cdOffset) {
      fail(
        'TF_ERR_BAD_ZIP',
        `${path}: corrupt zip archive: entry '${name}' has its local header at offset ${localHeaderOffset}, ` +
          `which is not before the central directory (offset ${loc.cdOffset})`,
      );
    }
    if (entries.has(name)) fail('TF_ERR_BAD_ZIP', `${path}: duplicate zip entry '${name}'`);
    entries.set(name, { name, method, compressedSize, size, crc32: crc, localHeaderOffset, flags });
    p += recordLen;
  }
  return entries;
}

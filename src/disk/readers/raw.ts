/**
 * raw — the guest bytes are the file bytes. Also the reader for a fixed VHD, whose data is raw
 * bytes followed by a footer (`openRawWindow`).
 *
 * Node has no SEEK_DATA/SEEK_HOLE, so the allocation map comes from zero detection: the file is
 * read in SCAN_BYTES pieces and each HOLE_GRANULE that is all zeros is reported as a `hole`. A
 * writer skipping those keeps a sparse copy sparse, and an all-zero block of a dense file becomes
 * a hole too (what `qemu-img convert` does by default with its zero detection). The comparison
 * against zeros is Buffer.compare (memcmp), which scans at memory speed; a chunk that is all zeros
 * costs one compare. The scan keeps one read in flight ahead, and keeps its last few chunks so a
 * writer reading a data extent just scanned copies it from memory instead of reading it twice.
 * The cost that remains is reading every hole: about 1–2 GB/s here, where qemu skips holes with
 * SEEK_DATA.
 */
import type { DiskFormat, DiskReader, Extent, ExtentKind } from '../disk.js';
import { checkGuestRange } from '../block-map-reader.js';
import type { DiskFile } from '../disk-file.js';

/** Granularity of hole detection. */
export const HOLE_GRANULE = 64 * 1024;
/** Bytes read per step while scanning for holes. */
const SCAN_BYTES = 4 * 1024 * 1024;
const ZEROS = new Uint8Array(SCAN_BYTES);
/** scanned chunks kept for the reads that follow the scan (bounded: SCAN_KEEP × SCAN_BYTES) */
const SCAN_KEEP = 4;
/**
 * Extents are cut at about this length: a writer learns of a long hole only when its extent ends,
 * so an unbounded hole would stall progress reports and abort checks for the whole scan of it.
 */
const MAX_EXTENT_BYTES = 256 * 1024 * 1024;

/** True when `buf[at, at + length)` reads zeros; bytes past the end of `buf` are zeros. */
function isZeroRange(buf: Uint8Array, at: number, length: number): boolean {
  const to = Math.min(buf.length, at + length);
  if (to <= at) return true;
  return Buffer.compare(buf.subarray(at, to), ZEROS.subarray(0, to - at)) === 0;
}

export function openRaw(file: DiskFile): DiskReader {
  return openRawWindow(file, 'raw', 0, file.size);
}

/** Guest bytes [0, virtualSize) are file bytes [dataOffset, dataOffset + virtualSize). */
export function openRawWindow(file: DiskFile, format: DiskFormat, dataOffset: number, virtualSize: number): DiskReader {
  return new RawReader(file, format, dataOffset, virtualSize);
}

class RawReader implements DiskReader {
  readonly clusterSize = HOLE_GRANULE;
  /** the last scanned chunks, newest last (see `fromScan`) */
  private readonly recent: { pos: number; length: number; bytes: Uint8Array }[] = [];
  constructor(
    private readonly file: DiskFile,
    readonly format: DiskFormat,
    private readonly dataOffset: number,
    readonly virtualSize: number,
  ) {}

  async read(offset: number, length: number): Promise<Uint8Array> {
    checkGuestRange(this, offset, length);
    const scanned = this.fromScan(offset, length);
    if (scanned) return scanned;
    const at = this.dataOffset + offset;
    const stored = at < this.file.size && length > 0 ? await this.file.read(at, Math.min(length, this.file.size - at)) : new Uint8Array(0);
    if (stored.length === length) return stored; // the file source's fresh buffer: no second copy
    const out = new Uint8Array(length);
    out.set(stored, 0);
    return out;
  }

  /**
   * A writer reads a data extent right after `extents` scanned it: the last SCAN_KEEP scanned
   * chunks are kept, so those bytes are copied from memory rather than read from the file twice.
   */
  private fromScan(offset: number, length: number): Uint8Array | undefined {
    if (this.recent.length === 0) return undefined;
    // a read may straddle neighbouring scanned chunks; all of it must be held, or none is used
    for (let pos = offset; pos < offset + length; ) {
      const c = this.recent.find((r) => pos >= r.pos && pos < r.pos + r.length);
      if (!c) return undefined;
      pos = c.pos + c.length;
    }
    const out = new Uint8Array(length);
    for (let pos = offset; pos < offset + length; ) {
      const c = this.recent.find((r) => pos >= r.pos && pos < r.pos + r.length)!;
      const from = pos - c.pos;
      const n = Math.min(c.length - from, offset + length - pos);
      if (from < c.bytes.length) out.set(c.bytes.subarray(from, Math.min(c.bytes.length, from + n)), pos - offset);
      pos += n;
    }
    return out;
  }

  private remember(pos: number, length: number, bytes: Uint8Array): void {
    this.recent.push({ pos, length, bytes });
    if (this.recent.length > SCAN_KEEP) this.recent.shift();
  }

  async *extents(offset = 0, length = this.virtualSize - offset): AsyncIterable<Extent> {
    checkGuestRange(this, offset, length, Number.MAX_SAFE_INTEGER);
    const end = offset + length;
    let cur: { offset: number; length: number; kind: ExtentKind } | undefined;
    // One scan read stays in flight ahead of the one being checked, so the disk (or the page
    // cache) and the zero check overlap.
    const scan = (pos: number): Promise<Uint8Array> => {
      const p = this.scanRead(pos, Math.min(SCAN_BYTES, end - pos));
      p.catch(() => undefined); // surfaces when awaited; never unhandled if the caller stops early
      return p;
    };
    let ahead = offset < end ? scan(offset) : undefined;
    for (let pos = offset; pos < end; ) {
      const n = Math.min(SCAN_BYTES, end - pos);
      const buf = await ahead!;
      ahead = pos + n < end ? scan(pos + n) : undefined;
      this.remember(pos, n, buf);
      // a whole hole chunk (the common case of a sparse disk) costs one memcmp
      const allZero = isZeroRange(buf, 0, n);
      for (let i = 0; i < n; ) {
        // granules are aligned to the disk, not to the asked range
        const g = allZero ? n - i : Math.min(HOLE_GRANULE - ((pos + i) % HOLE_GRANULE), n - i);
        const kind: ExtentKind = allZero || isZeroRange(buf, i, g) ? 'hole' : 'data';
        if (cur && cur.kind === kind && cur.length < MAX_EXTENT_BYTES) cur.length += g;
        else {
          if (cur) yield cur;
          cur = { offset: pos + i, length: g, kind };
        }
        i += g;
      }
      pos += n;
    }
    if (cur) yield cur;
  }

  /** Guest bytes [pos, pos + n) as stored; shorter when the file ends first (the rest reads zeros). */
  private async scanRead(pos: number, n: number): Promise<Uint8Array> {
    const at = this.dataOffset + pos;
    if (at >= this.file.size) return new Uint8Array(0);
    return this.file.read(at, Math.min(n, this.file.size - at));
  }

  async close(): Promise<void> {
    await this.file.close?.();
  }
}

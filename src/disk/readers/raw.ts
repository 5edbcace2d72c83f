/**
 * raw — the guest bytes are the file bytes. Also the reader for a fixed VHD, whose data is raw
 * bytes followed by a footer (`openRawWindow`).
 *
 * The allocation map: the filesystem's holes (SEEK_DATA/SEEK_HOLE through the optional native
 * addon, src/io/seek-data.ts) are never read; the data regions are read in SCAN_BYTES pieces and
 * each HOLE_GRANULE that is all zeros is reported as a `hole` too (stored zeros, or every hole
 * when the addon or the filesystem cannot tell). A
 * writer skipping those keeps a sparse copy sparse, and an all-zero block of a dense file becomes
 * a hole too (what `qemu-img convert` does by default with its zero detection). The comparison
 * against zeros is Buffer.compare (memcmp), which scans at memory speed; a chunk that is all zeros
 * costs one compare. The scan keeps one read in flight ahead, and keeps its last few chunks so a
 * writer reading a data extent just scanned copies it from memory instead of reading it twice.
 * Without SEEK_DATA the cost that remains is reading every hole: about 1–2 GB/s here.
 */
import type { DiskFormat, DiskReader, Extent, ExtentKind, StoredLayout, StoredRun } from '../disk.js';
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
/** scan reads in flight ahead of the chunk being checked */
const SCAN_AHEAD = 3;
/** SEEK_DATA is asked about this much of the file at a time (bounds the region list) */
const REGION_WINDOW = 1024 * 1024 * 1024;

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
  /**
   * Scan buffers whose chunk was all zeros: nobody holds a view of them (hole bytes are never
   * handed out), so the next scan reads into them instead of allocating — on a sparse disk most
   * chunks are holes, and 4 MiB allocations per chunk kept the garbage collector busy.
   */
  private readonly spare: Uint8Array[] = [];
  readonly stored?: StoredLayout;
  constructor(
    private readonly file: DiskFile,
    readonly format: DiskFormat,
    private readonly dataOffset: number,
    readonly virtualSize: number,
  ) {
    const fd = file.fd;
    // the guest bytes are the file's: a run may be widened over a hole (which reads zeros) to any alignment
    if (fd !== undefined) this.stored = { fd, alignsTo: () => true, runs: (offset, length, align) => this.storedRuns(offset, length, align) };
  }

  /**
   * The `stored` layout's runs: the filesystem's data regions (SEEK_DATA) widened to `align` are
   * stored, the rest (holes, and everything past the end of the file) reads zeros; where the
   * filesystem cannot tell, every byte of the file is stored. No byte is read: deciding which
   * stored bytes are zeros is the copier's (`src/io/copy-range.ts` scans them).
   */
  private async *storedRuns(offset = 0, length = this.virtualSize - offset, align = 1): AsyncIterable<StoredRun> {
    checkGuestRange(this, offset, length, Number.MAX_SAFE_INTEGER);
    const end = offset + length;
    let at = offset;
    for (const [a, b] of this.fileRegions(offset, end)) {
      // widened to `align`, a region may overlap the previous one's widening: it starts at `at`
      const from = Math.max(at, Math.floor(a / align) * align);
      const to = Math.min(end, Math.ceil(b / align) * align);
      if (to <= from) continue;
      if (from > at) yield { offset: at, length: from - at, kind: 'zero' };
      yield { offset: from, length: to - from, kind: 'stored', fileOffset: this.dataOffset + from };
      at = to;
    }
    if (at < end) yield { offset: at, length: end - at, kind: 'zero' };
  }

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
    for (let pos = offset; pos < offset + length;) {
      const c = this.recent.find((r) => pos >= r.pos && pos < r.pos + r.length);
      if (!c) return undefined;
      pos = c.pos + c.length;
    }
    // within one scanned chunk (data extents never cross a chunk): a view, no copy. Nobody
    // writes into these buffers: each scan reads into a fresh one.
    const first = this.recent.find((r) => offset >= r.pos && offset + length <= r.pos + r.length);
    if (first && offset - first.pos + length <= first.bytes.length) return first.bytes.subarray(offset - first.pos, offset - first.pos + length);
    const out = new Uint8Array(length);
    for (let pos = offset; pos < offset + length;) {
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
    /** adds [at, at + g) of `kind`; yields the previous extent when this one cannot extend it */
    const add = (at: number, g: number, kind: ExtentKind, chunkStart: number): Extent | undefined => {
      // data extents end at chunk boundaries, so a writer's read of one is a view of a chunk
      // still held in `recent`; holes merge across chunks (up to MAX_EXTENT_BYTES)
      const sameChunk = kind === 'hole' || (cur !== undefined && cur.offset >= chunkStart);
      if (cur && cur.kind === kind && sameChunk && cur.offset + cur.length === at && cur.length < MAX_EXTENT_BYTES) {
        cur.length += g;
        return undefined;
      }
      const done = cur;
      cur = { offset: at, length: g, kind };
      return done;
    };
    // The chunks to read: data regions cut into SCAN_BYTES pieces. SCAN_AHEAD reads stay in
    // flight ahead of the one being checked (across regions too), so the disk or page cache and
    // the zero checks overlap, as qemu-img keeps several requests in flight.
    const chunks = (function* (regions: Iterable<[number, number]>): Generator<[number, number]> {
      for (const [rs, re] of regions) for (let pos = rs; pos < re; pos += SCAN_BYTES) yield [pos, Math.min(SCAN_BYTES, re - pos)];
    })(this.regions(offset, end));
    const queue: { pos: number; n: number; bytes: Promise<Uint8Array> }[] = [];
    const refill = () => {
      while (queue.length < SCAN_AHEAD) {
        const next = chunks.next();
        if (next.done) return;
        const [pos, n] = next.value;
        const bytes = this.scanRead(pos, n);
        bytes.catch(() => undefined); // surfaces when awaited; never unhandled if the caller stops early
        queue.push({ pos, n, bytes });
      }
    };
    refill();
    while (queue.length > 0) {
      const { pos, n, bytes } = queue.shift()!;
      const buf = await bytes;
      refill();
      // what the filesystem says is a hole (before this chunk) is never read
      for (let h = offset; h < pos;) {
        const g = Math.min(pos - h, MAX_EXTENT_BYTES);
        const y = add(h, g, 'hole', h);
        if (y) yield y;
        h += g;
      }
      offset = pos + n;
      // a whole zero chunk costs one memcmp
      const allZero = isZeroRange(buf, 0, n);
      if (allZero && buf.length === SCAN_BYTES && buf.byteOffset === 0 && buf.buffer.byteLength === SCAN_BYTES && this.spare.length < SCAN_AHEAD)
        this.spare.push(buf);
      else this.remember(pos, n, buf);
      for (let i = 0; i < n;) {
        // granules are aligned to the disk, not to the asked range
        const g = allZero ? n - i : Math.min(HOLE_GRANULE - ((pos + i) % HOLE_GRANULE), n - i);
        const kind: ExtentKind = allZero || isZeroRange(buf, i, g) ? 'hole' : 'data';
        const y = add(pos + i, g, kind, pos);
        if (y) yield y;
        i += g;
      }
    }
    for (let h = offset; h < end;) {
      const g = Math.min(end - h, MAX_EXTENT_BYTES);
      const y = add(h, g, 'hole', h);
      if (y) yield y;
      h += g;
    }
    if (cur) yield cur;
  }

  /**
   * The guest ranges inside [from, to) that may hold data: the filesystem's data regions
   * (SEEK_DATA/SEEK_HOLE) where it can tell, asked a window at a time so memory stays bounded;
   * otherwise the whole range (zero detection then finds the holes). Bytes past the end of the
   * file are holes.
   */
  private *regions(from: number, to: number): Generator<[number, number]> {
    const stored = Math.min(to, Math.max(from, this.file.size - this.dataOffset));
    if (!this.file.dataRegions) {
      if (from < stored) yield [from, stored];
      return;
    }
    for (let w = from; w < stored; w += REGION_WINDOW) {
      const wEnd = Math.min(stored, w + REGION_WINDOW);
      const found = this.file.dataRegions(this.dataOffset + w, this.dataOffset + wEnd);
      if (!found) {
        yield [w, stored];
        return;
      }
      // widened to whole granules (zero detection decides inside them), so extents keep the
      // granule boundaries whichever way holes were found; overlapping neighbours merge
      let pending: [number, number] | undefined;
      for (const [a, b] of found) {
        const ga = Math.max(w, Math.floor((a - this.dataOffset) / HOLE_GRANULE) * HOLE_GRANULE);
        const gb = Math.min(wEnd, Math.ceil((b - this.dataOffset) / HOLE_GRANULE) * HOLE_GRANULE);
        if (pending && ga <= pending[1]) pending[1] = Math.max(pending[1], gb);
        else {
          if (pending) yield pending;
          pending = [ga, gb];
        }
      }
      if (pending) yield pending;
    }
  }

  /** The guest ranges inside [from, to) the filesystem says hold data (all of the file's part when it cannot say), asked a window at a time. */
  private *fileRegions(from: number, to: number): Generator<[number, number]> {
    const inFile = Math.min(to, Math.max(from, this.file.size - this.dataOffset));
    for (let w = from; w < inFile; w += REGION_WINDOW) {
      const wEnd = Math.min(inFile, w + REGION_WINDOW);
      const found = this.file.dataRegions?.(this.dataOffset + w, this.dataOffset + wEnd);
      if (!found) {
        yield [w, inFile];
        return;
      }
      for (const [a, b] of found) yield [a - this.dataOffset, b - this.dataOffset];
    }
  }

  /** Guest bytes [pos, pos + n) as stored; shorter when the file ends first (the rest reads zeros). */
  private async scanRead(pos: number, n: number): Promise<Uint8Array> {
    const at = this.dataOffset + pos;
    if (at >= this.file.size) return new Uint8Array(0);
    const want = Math.min(n, this.file.size - at);
    if (this.file.readInto && want === SCAN_BYTES) {
      const buf = this.spare.pop() ?? new Uint8Array(Buffer.allocUnsafeSlow(SCAN_BYTES).buffer, 0, SCAN_BYTES);
      const got = await this.file.readInto(buf, at, want);
      return got === want ? buf : buf.subarray(0, got);
    }
    return this.file.read(at, want);
  }

  async close(): Promise<void> {
    await this.file.close?.();
  }
}

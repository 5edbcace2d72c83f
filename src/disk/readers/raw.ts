/**
 * raw — the guest bytes are the file bytes. Also the reader for a fixed VHD, whose data is raw
 * bytes followed by a footer (`openRawWindow`).
 *
 * Node has no SEEK_DATA/SEEK_HOLE, so the allocation map comes from zero detection: the file is
 * read in SCAN_BYTES pieces and each HOLE_GRANULE that is all zeros is reported as a `hole`. A
 * writer skipping those keeps a sparse copy sparse, and an all-zero block of a dense file becomes
 * a hole too (what `qemu-img convert` does by default with its zero detection). The comparison
 * against zeros is Buffer.compare (memcmp), which scans at memory speed.
 */
import type { DiskFormat, DiskReader, Extent, ExtentKind } from '../disk.js';
import { checkGuestRange } from '../block-map-reader.js';
import type { DiskFile } from '../disk-file.js';

/** Granularity of hole detection. */
export const HOLE_GRANULE = 64 * 1024;
/** Bytes read per step while scanning for holes. */
const SCAN_BYTES = 4 * 1024 * 1024;
const ZEROS = Buffer.alloc(HOLE_GRANULE);

export function openRaw(file: DiskFile): DiskReader {
  return openRawWindow(file, 'raw', 0, file.size);
}

/** Guest bytes [0, virtualSize) are file bytes [dataOffset, dataOffset + virtualSize). */
export function openRawWindow(file: DiskFile, format: DiskFormat, dataOffset: number, virtualSize: number): DiskReader {
  return new RawReader(file, format, dataOffset, virtualSize);
}

class RawReader implements DiskReader {
  readonly clusterSize = HOLE_GRANULE;
  constructor(
    private readonly file: DiskFile,
    readonly format: DiskFormat,
    private readonly dataOffset: number,
    readonly virtualSize: number,
  ) {}

  async read(offset: number, length: number): Promise<Uint8Array> {
    checkGuestRange(this, offset, length);
    const out = new Uint8Array(length);
    const at = this.dataOffset + offset;
    if (at < this.file.size && length > 0) out.set(await this.file.read(at, Math.min(length, this.file.size - at)), 0);
    return out;
  }

  async *extents(offset = 0, length = this.virtualSize - offset): AsyncIterable<Extent> {
    checkGuestRange(this, offset, length, Number.MAX_SAFE_INTEGER);
    const end = offset + length;
    let cur: { offset: number; length: number; kind: ExtentKind } | undefined;
    for (let pos = offset; pos < end; ) {
      const n = Math.min(SCAN_BYTES, end - pos);
      const buf = Buffer.from(await this.read(pos, n));
      for (let i = 0; i < n; ) {
        // granules are aligned to the disk, not to the asked range
        const g = Math.min(HOLE_GRANULE - ((pos + i) % HOLE_GRANULE), n - i);
        const kind: ExtentKind = Buffer.compare(buf.subarray(i, i + g), ZEROS.subarray(0, g)) === 0 ? 'hole' : 'data';
        if (cur && cur.kind === kind) cur.length += g;
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

  async close(): Promise<void> {
    await this.file.close?.();
  }
}

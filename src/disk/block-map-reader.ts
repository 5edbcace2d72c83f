/**
 * The reader shared by every block-mapped format (qcow2, VMDK sparse, VDI, VHD dynamic, VHDX,
 * QED): a format supplies `lookup(block)` — where guest block N lives — and this class turns that
 * into `read` and `extents`. Reads of neighbouring data blocks that are also neighbours in the file
 * are coalesced into one positional read; decompressed units are kept in a bounded LRU.
 */
import type { DiskFormat, DiskReader, Extent, ExtentKind, StoredLayout, StoredRun } from './disk.js';
import { DiskError } from './disk.js';
import type { DiskFile } from './disk-file.js';
import { DISK_LIMITS } from './limits.js';
import { LruCache } from './lru-cache.js';

export type BlockMapping =
  /** `blocks`: this and the next blocks-1 blocks read the same way (an empty L1 entry covers many) */
  | { readonly kind: 'hole' | 'zero'; readonly blocks?: number }
  /** the block's bytes are stored contiguously from `fileOffset` */
  | { readonly kind: 'data'; readonly fileOffset: number }
  /**
   * the block lies inside a unit that must be decoded whole (a compressed cluster or grain);
   * `at` is where the block starts inside the decoded bytes; `key` identifies the unit for the cache
   */
  | { readonly kind: 'decoded'; readonly key: number; readonly at: number; readonly decode: () => Promise<Uint8Array> };

export interface BlockMap {
  readonly format: DiskFormat;
  readonly virtualSize: number;
  /** granularity of `lookup` (cluster, subcluster, grain, block) */
  readonly blockSize: number;
  /** what the reader reports as `clusterSize` (defaults to blockSize) */
  readonly clusterSize?: number;
  lookup(block: number): Promise<BlockMapping>;
  close(): Promise<void>;
}

export class BlockMapReader implements DiskReader {
  readonly format: DiskFormat;
  readonly virtualSize: number;
  readonly clusterSize: number;
  readonly stored?: StoredLayout;
  private readonly decoded = new LruCache<number, Uint8Array>(DISK_LIMITS.decodedCacheBytes, (b) => b.length);

  constructor(
    private readonly map: BlockMap,
    private readonly file: DiskFile,
  ) {
    this.format = map.format;
    this.virtualSize = map.virtualSize;
    this.clusterSize = map.clusterSize ?? map.blockSize;
    if (!Number.isSafeInteger(map.blockSize) || map.blockSize <= 0) throw new DiskError(`${map.format}: block size ${map.blockSize} is not valid`);
    const fd = file.fd;
    if (fd !== undefined) {
      const bs = map.blockSize;
      // runs change only at block boundaries: aligned to whatever divides the block size
      this.stored = { fd, alignsTo: (align) => bs % align === 0, runs: (offset, length) => this.storedRuns(offset, length) };
    }
  }

  /** The `stored` layout's runs: `data` blocks are the file's bytes, `decoded` ones are not, holes and zeros read zeros. */
  private async *storedRuns(offset = 0, length = this.virtualSize - offset): AsyncIterable<StoredRun> {
    checkGuestRange(this, offset, length, Number.MAX_SAFE_INTEGER);
    const bs = this.map.blockSize;
    const end = offset + length;
    let cur: { offset: number; length: number; kind: StoredRun['kind']; fileOffset: number } | undefined;
    const run = (c: NonNullable<typeof cur>): StoredRun =>
      c.kind === 'stored'
        ? { offset: c.offset, length: c.length, kind: 'stored', fileOffset: c.fileOffset }
        : { offset: c.offset, length: c.length, kind: c.kind };
    for (let pos = offset; pos < end;) {
      const block = Math.floor(pos / bs);
      const inBlock = pos - block * bs;
      const m = await this.map.lookup(block);
      const span = m.kind === 'hole' || m.kind === 'zero' ? (m.blocks ?? 1) : 1;
      const n = Math.min(span * bs - inBlock, end - pos);
      const kind = m.kind === 'data' ? 'stored' : m.kind === 'decoded' ? 'other' : 'zero';
      const fileOffset = m.kind === 'data' ? m.fileOffset + inBlock : 0;
      if (cur && cur.kind === kind && (kind !== 'stored' || cur.fileOffset + cur.length === fileOffset)) {
        cur.length += n;
      } else {
        if (cur) yield run(cur);
        cur = { offset: pos, length: n, kind, fileOffset };
      }
      pos += n;
    }
    if (cur) yield run(cur);
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    checkGuestRange(this, offset, length);
    // not zero-filled: on a disk mostly data, zeroing every buffer first cost a memset of all of it
    // (and the page faults); each branch below writes every byte of its range, zeros included
    const out = new Uint8Array(Buffer.allocUnsafeSlow(length).buffer, 0, length);
    const bs = this.map.blockSize;
    const end = offset + length;
    // one pending coalesced file read: out[outAt, outAt+len) ← file[fileAt, fileAt+len)
    let pOut = 0;
    let pFile = 0;
    let pLen = 0;
    const flush = async () => {
      if (pLen === 0) return;
      await this.readData(out, pOut, pFile, pLen);
      pLen = 0;
    };
    for (let pos = offset; pos < end;) {
      const block = Math.floor(pos / bs);
      const inBlock = pos - block * bs;
      const m = await this.map.lookup(block);
      let n = Math.min(bs - inBlock, end - pos);
      switch (m.kind) {
        case 'hole':
        case 'zero':
          n = Math.min((m.blocks ?? 1) * bs - inBlock, end - pos);
          out.fill(0, pos - offset, pos - offset + n);
          break;
        case 'data': {
          const at = pos - offset;
          const fileAt = m.fileOffset + inBlock;
          if (pLen > 0 && pOut + pLen === at && pFile + pLen === fileAt) {
            pLen += n;
          } else {
            await flush();
            pOut = at;
            pFile = fileAt;
            pLen = n;
          }
          break;
        }
        case 'decoded': {
          const bytes = await this.decoded.get(m.key, m.decode);
          const from = m.at + inBlock;
          const got = from < bytes.length ? bytes.subarray(from, Math.min(bytes.length, from + n)) : new Uint8Array(0);
          out.set(got, pos - offset);
          out.fill(0, pos - offset + got.length, pos - offset + n);
          break;
        }
      }
      pos += n;
    }
    await flush();
    return out;
  }

  /** Stored bytes; a block that runs past the end of the file reads zeros there, as qemu does. */
  private async readData(out: Uint8Array, outAt: number, fileAt: number, length: number): Promise<void> {
    const n = Math.max(0, Math.min(length, this.file.size - fileAt));
    let got = 0;
    if (n > 0 && this.file.readInto) {
      // straight into the caller's buffer: no second allocation, no copy
      got = await this.file.readInto(out.subarray(outAt, outAt + n), fileAt, n);
    } else if (n > 0) {
      const bytes = await this.file.read(fileAt, n);
      out.set(bytes, outAt);
      got = bytes.length;
    }
    out.fill(0, outAt + got, outAt + length);
  }

  async *extents(offset = 0, length = this.virtualSize - offset): AsyncIterable<Extent> {
    checkGuestRange(this, offset, length, Number.MAX_SAFE_INTEGER);
    const bs = this.map.blockSize;
    const end = offset + length;
    let cur: { offset: number; length: number; kind: ExtentKind } | undefined;
    for (let pos = offset; pos < end;) {
      const block = Math.floor(pos / bs);
      const inBlock = pos - block * bs;
      const m = await this.map.lookup(block);
      const kind: ExtentKind = m.kind === 'decoded' ? 'data' : m.kind;
      const span = m.kind === 'hole' || m.kind === 'zero' ? (m.blocks ?? 1) : 1;
      const n = Math.min(span * bs - inBlock, end - pos);
      if (cur && cur.kind === kind) {
        cur.length += n;
      } else {
        if (cur) yield cur;
        cur = { offset: pos, length: n, kind };
      }
      pos += n;
    }
    if (cur) yield cur;
  }

  async close(): Promise<void> {
    await this.map.close();
  }
}

/** A guest range must lie inside the disk; a caller bug or hostile request is a DiskError, not a crash. */
export function checkGuestRange(r: { format: string; virtualSize: number }, offset: number, length: number, maxLength = DISK_LIMITS.maxReadBytes): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > r.virtualSize) {
    throw new DiskError(`${r.format}: range [${offset}, ${offset}+${length}) is outside the ${r.virtualSize}-byte disk`, 'BAD_OPTION');
  }
  if (length > maxLength) throw new DiskError(`${r.format}: a read of ${length} bytes is over the limit of ${maxLength}; read in smaller pieces`, 'BAD_OPTION');
}

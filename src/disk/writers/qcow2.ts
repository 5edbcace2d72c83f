/**
 * qcow2 writer — version 3, refcount_order 4 (16-bit refcounts), no backing file, no snapshots.
 *
 * Spec: qemu docs/interop/qcow2.rst. Big-endian. What we write (header_length 112, as qemu 7.2):
 *
 * | offset | size | field                   | value |
 * |--------|------|-------------------------|-------|
 * | 0      | 4    | magic                   | "QFI\xfb" |
 * | 4      | 4    | version                 | 3 |
 * | 8      | 8+4  | backing_file_offset/size| 0 |
 * | 20     | 4    | cluster_bits            | from `cluster_size` (default 64 KiB; 512 B..2 MiB) |
 * | 24     | 8    | size                    | virtual size rounded up to 512 (qemu reads whole sectors) |
 * | 32     | 4    | crypt_method            | 0 |
 * | 36     | 4    | l1_size                 | ceil(size / (cluster_size × cluster_size/8)) |
 * | 40     | 8    | l1_table_offset         | cluster 1 |
 * | 48     | 8    | refcount_table_offset   | after everything else (file) / after L1 (stream) |
 * | 56     | 4    | refcount_table_clusters | |
 * | 60     | 4+8  | nb_snapshots/offset     | 0 |
 * | 72     | 8    | incompatible_features   | bit 3 (compression type) when zstd |
 * | 80, 88 | 8+8  | compatible / autoclear  | 0 |
 * | 96     | 4    | refcount_order          | 4 |
 * | 100    | 4    | header_length           | 112 |
 * | 104    | 1    | compression_type        | 0 zlib, 1 zstd |
 * | 112    | 8    | header extension end    | type 0, length 0 |
 *
 * L1/L2 entries: bits 9..55 host offset, bit 63 COPIED (set: every cluster we allocate has
 * refcount 1, and `qemu-img check` reports a missing COPIED flag on such a cluster as an error).
 * Compressed L2 entries (bit 62): with x = 62 − (cluster_bits − 8), bits 0..x−1 the byte offset,
 * bits x..61 the number of 512-byte sectors beyond the one holding the offset; the cluster holds
 * raw deflate (window 2^12, as qemu's `qcow2_co_compress`) or zstd.
 *
 * File layout (written in one forward pass, then the tables): header, L1, then per L1 slot that has
 * data its L2 cluster followed by its data clusters (or packed compressed clusters), then the
 * refcount table and blocks. Every cluster up to the end is used, so the refcounts are 1 for all of
 * them — except host clusters holding compressed data, which count every compressed cluster whose
 * sector range touches them, exactly as `qemu-img check` counts. Only the refcounts (2 bytes per
 * output cluster: what the format stores anyway) and one L2 table are held in memory.
 *
 * Stream layout (`streamable`, uncompressed only): the layout is computed first from the source's
 * extents alone — header, L1, refcount table, refcount blocks, then per slot its L2 and its data
 * clusters in order — so every table can be written before the data it describes. A cluster that
 * a `data` extent touches is stored even if its bytes turn out to be zeros (the layout is fixed
 * before the bytes are read; re-reading the source to find them would double the I/O).
 *
 * File layout, kernel-copy path: when the source says where its bytes are stored and the copy
 * engine is there (`stored-copy.ts`), each cluster-aligned stored run is scanned for clusters that
 * hold data, and those are copied file to file with copy_file_range into the clusters allocated
 * for them — the same clusters in the same places as the read path, only the tables are written
 * from here.
 *
 * zstd (`-o compression_type=zstd`): one zstd frame per cluster (level 3, as qemu), encoded on
 * the worker threads by @bokuweb/zstd-wasm (Node 20's zlib has no zstd); sets incompatible bit 3
 * and header byte 104 = 1, so the image needs qemu ≥ 5.1.
 */
import { compressedSizeShift, QCOW2 } from '../../formats/qcow2-layout.js';
import { DiskError, type DiskReader, type DiskWriter, type OutputTarget, type WriteOptions, type WriteResult } from '../disk.js';
import { CompressPool, mapOrdered, zstdEncoderPath, type Codec } from './compress-pool.js';
import { alignUp, dataBlocks, isAllZero } from './data-blocks.js';
import { type FileSink, type SequentialSink, withOutput } from './output-sink.js';
import { copyItems, RunGatherer, storedCopy } from './stored-copy.js';
import { checkPowerOfTwo, WriterOptions } from './write-options.js';

const H = QCOW2.header;
const VERSION = 3;
const HEADER_LENGTH = 112;
const REFCOUNT_ORDER = 4;
const REFCOUNT_BYTES = 2;
const SECTOR = QCOW2.sectorBytes;
const DEFAULT_CLUSTER = 64 * 1024;
const MIN_CLUSTER = 1 << QCOW2.minClusterBits;
const MAX_CLUSTER = 1 << QCOW2.maxClusterBits;
const L1_OFFSET_CLUSTER = 1;

const INCOMPAT_COMPRESSION_TYPE = 1n << BigInt(QCOW2.incompatible.compressionType);
const OFLAG_COPIED = QCOW2.entry.copied;
const OFLAG_COMPRESSED = QCOW2.entry.compressed;
const COMPRESSION_TYPES = ['zlib', 'zstd'] as const;
/** qcow2 zlib clusters: raw deflate with a 4 KiB window (qemu `qcow2_co_compress`: windowBits −12) */
const ZLIB_WINDOW_BITS = 12;
const ZLIB_LEVEL = 6;
/** qemu's qcow2_zstd_compress uses ZSTD_CLEVEL_DEFAULT */
const ZSTD_LEVEL = 3;
/** compressed clusters in flight (per pool): bounds memory to this many clusters twice over */
const MAX_IN_FLIGHT = 16;

const OPTIONS = ['cluster_size', 'compression_type', 'refcount_bits'] as const;

interface Geometry {
  readonly clusterSize: number;
  readonly clusterBits: number;
  readonly headerSize: number;
  readonly l2Entries: number;
  readonly slotBytes: number;
  readonly l1Size: number;
  readonly l1Clusters: number;
}

function geometry(virtualSize: number, clusterSize: number): Geometry {
  const l2Entries = clusterSize / 8;
  const slotBytes = clusterSize * l2Entries;
  const headerSize = alignUp(virtualSize, SECTOR);
  const l1Size = Math.ceil(headerSize / slotBytes);
  return {
    clusterSize,
    clusterBits: Math.log2(clusterSize),
    headerSize,
    l2Entries,
    slotBytes,
    l1Size,
    l1Clusters: Math.max(1, Math.ceil((l1Size * 8) / clusterSize)),
  };
}

/** Refcount table and block counts that cover `used` clusters plus themselves (a fixed point). */
export function refcountLayout(used: number, clusterSize: number): { tableClusters: number; blocks: number } {
  const perBlock = clusterSize / REFCOUNT_BYTES;
  let blocks = 0;
  let tableClusters = 0;
  for (;;) {
    const b = Math.ceil((used + blocks + tableClusters) / perBlock);
    const t = Math.max(1, Math.ceil((b * 8) / clusterSize));
    if (b === blocks && t === tableClusters) return { tableClusters, blocks };
    blocks = b;
    tableClusters = t;
  }
}

function header(g: Geometry, refcountTableOffset: number, refcountTableClusters: number, compressionType: 0 | 1): Uint8Array {
  const h = new Uint8Array(g.clusterSize);
  const v = new DataView(h.buffer);
  v.setUint32(H.magic, QCOW2.magic);
  v.setUint32(H.version, VERSION);
  v.setUint32(H.clusterBits, g.clusterBits);
  v.setBigUint64(H.size, BigInt(g.headerSize));
  v.setUint32(H.l1Size, g.l1Size);
  v.setBigUint64(H.l1TableOffset, BigInt(L1_OFFSET_CLUSTER * g.clusterSize));
  v.setBigUint64(H.refcountTableOffset, BigInt(refcountTableOffset));
  v.setUint32(H.refcountTableClusters, refcountTableClusters);
  v.setBigUint64(H.incompatibleFeatures, compressionType === QCOW2.compression.zstd ? INCOMPAT_COMPRESSION_TYPE : 0n);
  v.setUint32(H.refcountOrder, REFCOUNT_ORDER);
  v.setUint32(H.headerLength, HEADER_LENGTH);
  h[H.compressionType] = compressionType;
  // Header extensions start at HEADER_LENGTH: the end marker (type 0, length 0) is already zeros.
  return h;
}

/** Refcounts of the output clusters, growing as clusters are allocated. */
class Refcounts {
  private counts = new Uint16Array(1024);
  length = 0;

  add(cluster: number, n = 1): void {
    if (cluster >= this.counts.length) {
      const grown = new Uint16Array(Math.max(cluster + 1, this.counts.length * 2));
      grown.set(this.counts);
      this.counts = grown;
    }
    const c = this.counts[cluster]! + n;
    if (c > 0xffff) throw new DiskError('qcow2 refcount overflow (more than 65535 compressed clusters in one host cluster)', 'IO');
    this.counts[cluster] = c;
    this.length = Math.max(this.length, cluster + 1);
  }

  get(cluster: number): number {
    return cluster < this.length ? this.counts[cluster]! : 0;
  }
}

/** Builds refcount block `index` (clusters [index × perBlock, …)) from `countOf`. */
function refcountBlock(clusterSize: number, index: number, countOf: (cluster: number) => number): Uint8Array {
  const perBlock = clusterSize / REFCOUNT_BYTES;
  const b = new Uint8Array(clusterSize);
  const v = new DataView(b.buffer);
  for (let i = 0; i < perBlock; i++) {
    const c = countOf(index * perBlock + i);
    if (c === 0) break;
    v.setUint16(i * REFCOUNT_BYTES, c);
  }
  return b;
}

function refcountTable(clusterSize: number, tableClusters: number, firstBlockOffset: number, blocks: number): Uint8Array {
  const t = new Uint8Array(tableClusters * clusterSize);
  const v = new DataView(t.buffer);
  for (let i = 0; i < blocks; i++) v.setBigUint64(i * 8, BigInt(firstBlockOffset + i * clusterSize));
  return t;
}

interface Parsed {
  readonly clusterSize: number;
  readonly compressionType: 0 | 1;
  readonly compress: boolean;
}

function parseOptions(opts: WriteOptions): Parsed {
  const o = new WriterOptions('qcow2', opts.options, OPTIONS);
  const clusterSize = checkPowerOfTwo('qcow2', 'cluster_size', o.size('cluster_size', DEFAULT_CLUSTER), MIN_CLUSTER, MAX_CLUSTER);
  if (o.size('refcount_bits', 16) !== 16) throw new DiskError("qcow2 writer supports refcount_bits=16 only (qemu's default)", 'BAD_OPTION');
  const type = o.string('compression_type', COMPRESSION_TYPES, 'zlib');
  if (type === 'zstd' && zstdEncoderPath() === undefined) {
    throw new DiskError(
      'qcow2 compression_type=zstd needs the @bokuweb/zstd-wasm package, which is not installed; use compression_type=zlib (the default)',
      'UNSUPPORTED',
    );
  }
  return { clusterSize, compressionType: type === 'zstd' ? 1 : 0, compress: opts.compress === true };
}

export const qcow2Writer: DiskWriter = {
  format: 'qcow2',
  streamable: true,
  async write(src: DiskReader, target: OutputTarget, opts: WriteOptions = {}): Promise<WriteResult> {
    const p = parseOptions(opts);
    if (target.kind === 'stream' && p.compress) {
      throw new DiskError(
        'compressed qcow2 cannot be streamed (compressed sizes are known only after the data); write it to a file, or stream it uncompressed',
        'UNSUPPORTED',
      );
    }
    const g = geometry(src.virtualSize, p.clusterSize);
    const bytesWritten = await withOutput(target, 'qcow2', true, opts, async (out) => {
      if (out.kind === 'stream') await writeStream(src, g, out.stream, opts);
      else await writeFile(src, g, p, out.file, opts);
    });
    opts.onProgress?.({ done: src.virtualSize, total: src.virtualSize });
    return { bytesWritten };
  },
};

async function writeFile(src: DiskReader, g: Geometry, p: Parsed, file: FileSink, opts: WriteOptions): Promise<void> {
  const cs = g.clusterSize;
  const refcounts = new Refcounts();
  const l1 = new Uint8Array(g.l1Clusters * cs);
  const l1View = new DataView(l1.buffer);
  for (let c = 0; c < 1 + g.l1Clusters; c++) refcounts.add(c);
  /** next free byte: cluster-aligned except while packing compressed clusters */
  let pos = (1 + g.l1Clusters) * cs;

  const allocCluster = (): number => {
    pos = alignUp(pos, cs);
    const at = pos;
    refcounts.add(at / cs);
    pos += cs;
    return at;
  };

  let slot = -1;
  let l2: DataView | undefined;
  let l2At = 0;
  const finishSlot = async (): Promise<void> => {
    if (!l2) return;
    await file.pwrite(new Uint8Array(l2.buffer), l2At);
    l1View.setBigUint64(slot * 8, BigInt(l2At) | OFLAG_COPIED);
    l2 = undefined;
  };
  const enterSlot = async (offset: number): Promise<number> => {
    const s = Math.floor(offset / g.slotBytes);
    if (s !== slot) {
      await finishSlot();
      slot = s;
      l2 = new DataView(new ArrayBuffer(cs));
      l2At = allocCluster();
    }
    return ((offset % g.slotBytes) / cs) * 8;
  };

  const copy = p.compress ? undefined : storedCopy(src, file, cs);
  if (copy) {
    // the kernel-copy path: the same clusters in the same places as below, the data copied file to file
    const runs = new RunGatherer(file, copy.layout.fd);
    for await (const item of copyItems(src, copy, cs, cs, opts)) {
      const end = item.offset + item.length;
      if (item.kind === 'granules') {
        for (let i = 0; i < item.bits.length; i++) {
          if (item.bits[i] === 0) continue;
          const guest = item.offset + i * cs;
          const entry = await enterSlot(guest);
          const at = allocCluster();
          await runs.add([[item.fileOffset + i * cs, at, Math.min(cs, end - guest)]]);
          l2!.setBigUint64(entry, BigInt(at) | OFLAG_COPIED);
        }
        continue;
      }
      for (let guest = item.offset; guest < end; guest += cs) {
        const data = new Uint8Array(cs);
        data.set(await src.read(guest, Math.min(cs, end - guest)));
        if (isAllZero(data)) continue;
        const entry = await enterSlot(guest);
        const at = allocCluster();
        await file.pwrite(data, at);
        l2!.setBigUint64(entry, BigInt(at) | OFLAG_COPIED);
      }
    }
    await runs.flush();
  } else if (!p.compress) {
    for await (const b of dataBlocks(src, cs, opts)) {
      const entry = await enterSlot(b.offset);
      const at = allocCluster();
      await file.pwrite(b.data, at);
      l2!.setBigUint64(entry, BigInt(at) | OFLAG_COPIED);
    }
  } else {
    const pool = new CompressPool();
    const codec: Codec =
      p.compressionType === 1 ? { kind: 'zstd', level: ZSTD_LEVEL } : { kind: 'deflate-raw', windowBits: ZLIB_WINDOW_BITS, level: ZLIB_LEVEL };
    const csizeShift = compressedSizeShift(g.clusterBits);
    try {
      for await (const [b, z] of mapOrdered(dataBlocks(src, cs, opts), (blk) => pool.compress(blk.data, codec), MAX_IN_FLIGHT)) {
        const entry = await enterSlot(b.offset);
        if (z.length >= cs) {
          // Did not shrink: stored plain, as qemu does when the output would not fit in cluster_size − 1.
          const at = allocCluster();
          await file.pwrite(b.data, at);
          l2!.setBigUint64(entry, BigInt(at) | OFLAG_COPIED);
          continue;
        }
        const at = pos;
        const firstSector = Math.floor(at / SECTOR);
        const sectors = Math.ceil((at + z.length) / SECTOR) - firstSector;
        // qemu-img check counts every host cluster the sector range [at & ~511, +sectors×512) touches.
        const lastCluster = Math.floor(((firstSector + sectors) * SECTOR - 1) / cs);
        for (let c = Math.floor(at / cs); c <= lastCluster; c++) refcounts.add(c);
        await file.pwrite(z, at);
        pos = at + z.length;
        l2!.setBigUint64(entry, OFLAG_COMPRESSED | (BigInt(sectors - 1) << csizeShift) | BigInt(at));
      }
    } finally {
      await pool.close();
    }
  }
  await finishSlot();

  const used = alignUp(pos, cs) / cs;
  const { tableClusters, blocks: rcBlocks } = refcountLayout(used, cs);
  const tableAt = used * cs;
  const firstBlockAt = tableAt + tableClusters * cs;
  const total = used + tableClusters + rcBlocks;
  const countOf = (c: number): number => (c < used ? refcounts.get(c) : c < total ? 1 : 0);
  // Clusters skipped while packing (none today) would read as refcount 0 = free: consistent.
  await file.pwrite(refcountTable(cs, tableClusters, firstBlockAt, rcBlocks), tableAt);
  for (let i = 0; i < rcBlocks; i++) await file.pwrite(refcountBlock(cs, i, countOf), firstBlockAt + i * cs);
  await file.pwrite(l1, L1_OFFSET_CLUSTER * cs);
  await file.pwrite(header(g, tableAt, tableClusters, p.compressionType), 0);
  await file.truncate(total * cs);
}

/**
 * The streamable layout: one pass over the extents to count, per L1 slot, the clusters that data
 * touches; then everything is placed before a byte of data is read.
 */
async function writeStream(src: DiskReader, g: Geometry, sink: SequentialSink, opts: WriteOptions): Promise<void> {
  const cs = g.clusterSize;
  const perSlot = new Uint32Array(g.l1Size);
  let lastCounted = -1;
  for await (const ext of src.extents()) {
    if (ext.kind !== 'data' || ext.length === 0) continue;
    const first = Math.max(Math.floor(ext.offset / cs), lastCounted + 1);
    const last = Math.floor((ext.offset + ext.length - 1) / cs);
    for (let c = first; c <= last;) {
      const s = Math.floor((c * cs) / g.slotBytes);
      const slotLast = Math.min(last, (s + 1) * g.l2Entries - 1);
      perSlot[s]! += slotLast - c + 1;
      c = slotLast + 1;
    }
    lastCounted = Math.max(lastCounted, last);
  }
  let used = 1 + g.l1Clusters;
  for (const n of perSlot) if (n > 0) used += 1 + n;
  const { tableClusters, blocks: rcBlocks } = refcountLayout(used, cs);
  const tableAt = (1 + g.l1Clusters) * cs;
  const firstBlockAt = tableAt + tableClusters * cs;
  const total = used + tableClusters + rcBlocks;

  // Slot placement: each slot with data gets its L2 then its data clusters, in slot order.
  let next = firstBlockAt + rcBlocks * cs;
  const l1 = new Uint8Array(g.l1Clusters * cs);
  const l1View = new DataView(l1.buffer);
  const slotStart = new Float64Array(g.l1Size);
  for (let s = 0; s < g.l1Size; s++) {
    if (perSlot[s] === 0) continue;
    slotStart[s] = next;
    l1View.setBigUint64(s * 8, BigInt(next) | OFLAG_COPIED);
    next += (1 + perSlot[s]!) * cs;
  }

  await sink.write(header(g, tableAt, tableClusters, 0));
  await sink.write(l1);
  await sink.write(refcountTable(cs, tableClusters, firstBlockAt, rcBlocks));
  for (let i = 0; i < rcBlocks; i++) await sink.write(refcountBlock(cs, i, (c) => (c < total ? 1 : 0)));

  let slot = -1;
  for await (const b of dataBlocks(src, cs, { ...opts, keepZeroBlocks: true })) {
    const s = Math.floor(b.offset / g.slotBytes);
    if (s !== slot) {
      slot = s;
      if (sink.position !== slotStart[s]) throw new DiskError(`qcow2 stream layout drifted at slot ${s}: the source's extents changed while it was read`, 'IO');
      await sink.write(await l2ForSlot(src, g, s, slotStart[s]! + cs));
    }
    await sink.write(b.data);
  }
  if (sink.position !== total * cs) throw new DiskError("qcow2 stream layout drifted: the source's extents changed while it was read", 'IO');
}

/** The L2 table of slot `s`: its data-touched clusters, in order, from `firstDataAt` on. */
async function l2ForSlot(src: DiskReader, g: Geometry, s: number, firstDataAt: number): Promise<Uint8Array> {
  const cs = g.clusterSize;
  const l2 = new Uint8Array(cs);
  const v = new DataView(l2.buffer);
  const start = s * g.slotBytes;
  const length = Math.min(g.slotBytes, src.virtualSize - start);
  let at = firstDataAt;
  let lastIndex = -1;
  for await (const ext of src.extents(start, length)) {
    if (ext.kind !== 'data' || ext.length === 0) continue;
    const first = Math.max(Math.floor((ext.offset - start) / cs), lastIndex + 1);
    const last = Math.floor((ext.offset + ext.length - 1 - start) / cs);
    for (let i = first; i <= last; i++) {
      v.setBigUint64(i * 8, BigInt(at) | OFLAG_COPIED);
      at += cs;
    }
    lastIndex = Math.max(lastIndex, last);
  }
  return l2;
}

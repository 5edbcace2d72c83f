/**
 * VHD writer ("vpc" in qemu) — dynamic (default) and fixed (`-o subformat=fixed`).
 *
 * Spec: Microsoft "Virtual Hard Disk Image Format Specification" (2006), "Hard Disk Footer
 * Format", "Dynamic Disk Header Format", "Block Allocation Table"; sizes and geometry exactly as
 * qemu 7.2 block/vpc.c (`vpc_co_create`, `calculate_geometry`, `create_dynamic_disk`). Big-endian.
 * The field tables are in src/formats/vhd.ts; what we write:
 *
 * | footer field (offset) | value |
 * |-----------------------|-------|
 * | cookie (0)            | "conectix" |
 * | features (8)          | 2 (the reserved bit the spec says is always set) |
 * | version (12)          | 0x00010000 |
 * | data offset (16)      | 512 (dynamic: the dynamic header) / all ones (fixed) |
 * | timestamp (24)        | seconds since 2000-01-01 UTC |
 * | creator app (28)      | "qemu", or "qem2" with force_size (tells qemu to trust current size, not CHS) |
 * | creator version (32)  | 0x00050003 (Virtual PC 2007, as qemu) |
 * | creator OS (36)       | "Wi2k" |
 * | original/current size (40/48) | the size below |
 * | geometry (56)         | C u16, H u8, S u8 |
 * | disk type (60)        | 2 fixed, 3 dynamic |
 * | checksum (64)         | one's complement of the byte sum with this field zero |
 * | unique id (68)        | random |
 *
 * Size: like qemu, without force_size the disk is the smallest CHS geometry (qemu's
 * `calculate_geometry`, searched upwards from the requested sectors) that holds the source, and the
 * footer sizes are C×H×S×512 — qemu (and Hyper-V, Virtual PC) then see at least the source's
 * bytes, the tail reading zeros. With `force_size=on` the sizes are the source's size (rounded
 * to sectors) and the geometry 65535×16×255. `azure=on`: Azure accepts only fixed VHDs whose
 * size is a whole number of MiB, so the size is rounded up to 1 MiB, force_size applies and the
 * subformat defaults to fixed (dynamic is refused).
 *
 * Dynamic layout (file only): footer copy at 0, dynamic header at 512 (cookie "cxsparse", data
 * offset all ones, table offset 1536, version 0x00010000, max table entries, block size 2 MiB,
 * checksum), the BAT at 1536 (4 bytes per block, 0xFFFFFFFF = unallocated, else the sector of the
 * block's bitmap), then each allocated block as qemu's `alloc_block` lays it: a 512-byte sector
 * bitmap of all ones and the 2 MiB of data; the footer last. The BAT is held in memory (4 bytes per
 * 2 MiB; at most 4 MiB for the 2040 GiB maximum).
 *
 * Fixed layout (streamable): the data (zeros for holes — holes in a file), then the footer.
 */
import { DiskError, type DiskReader, type DiskWriter, type OutputTarget, type WriteOptions, type WriteResult } from '../disk.js';
import { alignUp, dataBlocks, writeIntoBlocks } from './data-blocks.js';
import { type FileSink, type SequentialSink, withOutput } from './output-sink.js';
import { WriterOptions } from './write-options.js';
import {
  F_FEATURES,
  F_VERSION,
  F_DATA_OFFSET,
  F_TIMESTAMP,
  F_CREATOR_APP,
  F_CREATOR_VERSION,
  F_CREATOR_OS,
  F_ORIGINAL_SIZE,
  F_CURRENT_SIZE,
  F_CYLINDERS,
  F_HEADS,
  F_SECTORS,
  F_DISK_TYPE,
  F_CHECKSUM,
  F_UNIQUE_ID,
} from '../../formats/vhd.js';

// node:crypto is loaded on first use: every conversion imports every writer (issue 20, CLI start)
const randomBytes = (n: number): Buffer => process.getBuiltinModule('node:crypto').randomBytes(n);

const SECTOR = 512;
const FOOTER_SIZE = 512;
const DYN_HEADER_OFFSET = 512;
const DYN_HEADER_SIZE = 1024;
const BAT_OFFSET = 3 * SECTOR;
const BLOCK_SIZE = 2 * 1024 * 1024;
/** zero-detection granularity inside a block: unwritten parts of an allocated block stay file holes */
const UNIT = 64 * 1024;
const BAT_UNALLOCATED = 0xffffffff;
const MiB = 1024 * 1024;

/** qemu block/vpc.c: VHD_CHS_MAX_* and the 2040 GiB limit (VHD_MAX_SECTORS) */
const CHS_MAX_C = 65535;
const CHS_MAX_H = 16;
const CHS_MAX_S = 255;
const MAX_GEOMETRY = CHS_MAX_C * CHS_MAX_H * CHS_MAX_S;
const MAX_SECTORS = 0xff000000;
/** seconds from the Unix epoch to 2000-01-01 00:00:00 UTC, the VHD timestamp base */
const TIMESTAMP_BASE = 946684800;

const TYPE_FIXED = 2;
const TYPE_DYNAMIC = 3;

const F_COOKIE = 0;

const H_COOKIE = 0;
const H_DATA_OFFSET = 8;
const H_TABLE_OFFSET = 16;
const H_VERSION = 24;
const H_MAX_TABLE_ENTRIES = 28;
const H_BLOCK_SIZE = 32;
const H_CHECKSUM = 36;

const FEATURES_RESERVED = 2;
const FORMAT_VERSION = 0x00010000;
const CREATOR_VERSION = 0x00050003;

const SUBFORMATS = ['dynamic', 'fixed'] as const;
const OPTIONS = ['subformat', 'force_size', 'azure'] as const;

export interface Geometry {
  readonly cylinders: number;
  readonly heads: number;
  readonly sectorsPerTrack: number;
}

/** qemu block/vpc.c `calculate_geometry` (the VHD spec's CHS algorithm, appendix). */
export function calculateGeometry(totalSectors: number): Geometry {
  totalSectors = Math.min(totalSectors, MAX_GEOMETRY);
  let sectorsPerTrack: number;
  let heads: number;
  let cylTimesHeads: number;
  if (totalSectors >= 65535 * 16 * 63) {
    sectorsPerTrack = 255;
    heads = 16;
    cylTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
  } else {
    sectorsPerTrack = 17;
    cylTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
    heads = Math.max(4, Math.ceil(cylTimesHeads / 1024));
    if (cylTimesHeads >= heads * 1024 || heads > 16) {
      sectorsPerTrack = 31;
      heads = 16;
      cylTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
    }
    if (cylTimesHeads >= heads * 1024) {
      sectorsPerTrack = 63;
      heads = 16;
      cylTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
    }
  }
  return { cylinders: Math.floor(cylTimesHeads / heads), heads, sectorsPerTrack };
}

export interface VhdSizing {
  readonly geometry: Geometry;
  /** the footer's current size: what qemu and Hyper-V see */
  readonly size: number;
  readonly creatorApp: 'qemu' | 'qem2';
}

/** The disk size and geometry qemu's `vpc_co_create` would choose for `requested` bytes. */
export function vhdSizing(requested: number, forceSize: boolean): VhdSizing {
  let geometry: Geometry = { cylinders: 0, heads: 0, sectorsPerTrack: 0 };
  if (forceSize) {
    geometry = { cylinders: CHS_MAX_C, heads: CHS_MAX_H, sectorsPerTrack: CHS_MAX_S };
  } else {
    const wanted = Math.min(MAX_GEOMETRY, Math.floor(requested / SECTOR));
    for (let i = 0; wanted > geometry.cylinders * geometry.heads * geometry.sectorsPerTrack; i++) geometry = calculateGeometry(wanted + i);
  }
  const chs = geometry.cylinders * geometry.heads * geometry.sectorsPerTrack;
  let sectors: number;
  if (chs === MAX_GEOMETRY) {
    sectors = Math.ceil(requested / SECTOR);
    if (sectors > MAX_SECTORS) throw new DiskError('VHD disks are at most 2040 GiB; use vhdx for larger disks', 'UNSUPPORTED');
  } else {
    sectors = chs;
  }
  return { geometry, size: sectors * SECTOR, creatorApp: forceSize ? 'qem2' : 'qemu' };
}

/** One's complement of the byte sum of `b` (the checksum field must be zero in `b`). */
function vhdChecksum(b: Uint8Array): number {
  let sum = 0;
  for (const x of b) sum += x;
  return ~sum >>> 0;
}

function ascii(b: Uint8Array, at: number, s: string): void {
  for (let i = 0; i < s.length; i++) b[at + i] = s.charCodeAt(i);
}

export function vhdFooter(s: VhdSizing, diskType: typeof TYPE_FIXED | typeof TYPE_DYNAMIC, now = Date.now()): Uint8Array {
  const b = new Uint8Array(FOOTER_SIZE);
  const v = new DataView(b.buffer);
  ascii(b, F_COOKIE, 'conectix');
  v.setUint32(F_FEATURES, FEATURES_RESERVED);
  v.setUint32(F_VERSION, FORMAT_VERSION);
  v.setBigUint64(F_DATA_OFFSET, diskType === TYPE_DYNAMIC ? BigInt(DYN_HEADER_OFFSET) : 0xffffffffffffffffn);
  v.setUint32(F_TIMESTAMP, Math.max(0, Math.floor(now / 1000) - TIMESTAMP_BASE));
  ascii(b, F_CREATOR_APP, s.creatorApp);
  v.setUint32(F_CREATOR_VERSION, CREATOR_VERSION);
  ascii(b, F_CREATOR_OS, 'Wi2k');
  v.setBigUint64(F_ORIGINAL_SIZE, BigInt(s.size));
  v.setBigUint64(F_CURRENT_SIZE, BigInt(s.size));
  v.setUint16(F_CYLINDERS, s.geometry.cylinders);
  v.setUint8(F_HEADS, s.geometry.heads);
  v.setUint8(F_SECTORS, s.geometry.sectorsPerTrack);
  v.setUint32(F_DISK_TYPE, diskType);
  b.set(randomBytes(16), F_UNIQUE_ID);
  v.setUint32(F_CHECKSUM, vhdChecksum(b));
  return b;
}

function dynamicHeader(maxTableEntries: number): Uint8Array {
  const b = new Uint8Array(DYN_HEADER_SIZE);
  const v = new DataView(b.buffer);
  ascii(b, H_COOKIE, 'cxsparse');
  v.setBigUint64(H_DATA_OFFSET, 0xffffffffffffffffn);
  v.setBigUint64(H_TABLE_OFFSET, BigInt(BAT_OFFSET));
  v.setUint32(H_VERSION, FORMAT_VERSION);
  v.setUint32(H_MAX_TABLE_ENTRIES, maxTableEntries);
  v.setUint32(H_BLOCK_SIZE, BLOCK_SIZE);
  v.setUint32(H_CHECKSUM, vhdChecksum(b));
  return b;
}

function parse(opts: WriteOptions, virtualSize: number): { fixed: boolean; sizing: VhdSizing } {
  const o = new WriterOptions('vhd', opts.options, OPTIONS);
  const azure = o.bool('azure', false);
  const subformat = o.string('subformat', SUBFORMATS, azure ? 'fixed' : 'dynamic');
  if (azure && subformat !== 'fixed') throw new DiskError('vhd azure=on needs subformat=fixed: Azure accepts fixed VHDs only', 'BAD_OPTION');
  const forceSize = azure || o.bool('force_size', false);
  const requested = azure ? alignUp(virtualSize, MiB) : virtualSize;
  return { fixed: subformat === 'fixed', sizing: vhdSizing(requested, forceSize) };
}

export const vhdWriter: DiskWriter = {
  format: 'vhd',
  /** fixed only; dynamic is refused for a stream target */
  streamable: true,
  async write(src: DiskReader, target: OutputTarget, opts: WriteOptions = {}): Promise<WriteResult> {
    const { fixed, sizing } = parse(opts, src.virtualSize);
    const bytesWritten = await withOutput(target, fixed ? 'vhd fixed' : 'vhd dynamic', fixed, opts, async (out) => {
      if (fixed) await writeFixed(src, sizing, out.kind === 'file' ? out.file : out.stream, opts);
      else if (out.kind === 'file') await writeDynamic(src, sizing, out.file, opts);
    });
    opts.onProgress?.({ done: src.virtualSize, total: src.virtualSize });
    return { bytesWritten };
  },
};

async function writeFixed(src: DiskReader, sizing: VhdSizing, out: FileSink | SequentialSink, opts: WriteOptions): Promise<void> {
  const size = sizing.size;
  const blocks = dataBlocks(src, UNIT, opts);
  if ('pwrite' in out) {
    await out.truncate(size);
    for await (const b of blocks) await out.pwrite(b.data.subarray(0, Math.min(UNIT, size - b.offset)), b.offset);
    await out.pwrite(vhdFooter(sizing, TYPE_FIXED), size);
    return;
  }
  for await (const b of blocks) {
    await out.writeZeros(b.offset - out.position);
    await out.write(b.data.subarray(0, Math.min(UNIT, size - b.offset)));
  }
  await out.writeZeros(size - out.position);
  await out.write(vhdFooter(sizing, TYPE_FIXED));
}

async function writeDynamic(src: DiskReader, sizing: VhdSizing, file: FileSink, opts: WriteOptions): Promise<void> {
  const entries = Math.ceil(sizing.size / BLOCK_SIZE);
  const batBytes = alignUp(entries * 4, SECTOR);
  const bat = new Uint8Array(batBytes).fill(0xff);
  const batView = new DataView(bat.buffer);
  const bitmap = new Uint8Array(SECTOR).fill(0xff);
  let next = BAT_OFFSET + batBytes;
  // each block: its sector bitmap (all set), then its data
  await writeIntoBlocks(src, UNIT, BLOCK_SIZE, opts, file, async (i) => {
    const blockAt = next;
    if (batView.getUint32(i * 4) !== BAT_UNALLOCATED) throw new DiskError('vhd: source extents out of order', 'IO');
    batView.setUint32(i * 4, blockAt / SECTOR);
    await file.pwrite(bitmap, blockAt);
    next += SECTOR + BLOCK_SIZE;
    return blockAt + SECTOR;
  });
  const footer = vhdFooter(sizing, TYPE_DYNAMIC);
  await file.pwrite(footer, 0);
  await file.pwrite(dynamicHeader(entries), DYN_HEADER_OFFSET);
  await file.pwrite(bat, BAT_OFFSET);
  await file.pwrite(footer.slice(), next);
}

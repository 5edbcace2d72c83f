/**
 * VHDX writer — dynamic VHDX, no parent, empty log.
 *
 * Spec: [MS-VHDX] "Virtual Hard Disk v2 (VHDX) File Format" §2 (v20160714); the choices qemu makes
 * in block/vhdx.c `vhdx_co_create` (default block size by disk size, 1 MiB log, 512-byte logical
 * and 4096-byte physical sectors). Little-endian; GUIDs in Windows mixed-endian byte order;
 * checksums CRC-32C over the structure with its checksum field zero (src/formats/crc32c.ts).
 * Field tables: src/formats/vhdx.ts. Layout written:
 *
 * | offset | length | what |
 * |--------|--------|------|
 * | 0      | 64 KiB | file type identifier "vhdxfile", creator "imago" (UTF-16LE) at 8 |
 * | 64 KiB | 4 KiB  | header 1: "head", checksum, sequence 1, file/data write GUIDs, log GUID 0, log version 0, version 1, log length 1 MiB, log offset 1 MiB |
 * | 128 KiB| 4 KiB  | header 2: the same with sequence 2 (the current one) |
 * | 192 KiB| 64 KiB | region table: "regi", checksum, 2 entries (BAT, metadata; both required) |
 * | 256 KiB| 64 KiB | region table copy |
 * | 1 MiB  | 1 MiB  | log (empty: zeros, a file hole) |
 * | 2 MiB  | 1 MiB  | metadata region: table ("metadata", 5 entries) then the items from +64 KiB |
 * | 3 MiB  | n MiB  | BAT: u64 entries, state bits 0..2 (6 FULLY_PRESENT, 0 NOT_PRESENT), file offset in MiB bits 20..63 |
 * | after  |        | payload blocks, 1 MiB aligned, in guest order |
 *
 * Metadata items (§2.6.2): File Parameters {block size u32, flags u32 = 0} (required), Virtual
 * Disk Size u64, Page 83 Data (a random GUID), Logical Sector Size 512, Physical Sector Size 4096
 * (these four: virtual-disk | required).
 *
 * BAT (§2.5): payload block i sits at entry i + floor(i / chunk ratio), a sector-bitmap entry
 * (NOT_PRESENT without a parent) following every chunk ratio = 2^23 × 512 / block size payload
 * entries; qemu's `vhdx_calc_bat_entries` count. Blocks with no non-zero 64 KiB unit stay
 * NOT_PRESENT (read as zeros); in an allocated block only non-zero units are written, the rest a
 * file hole. The BAT (8 bytes per block) is held in memory.
 */
import { crc32c } from '../../formats/crc32c.js';
import { DiskError, type DiskReader, type DiskWriter, type OutputTarget, type WriteOptions, type WriteResult } from '../disk.js';
import { alignUp, writeIntoBlocks } from './data-blocks.js';
import { type FileSink, withOutput } from './output-sink.js';
import { checkPowerOfTwo, WriterOptions } from './write-options.js';
import { BAT_GUID, ITEM, METADATA_GUID } from '../../formats/vhdx.js';

// node:crypto is loaded on first use: every conversion imports every writer (issue 20, CLI start)
const randomBytes = (n: number): Buffer => process.getBuiltinModule('node:crypto').randomBytes(n);

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const TiB = 1024 * GiB;

const CREATOR_OFFSET = 8;
const HEADER_OFFSETS = [64 * KiB, 128 * KiB] as const;
const HEADER_SIZE = 4 * KiB;
const REGION_TABLE_OFFSETS = [192 * KiB, 256 * KiB] as const;
const REGION_TABLE_SIZE = 64 * KiB;
const LOG_OFFSET = 1 * MiB;
const LOG_LENGTH = 1 * MiB;
const METADATA_OFFSET = 2 * MiB;
const METADATA_LENGTH = 1 * MiB;
const BAT_OFFSET = 3 * MiB;
/** items start after the 64 KiB metadata table (§2.6.1) */
const METADATA_ITEMS_OFFSET = 64 * KiB;
const LOGICAL_SECTOR = 512;
const PHYSICAL_SECTOR = 4096;
const UNIT = 64 * KiB;
const MIN_BLOCK = 1 * MiB;
const MAX_BLOCK = 256 * MiB;

/** header fields (§2.2.2) */
const H_CHECKSUM = 4;
const H_SEQUENCE = 8;
const H_FILE_WRITE_GUID = 16;
const H_DATA_WRITE_GUID = 32;
const H_LOG_VERSION = 64;
const H_VERSION = 66;
const H_LOG_LENGTH = 68;
const H_LOG_OFFSET = 72;
/** region table (§2.3) */
const R_CHECKSUM = 4;
const R_ENTRY_COUNT = 8;
const R_ENTRIES = 16;
const R_ENTRY_SIZE = 32;
const REGION_REQUIRED = 1 << 0;
/** metadata table (§2.6.1) */
const M_ENTRY_COUNT = 10;
const M_ENTRIES = 32;
const M_ENTRY_SIZE = 32;
const META_IS_VIRTUAL_DISK = 1 << 1;
const META_IS_REQUIRED = 1 << 2;
/** BAT entry states (§2.5.1.1) */
const PAYLOAD_BLOCK_FULLY_PRESENT = 6n;
const BAT_FILE_OFFSET_SHIFT = 20n;

const OPTIONS = ['block_size', 'subformat'] as const;

/** canonical GUID string → Windows mixed-endian bytes (first three groups little-endian) */
function guidBytes(s: string): Uint8Array {
  const hex = s.replace(/-/g, '');
  const b = Uint8Array.from({ length: 16 }, (_, i) => parseInt(hex.slice(i * 2, i * 2 + 2), 16));
  return Uint8Array.from([b[3]!, b[2]!, b[1]!, b[0]!, b[5]!, b[4]!, b[7]!, b[6]!, ...b.subarray(8)]);
}

/** qemu `vhdx_co_create`'s default block size for a disk of `size` bytes. */
export function defaultBlockSize(size: number): number {
  if (size > 32 * TiB) return 64 * MiB;
  if (size > 100 * GiB) return 32 * MiB;
  if (size > 1 * GiB) return 16 * MiB;
  return 8 * MiB;
}

function header(sequence: number, fileWriteGuid: Uint8Array, dataWriteGuid: Uint8Array): Uint8Array {
  const b = new Uint8Array(HEADER_SIZE);
  const v = new DataView(b.buffer);
  b.set(new TextEncoder().encode('head'), 0);
  v.setBigUint64(H_SEQUENCE, BigInt(sequence), true);
  b.set(fileWriteGuid, H_FILE_WRITE_GUID);
  b.set(dataWriteGuid, H_DATA_WRITE_GUID);
  v.setUint16(H_LOG_VERSION, 0, true);
  v.setUint16(H_VERSION, 1, true);
  v.setUint32(H_LOG_LENGTH, LOG_LENGTH, true);
  v.setBigUint64(H_LOG_OFFSET, BigInt(LOG_OFFSET), true);
  v.setUint32(H_CHECKSUM, crc32c(b), true);
  return b;
}

function regionTable(batLength: number): Uint8Array {
  const b = new Uint8Array(REGION_TABLE_SIZE);
  const v = new DataView(b.buffer);
  b.set(new TextEncoder().encode('regi'), 0);
  v.setUint32(R_ENTRY_COUNT, 2, true);
  const regions: [string, number, number][] = [
    [BAT_GUID, BAT_OFFSET, batLength],
    [METADATA_GUID, METADATA_OFFSET, METADATA_LENGTH],
  ];
  regions.forEach(([g, offset, length], i) => {
    const at = R_ENTRIES + i * R_ENTRY_SIZE;
    b.set(guidBytes(g), at);
    v.setBigUint64(at + 16, BigInt(offset), true);
    v.setUint32(at + 24, length, true);
    v.setUint32(at + 28, REGION_REQUIRED, true);
  });
  v.setUint32(R_CHECKSUM, crc32c(b), true);
  return b;
}

function metadataRegion(blockSize: number, virtualSize: number): Uint8Array {
  const b = new Uint8Array(METADATA_ITEMS_OFFSET + 64);
  const v = new DataView(b.buffer);
  b.set(new TextEncoder().encode('metadata'), 0);
  const items: [string, number, (at: number) => void][] = [
    [ITEM.fileParameters, 8, (at) => v.setUint32(at, blockSize, true)],
    [ITEM.virtualDiskSize, 8, (at) => v.setBigUint64(at, BigInt(virtualSize), true)],
    [ITEM.page83Data, 16, (at) => b.set(randomBytes(16), at)],
    [ITEM.logicalSectorSize, 4, (at) => v.setUint32(at, LOGICAL_SECTOR, true)],
    [ITEM.physicalSectorSize, 4, (at) => v.setUint32(at, PHYSICAL_SECTOR, true)],
  ];
  v.setUint16(M_ENTRY_COUNT, items.length, true);
  let itemAt = METADATA_ITEMS_OFFSET;
  items.forEach(([g, length, fill], i) => {
    const at = M_ENTRIES + i * M_ENTRY_SIZE;
    b.set(guidBytes(g), at);
    v.setUint32(at + 16, itemAt, true);
    v.setUint32(at + 20, length, true);
    v.setUint32(at + 24, g === ITEM.fileParameters ? META_IS_REQUIRED : META_IS_REQUIRED | META_IS_VIRTUAL_DISK, true);
    fill(itemAt);
    itemAt += length;
  });
  return b;
}

export const vhdxWriter: DiskWriter = {
  format: 'vhdx',
  streamable: false,
  async write(src: DiskReader, target: OutputTarget, opts: WriteOptions = {}): Promise<WriteResult> {
    const o = new WriterOptions('vhdx', opts.options, OPTIONS);
    o.string('subformat', ['dynamic'], 'dynamic');
    const virtualSize = alignUp(src.virtualSize, LOGICAL_SECTOR);
    const blockSize = checkPowerOfTwo('vhdx', 'block_size', o.size('block_size', defaultBlockSize(virtualSize)), MIN_BLOCK, MAX_BLOCK);
    if (virtualSize > 64 * TiB) throw new DiskError('VHDX disks are at most 64 TiB', 'UNSUPPORTED');
    const bytesWritten = await withOutput(target, 'vhdx', false, opts, async (out) => {
      if (out.kind === 'file') await writeFile(src, virtualSize, blockSize, out.file, opts);
    });
    opts.onProgress?.({ done: src.virtualSize, total: src.virtualSize });
    return { bytesWritten };
  },
};

async function writeFile(src: DiskReader, virtualSize: number, blockSize: number, file: FileSink, opts: WriteOptions): Promise<void> {
  const chunkRatio = (2 ** 23 * LOGICAL_SECTOR) / blockSize;
  const payloadBlocks = Math.ceil(virtualSize / blockSize);
  const entries = payloadBlocks === 0 ? 0 : payloadBlocks + Math.floor((payloadBlocks - 1) / chunkRatio);
  const batLength = Math.max(MiB, alignUp(entries * 8, MiB));
  const bat = new Uint8Array(batLength);
  const batView = new DataView(bat.buffer);

  let next = BAT_OFFSET + batLength;
  await writeIntoBlocks(src, UNIT, blockSize, opts, file, (i) => {
    const blockAt = next;
    next += blockSize;
    const entry = i + Math.floor(i / chunkRatio);
    batView.setBigUint64(entry * 8, (BigInt(blockAt / MiB) << BAT_FILE_OFFSET_SHIFT) | PAYLOAD_BLOCK_FULLY_PRESENT, true);
    return blockAt;
  });

  const ident = new Uint8Array(8 + 512);
  ident.set(new TextEncoder().encode('vhdxfile'), 0);
  const creator = 'imago';
  for (let i = 0; i < creator.length; i++) ident[CREATOR_OFFSET + i * 2] = creator.charCodeAt(i);
  const fileWriteGuid = randomBytes(16);
  const dataWriteGuid = randomBytes(16);
  await file.pwrite(bat, BAT_OFFSET);
  await file.pwrite(metadataRegion(blockSize, virtualSize), METADATA_OFFSET);
  for (const at of REGION_TABLE_OFFSETS) await file.pwrite(regionTable(batLength), at);
  await file.pwrite(header(1, fileWriteGuid, dataWriteGuid), HEADER_OFFSETS[0]);
  await file.pwrite(header(2, fileWriteGuid, dataWriteGuid), HEADER_OFFSETS[1]);
  await file.pwrite(ident, 0);
  await file.truncate(next);
}

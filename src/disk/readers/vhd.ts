/**
 * VHD reader ("vpc" in qemu): fixed disks (raw bytes then the footer) and dynamic disks (BAT).
 *
 * Spec: Microsoft "Virtual Hard Disk Image Format Specification" (2006), §"Block Allocation
 * Table and Data Blocks"; qemu block/vpc.c (`get_image_offset`). Footer and dynamic header are
 * parsed by src/formats/vhd.ts (virtual size by qemu 7.2's rule). Big-endian.
 *
 * | structure | entry | meaning |
 * |-----------|-------|---------|
 * | BAT (table offset, max table entries) | u32 | sector of the block; 0xffffffff unallocated |
 * | data block | sector bitmap (⌈blockSize/512/8⌉ rounded up to 512 bytes), then blockSize bytes | |
 *
 * The sector bitmap is ignored, as the brief allows and as qemu does for reads of a dynamic disk
 * (a present block is data; its unwritten sectors hold zeros). Invariants (DiskError): no
 * differencing disk; a fixed disk holds its virtual size before the footer; a block starts after
 * the dynamic header and inside the file. Limits: src/disk/limits.ts.
 */
import { entryError, vhdBatRule, vhdBitmapBytes, VHD_BAT_UNUSED } from '../../formats/block-map-rules.js';
import { view } from '../../formats/byte-source.js';
import { vhdFormat, type VhdDetails } from '../../formats/vhd.js';
import type { Inspection } from '../../formats/format.js';
import { BlockMapReader, type BlockMapping } from '../block-map-reader.js';
import { DiskError, type DiskReader } from '../disk.js';
import { fieldNumber, readStructure, type DiskFile } from '../disk-file.js';
import { openInspected } from '../reader-inspection.js';
import { DISK_LIMITS } from '../limits.js';
import { openRawWindow } from './raw.js';

const SECTOR = 512;
const FOOTER_BYTES = 512;

export const openVhd = (file: DiskFile): Promise<DiskReader> => openInspected<VhdDetails>(file, vhdFormat, ['DIFFERENCING_DISK'], (ins) => open(file, ins));

async function open(file: DiskFile, ins: Inspection<VhdDetails>): Promise<DiskReader> {
  const d = ins.details;
  if (ins.virtualSize === undefined) throw new DiskError('VHD has no virtual size');
  const virtualSize = fieldNumber(ins.virtualSize, 'VHD virtual size');
  if (d.diskType === 'fixed') {
    if (virtualSize > file.size - Math.min(file.size, FOOTER_BYTES - 1)) {
      throw new DiskError(`fixed VHD declares ${virtualSize} bytes but the file holds only ${file.size} bytes with its footer; the image is truncated`);
    }
    return openRawWindow(file, 'vhd', 0, virtualSize);
  }
  const blockSize = d.blockSize ?? 0;
  if (blockSize < SECTOR || (blockSize & (blockSize - 1)) !== 0) throw new DiskError(`VHD block size ${blockSize} is not a power of two ≥ 512`);
  const entries = d.maxTableEntries ?? 0;
  const needed = Math.ceil(virtualSize / blockSize);
  if (entries < needed) throw new DiskError(`VHD BAT has ${entries} entries but the ${virtualSize}-byte disk needs ${needed}`);
  if (needed > DISK_LIMITS.maxTableEntries) throw new DiskError(`VHD BAT of ${needed} entries is over the limit of ${DISK_LIMITS.maxTableEntries}`);
  const batAt = fieldNumber(d.tableOffset ?? 0n, 'VHD BAT offset');
  const bat = view(await readStructure(file, batAt, needed * 4, 'VHD block allocation table'));
  const bitmapBytes = vhdBitmapBytes(blockSize);
  const rule = vhdBatRule({ batOffset: batAt, batBytes: needed * 4, blockSize });
  const map = {
    format: 'vhd' as const,
    virtualSize,
    blockSize,
    async lookup(block: number): Promise<BlockMapping> {
      if (block >= needed) throw new DiskError(`VHD block ${block} is outside the BAT`);
      const e = bat.getUint32(block * 4);
      if (e === VHD_BAT_UNUSED) return { kind: 'hole' };
      // the rule inspection applies (block-map-rules.ts): a `safe` image is one this reader can read
      const err = entryError(rule.check(bat, block * 4, block), rule, file.size);
      if (err !== undefined) throw new DiskError(`VHD block ${block}: ${err}`);
      return { kind: 'data', fileOffset: e * SECTOR + bitmapBytes };
    },
    async close() {
      await file.close?.();
    },
  };
  return new BlockMapReader(map, file);
}

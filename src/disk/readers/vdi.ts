/**
 * VDI reader (VirtualBox), dynamic and static images.
 *
 * Spec: VirtualBox src/VBox/Storage/VDICore.h; qemu block/vdi.c (`vdi_co_preadv`). The header
 * is parsed by src/formats/vdi.ts. Little-endian.
 *
 * | structure | entry | meaning |
 * |-----------|-------|---------|
 * | block map (blockMapOffset, blocksInImage entries) | u32 | index of the block in the data area; 0xffffffff free (unallocated), 0xfffffffe discarded (zero) |
 * | data area (dataOffset) | blockSize bytes per block | block N at dataOffset + N × blockSize |
 *
 * Invariants (DiskError): no parent/link (differencing), no per-block extra data (qemu refuses it
 * too), a mapped index below blocksInImage whose block starts inside the file.
 */
import { entryError, vdiMapRule, VDI_BLOCK_DISCARDED, VDI_BLOCK_FREE } from '../../formats/block-map-rules.js';
import { view } from '../../formats/byte-source.js';
import { vdiFormat, type VdiDetails } from '../../formats/vdi.js';
import type { Inspection } from '../../formats/format.js';
import { BlockMapReader, type BlockMapping } from '../block-map-reader.js';
import { DiskError, type DiskReader } from '../disk.js';
import { fieldNumber, readStructure, type DiskFile } from '../disk-file.js';
import { openInspected } from '../reader-inspection.js';
import { DISK_LIMITS } from '../limits.js';

export const openVdi = (file: DiskFile): Promise<DiskReader> => openInspected<VdiDetails>(file, vdiFormat, ['DIFFERENCING_DISK'], (ins) => open(file, ins));

async function open(file: DiskFile, ins: Inspection<VdiDetails>): Promise<DiskReader> {
  const d = ins.details;
  if (d.blockExtra !== 0) throw new DiskError(`VDI blocks carry ${d.blockExtra} bytes of extra data, which qemu does not support either`, 'UNSUPPORTED');
  const virtualSize = fieldNumber(ins.virtualSize ?? 0n, 'VDI virtual size');
  const blockSize = d.blockSize;
  if (blockSize <= 0) throw new DiskError(`VDI block size ${blockSize} is not valid`);
  const blocks = d.blocksInImage;
  if (blocks * blockSize < virtualSize) throw new DiskError(`VDI has ${blocks} blocks of ${blockSize} bytes, too few for ${virtualSize} bytes`);
  if (blocks > DISK_LIMITS.maxTableEntries) throw new DiskError(`VDI block map of ${blocks} entries is over the limit of ${DISK_LIMITS.maxTableEntries}`);
  const bmap = view(await readStructure(file, d.blockMapOffset, blocks * 4, 'VDI block map'));
  if (d.dataOffset < d.blockMapOffset + blocks * 4) throw new DiskError(`VDI data area at ${d.dataOffset} overlaps the block map`);
  const rule = vdiMapRule({ dataOffset: d.dataOffset, blockSize, blocks });
  const map = {
    format: 'vdi' as const,
    virtualSize,
    blockSize,
    async lookup(block: number): Promise<BlockMapping> {
      if (block >= blocks) throw new DiskError(`VDI block ${block} is outside the block map`);
      const e = bmap.getUint32(block * 4, true);
      if (e === VDI_BLOCK_FREE) return { kind: 'hole' };
      if (e === VDI_BLOCK_DISCARDED) return { kind: 'zero' };
      // the rule inspection applies (block-map-rules.ts): a `safe` image is one this reader can read
      const err = entryError(rule.check(bmap, block * 4, block), rule, file.size);
      if (err !== undefined) throw new DiskError(`VDI block ${block}: ${err}`);
      return { kind: 'data', fileOffset: d.dataOffset + e * blockSize };
    },
    async close() {
      await file.close?.();
    },
  };
  return new BlockMapReader(map, file);
}

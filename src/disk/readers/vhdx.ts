/**
 * VHDX reader.
 *
 * Spec: [MS-VHDX] §2.5 (BAT), §2.5.1 (payload block states), §2.6.2.1 (chunk ratio); qemu
 * block/vhdx.c (`vhdx_block_translate`). Headers, regions and metadata are parsed by
 * src/formats/vhdx.ts. Little-endian.
 *
 * | structure | entry | meaning |
 * |-----------|-------|---------|
 * | BAT region | u64 | bits 0..2 state, bits 20..63 file offset in MiB |
 * | BAT layout | — | after every `chunkRatio` payload entries comes one sector-bitmap entry; chunkRatio = 2^23 × logicalSectorSize / blockSize |
 *
 * Payload states: 0 NOT_PRESENT, 1 UNDEFINED, 3 UNMAPPED → hole; 2 ZERO → zero; 6 FULLY_PRESENT
 * and 7 PARTIALLY_PRESENT (a differencing disk's; treated as data) → data. Others are invalid.
 * Invariants (DiskError): no parent; an empty log (a log to replay means the image was not closed
 * cleanly, and reading it without replay would return stale data); payload blocks after the first
 * MiB and inside the file. Limits: src/disk/limits.ts.
 */
import { entryError, vhdxBatRule, vhdxWholeBlock } from '../../formats/block-map-rules.js';
import { view } from '../../formats/byte-source.js';
import { vhdxFormat, type VhdxDetails } from '../../formats/vhdx.js';
import type { Inspection } from '../../formats/format.js';
import { BlockMapReader, type BlockMapping } from '../block-map-reader.js';
import { DiskError, type DiskReader } from '../disk.js';
import { fieldNumber, readStructure, type DiskFile } from '../disk-file.js';
import { enforceChecks, openInspected } from '../reader-inspection.js';
import { DISK_LIMITS } from '../limits.js';

const MiB = 1024 * 1024;
const STATE_MASK = 7n;
const OFFSET_SHIFT = 20n;
const NOT_PRESENT = 0;
const UNDEFINED = 1;
const ZERO = 2;
const UNMAPPED = 3;
const FULLY_PRESENT = 6;
const PARTIALLY_PRESENT = 7;

export const openVhdx = (file: DiskFile): Promise<DiskReader> => openInspected<VhdxDetails>(file, vhdxFormat, ['DIFFERENCING_DISK'], (ins) => open(file, ins));

async function open(file: DiskFile, ins: Inspection<VhdxDetails>): Promise<DiskReader> {
  const d = ins.details;
  if (d.logDirty) {
    throw new DiskError(
      'VHDX has a non-empty log that must be replayed (the image was not closed cleanly); open it once read-write in Hyper-V or qemu (e.g. "qemu-img check -r all") and try again',
      'UNSUPPORTED',
    );
  }
  enforceChecks(vhdxFormat, ins, ['UNKNOWN_FEATURES']);
  const virtualSize = fieldNumber(ins.virtualSize ?? 0n, 'VHDX virtual size');
  const blockSize = d.blockSize ?? 0;
  const sector = d.logicalSectorSize ?? 0;
  if (blockSize < MiB || (blockSize & (blockSize - 1)) !== 0 || (sector !== 512 && sector !== 4096)) {
    throw new DiskError(`VHDX block size ${blockSize} / logical sector size ${sector} is not valid`);
  }
  const chunkRatio = (2 ** 23 * sector) / blockSize;
  const payloadBlocks = Math.ceil(virtualSize / blockSize);
  const entries = payloadBlocks + Math.floor(Math.max(0, payloadBlocks - 1) / chunkRatio);
  if (entries > DISK_LIMITS.maxTableEntries) throw new DiskError(`VHDX BAT of ${entries} entries is over the limit of ${DISK_LIMITS.maxTableEntries}`);
  const region = d.regions.find((r) => r.name === 'BAT');
  if (!region) throw new DiskError('VHDX has no BAT region');
  if (region.length < entries * 8) throw new DiskError(`VHDX BAT region of ${region.length} bytes cannot hold ${entries} entries`);
  const batAt = fieldNumber(region.offset, 'VHDX BAT offset');
  const bat = view(await readStructure(file, batAt, entries * 8, 'VHDX BAT'));
  const rule = vhdxBatRule(batAt, region.length);
  const map = {
    format: 'vhdx' as const,
    virtualSize,
    blockSize,
    async lookup(block: number): Promise<BlockMapping> {
      const index = block + Math.floor(block / chunkRatio);
      if (block >= payloadBlocks || index >= entries) throw new DiskError(`VHDX block ${block} is outside the BAT`);
      const e = bat.getBigUint64(index * 8, true);
      const state = Number(e & STATE_MASK);
      switch (state) {
        case NOT_PRESENT:
        case UNDEFINED:
        case UNMAPPED:
          return { kind: 'hole' };
        case ZERO:
          return { kind: 'zero' };
        case FULLY_PRESENT:
        case PARTIALLY_PRESENT: {
          // the rule inspection applies (block-map-rules.ts): a `safe` image is one this reader can read
          const err = entryError(vhdxWholeBlock(rule.check(bat, index * 8, index), blockSize), rule, file.size, blockSize);
          if (err !== undefined) throw new DiskError(`VHDX block ${block}: ${err}`);
          return { kind: 'data', fileOffset: fieldNumber((e >> OFFSET_SHIFT) * BigInt(MiB), 'VHDX payload block offset') };
        }
        default:
          throw new DiskError(`VHDX BAT entry of block ${block} has the invalid state ${state}`);
      }
    },
    async close() {
      await file.close?.();
    },
  };
  return new BlockMapReader(map, file);
}

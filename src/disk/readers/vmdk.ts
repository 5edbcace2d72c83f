/**
 * VMDK reader: hosted sparse extents (monolithicSparse, streamOptimized) and, only when the caller
 * names a directory the extent files may come from, descriptor-based disks (monolithicFlat,
 * twoGbMaxExtent*, vmfs flat) whose extents are FLAT, SPARSE or ZERO.
 *
 * Spec: VMware "Virtual Disk Format 5.0" §"Hosted Sparse Extent Header", §"Grain Directories
 * and Grain Tables", §"Stream-Optimized Compressed Sparse Extents"; qemu block/vmdk.c
 * (`get_cluster_offset`, `vmdk_read_extent`). The header is parsed by src/formats/vmdk.ts (which
 * also takes the footer's copy when gdOffset is GD_AT_END). Little-endian; offsets in sectors.
 *
 * | structure | entry | meaning |
 * |-----------|-------|---------|
 * | grain directory (gdOffset) | u32 | sector of a grain table; 0 = none (its grains are unallocated) |
 * | grain table (numGTEsPerGT entries) | u32 | sector of a grain; 0 unallocated; 1 zeroed grain (flag bit 2) |
 * | grain marker (compressed grains with flag bit 17) | lba u64 @0, size u32 @8, deflate data @12 | |
 *
 * Invariants (DiskError): no parent; grain tables and grains outside the header sector and
 * starting inside the file; a marker's lba names the grain that points at it; a compressed grain
 * decodes to at most one grain (and covers the disk up to its end); descriptor extent files are
 * plain names inside the allowed directory. Limits: src/disk/limits.ts.
 */
import { basename, join } from 'node:path';
import { entryError, vmdkGdRule, vmdkGtRule } from '../../formats/block-map-rules.js';
import { view } from '../../formats/byte-source.js';
import { vmdkFormat, type VmdkDetails } from '../../formats/vmdk.js';
import type { Inspection } from '../../formats/format.js';
import { FileSource } from '../../io/file-source.js';
import { BlockMapReader, type BlockMapping } from '../block-map-reader.js';
import { ConcatReader, type DiskPart } from '../concat-reader.js';
import { DiskError, type DiskReader } from '../disk.js';
import { fieldNumber, readStructure, type DiskFile } from '../disk-file.js';
import { openInspected } from '../reader-inspection.js';
import { DISK_LIMITS } from '../limits.js';
import { LruCache } from '../lru-cache.js';
import { inflateZlibUnit } from '../unit-decoder.js';
import { openRawWindow } from './raw.js';

const SECTOR = 512;
const GTE_ZEROED = 1;
const MARKER_O_LBA = 0;
const MARKER_O_SIZE = 8;
const MARKER_HEADER_BYTES = 12;

export interface VmdkReaderOptions {
  /**
   * Directory the extent files of a descriptor-based VMDK (monolithicFlat, twoGbMaxExtent*) are
   * read from. Absent (the default), such a VMDK is refused: its descriptor names host files.
   */
  allowExtentDir?: string;
}

export async function openVmdk(file: DiskFile, opts: VmdkReaderOptions = {}): Promise<DiskReader> {
  return openInspected<VmdkDetails>(file, vmdkFormat, ['BACKING_FILE'], (ins) => open(file, ins, opts));
}

async function open(file: DiskFile, ins: Inspection<VmdkDetails>, opts: VmdkReaderOptions): Promise<DiskReader> {
  const d = ins.details;
  if (d.container === 'sparse') return new BlockMapReader(await sparseMap(file, d), file);
  if (d.container === 'descriptor') {
    if (opts.allowExtentDir === undefined) {
      throw new DiskError(
        `VMDK is a text descriptor (${d.createType ?? 'no createType'}) whose extents are other files; pass allowExtentDir to read them from one directory, or convert to streamOptimized`,
        'UNSAFE_IMAGE',
      );
    }
    const reader = await descriptorDisk(d, opts.allowExtentDir);
    await file.close?.();
    return reader;
  }
  throw new DiskError(`VMDK ${d.container} container is not supported; convert it to streamOptimized or monolithicSparse`, 'UNSUPPORTED');
}

async function sparseMap(file: DiskFile, d: VmdkDetails) {
  const capacity = (d.capacitySectors ?? 0) * SECTOR;
  const grainBytes = (d.grainSizeSectors ?? 0) * SECTOR;
  const gtes = d.numGtesPerGt ?? 0;
  if (grainBytes <= 0 || gtes <= 0) throw new DiskError('VMDK sparse header has no grain size or grain table size');
  const compressed = d.compressAlgorithm === 'deflate' || (d.flags ?? []).includes('compressedGrains');
  const markers = (d.flags ?? []).includes('markers');
  const zeroGrains = (d.flags ?? []).includes('zeroedGrainGtes');
  if (compressed && grainBytes > DISK_LIMITS.maxDecodedUnitBytes) {
    throw new DiskError(`VMDK compressed grains of ${grainBytes} bytes are over the limit of ${DISK_LIMITS.maxDecodedUnitBytes}`, 'UNSUPPORTED');
  }
  if (d.grainDirectoryOffset === undefined || d.grainDirectoryOffset < 0)
    throw new DiskError('VMDK grain directory offset is missing (streamOptimized footer not found)');
  const gtCoverage = gtes * grainBytes;
  const gdEntries = Math.ceil(capacity / gtCoverage);
  if (gdEntries > DISK_LIMITS.maxTableEntries)
    throw new DiskError(`VMDK grain directory of ${gdEntries} entries is over the limit of ${DISK_LIMITS.maxTableEntries}`);
  const gdAt = d.grainDirectoryOffset * SECTOR;
  if (gdEntries > 0 && gdAt < SECTOR) throw new DiskError(`VMDK grain directory at sector ${d.grainDirectoryOffset} points into the header`);
  const gdView = view(await readStructure(file, gdAt, gdEntries * 4, 'VMDK grain directory'));
  const gd = Array.from({ length: gdEntries }, (_, i) => gdView.getUint32(i * 4, true));
  const gdRule = vmdkGdRule(gtes, gdAt);
  const gtCache = new LruCache<number, DataView>(DISK_LIMITS.tableCacheBytes, (v) => v.byteLength);
  const grainOffset = (sector: number, what: string): number => {
    const at = sector * SECTOR;
    if (at < SECTOR) throw new DiskError(`VMDK ${what} at sector ${sector} points into the header`);
    if (at >= file.size)
      throw new DiskError(`VMDK ${what} at sector ${sector} lies past the end of the ${file.size}-byte file; the image is truncated or crafted`);
    return at;
  };
  return {
    format: 'vmdk' as const,
    virtualSize: capacity,
    blockSize: grainBytes,
    async lookup(grain: number): Promise<BlockMapping> {
      const gdIndex = Math.floor(grain / gtes);
      const gtIndex = grain - gdIndex * gtes;
      const gtSector = gd[gdIndex];
      if (gtSector === undefined) throw new DiskError(`VMDK grain ${grain} is outside the grain directory`);
      if (gtSector === 0) return { kind: 'hole', blocks: gtes - gtIndex };
      // the rules inspection applies (block-map-rules.ts): a `safe` image is one this reader can read
      const gdErr = entryError(gdRule.check(gdView, gdIndex * 4, gdIndex), gdRule, file.size);
      if (gdErr !== undefined) throw new DiskError(`VMDK grain table ${gdIndex}: ${gdErr}`);
      const gtAt = grainOffset(gtSector, `grain table ${gdIndex}`);
      const gt = await gtCache.get(gtAt, async () => view(await readStructure(file, gtAt, gtes * 4, `VMDK grain table ${gdIndex}`)));
      const gte = gt.getUint32(gtIndex * 4, true);
      if (gte === 0) return { kind: 'hole' };
      if (gte === GTE_ZEROED && zeroGrains) return { kind: 'zero' };
      const gtRule = vmdkGtRule(gtAt);
      const gtErr = entryError(gtRule.check(gt, gtIndex * 4, gtIndex), gtRule, file.size);
      if (gtErr !== undefined) throw new DiskError(`VMDK grain ${grain}: ${gtErr}`);
      const at = grainOffset(gte, `grain ${grain}`);
      if (!compressed) return { kind: 'data', fileOffset: at };
      const what = `VMDK compressed grain ${grain} (sector ${gte})`;
      const needed = Math.min(grainBytes, capacity - grain * grainBytes);
      return {
        kind: 'decoded',
        key: at,
        at: 0,
        decode: async () => {
          let data: Uint8Array;
          if (markers) {
            const m = view(await readStructure(file, at, MARKER_HEADER_BYTES, `${what} marker`));
            const lba = m.getBigUint64(MARKER_O_LBA, true);
            const size = m.getUint32(MARKER_O_SIZE, true);
            if (lba !== BigInt(grain) * BigInt(grainBytes / SECTOR)) throw new DiskError(`${what}: its marker names sector ${lba}, not the grain's`);
            if (size === 0 || size > grainBytes * 2 + 1024) throw new DiskError(`${what}: marker size ${size} is not plausible for a ${grainBytes}-byte grain`);
            data = await readStructure(file, at + MARKER_HEADER_BYTES, size, what);
          } else {
            data = await file.read(at, Math.min(grainBytes, file.size - at));
          }
          const out = inflateZlibUnit(data, grainBytes, what);
          if (out.length < needed) throw new DiskError(`${what} decodes to ${out.length} bytes, less than the ${needed} bytes of the disk it holds`);
          return out;
        },
      };
    },
    async close() {
      await file.close?.();
    },
  };
}

/** A descriptor's extents, each from a plain file name inside `dir`. */
async function descriptorDisk(d: VmdkDetails, dir: string): Promise<DiskReader> {
  const parts: DiskPart[] = [];
  let at = 0;
  try {
    for (const e of d.extents) {
      const bytes = fieldNumber(BigInt(e.sectors) * BigInt(SECTOR), 'VMDK extent size');
      let reader: DiskReader;
      if (e.type === 'ZERO') {
        reader = zeroReader(bytes);
      } else {
        const name = e.file ?? '';
        if (name === '' || name !== basename(name) || name === '.' || name === '..') {
          throw new DiskError(`VMDK extent file ${JSON.stringify(name)} is not a plain file name inside ${dir}`, 'UNSAFE_IMAGE');
        }
        const f = await FileSource.open(join(dir, name)).catch((err: Error) => {
          throw new DiskError(`VMDK extent file ${JSON.stringify(name)} cannot be opened in ${dir}: ${err.message}`, 'IO');
        });
        if (e.type === 'FLAT' || e.type === 'VMFS') {
          // bytes past the end of the extent file read zeros
          reader = openRawWindow(f, 'vmdk', fieldNumber(BigInt(e.offset ?? 0) * BigInt(SECTOR), 'VMDK extent offset'), bytes);
        } else if (e.type === 'SPARSE') {
          reader = await openVmdk(f);
          if (reader.virtualSize < bytes) {
            await reader.close();
            throw new DiskError(`VMDK sparse extent ${name} holds ${reader.virtualSize} bytes, less than the ${bytes} its descriptor line declares`);
          }
        } else {
          await f.close();
          throw new DiskError(`VMDK extent type ${e.type} is not supported`, 'UNSUPPORTED');
        }
      }
      parts.push({ reader, offset: at, length: bytes });
      at += bytes;
    }
  } catch (e) {
    for (const p of parts) await p.reader.close();
    throw e;
  }
  if (parts.length === 0) throw new DiskError('VMDK descriptor has no extents');
  return new ConcatReader('vmdk', parts);
}

function zeroReader(size: number): DiskReader {
  return {
    format: 'vmdk',
    virtualSize: size,
    async read(_offset, length) {
      return new Uint8Array(length);
    },
    async *extents(offset = 0, length = size - offset) {
      if (length > 0) yield { offset, length, kind: 'zero' as const };
    },
    async close() {},
  };
}

/**
 * QED reader (QEMU Enhanced Disk; deprecated, read only so it can be converted away).
 *
 * Spec: qemu docs/interop/qed_spec.txt; qemu block/qed-cluster.c. Little-endian.
 *
 * | offset | size | field |
 * |--------|------|-------|
 * | 0  | 4 | magic "QED\0" |
 * | 4  | 4 | cluster_size (power of two, 4 KiB..64 MiB) |
 * | 8  | 4 | table_size (clusters per L1/L2 table, 1..16) |
 * | 12 | 4 | header_size (clusters) |
 * | 16 | 8 | features: bit 0 backing file |
 * | 40 | 8 | l1_table_offset |
 * | 48 | 8 | image_size |
 *
 * L1 and L2 tables are `table_size` clusters of u64 offsets; 0 = unallocated, 1 = zero cluster.
 * Invariants (DiskError): no backing file; tables and data clusters cluster aligned, after the
 * header, inside the file; table bytes within DISK_LIMITS.maxSecondLevelTableBytes.
 */
import { bytesEqual, view } from '../../formats/byte-source.js';
import { BlockMapReader, type BlockMapping } from '../block-map-reader.js';
import { DiskError, type DiskReader } from '../disk.js';
import { fieldNumber, owning, readStructure, type DiskFile } from '../disk-file.js';
import { DISK_LIMITS } from '../limits.js';
import { LruCache } from '../lru-cache.js';

const HEADER_BYTES = 56 + 8;
const O_CLUSTER_SIZE = 4;
const O_TABLE_SIZE = 8;
const O_HEADER_SIZE = 12;
const O_FEATURES = 16;
const O_L1_OFFSET = 40;
const O_IMAGE_SIZE = 48;
const FEATURE_BACKING = 1n;
const MIN_CLUSTER = 4096;
const MAX_CLUSTER = 64 * 1024 * 1024;
const MAX_TABLE_CLUSTERS = 16;
const ZERO_CLUSTER = 1n;

export async function openQed(file: DiskFile): Promise<DiskReader> {
  return owning(file, () => open(file));
}

async function open(file: DiskFile): Promise<DiskReader> {
  const head = await readStructure(file, 0, HEADER_BYTES, 'QED header');
  if (!bytesEqual(head, 0, 'QED\0')) throw new DiskError('not a QED image (bad magic)');
  const h = view(head);
  const cluster = h.getUint32(O_CLUSTER_SIZE, true);
  const tableClusters = h.getUint32(O_TABLE_SIZE, true);
  const headerClusters = h.getUint32(O_HEADER_SIZE, true);
  if (cluster < MIN_CLUSTER || cluster > MAX_CLUSTER || (cluster & (cluster - 1)) !== 0)
    throw new DiskError(`QED cluster size ${cluster} is not a power of two in 4 KiB..64 MiB`);
  if (tableClusters < 1 || tableClusters > MAX_TABLE_CLUSTERS) throw new DiskError(`QED table size ${tableClusters} clusters is not 1..16`);
  if (headerClusters < 1 || headerClusters * cluster > file.size) throw new DiskError(`QED header size ${headerClusters} clusters is not valid for this file`);
  if (h.getBigUint64(O_FEATURES, true) & FEATURE_BACKING) throw new DiskError('QED image has a backing file; images must be self-contained', 'UNSAFE_IMAGE');
  const tableBytes = tableClusters * cluster;
  if (tableBytes > DISK_LIMITS.maxSecondLevelTableBytes)
    throw new DiskError(`QED tables of ${tableBytes} bytes are over the limit of ${DISK_LIMITS.maxSecondLevelTableBytes}`);
  const perTable = tableBytes / 8;
  const virtualSize = fieldNumber(h.getBigUint64(O_IMAGE_SIZE, true), 'QED image size');
  if (virtualSize / cluster / perTable > perTable) throw new DiskError(`QED image size ${virtualSize} is larger than its tables can address`);
  const headerEnd = headerClusters * cluster;
  const checkCluster = (offset: number, what: string) => {
    if (offset % cluster !== 0) throw new DiskError(`QED ${what} offset ${offset} is not cluster aligned`);
    if (offset < headerEnd) throw new DiskError(`QED ${what} at ${offset} points into the header`);
    if (offset >= file.size) throw new DiskError(`QED ${what} at ${offset} lies past the end of the ${file.size}-byte file`);
  };
  const l1At = fieldNumber(h.getBigUint64(O_L1_OFFSET, true), 'QED L1 offset');
  checkCluster(l1At, 'L1 table');
  const l1Needed = Math.ceil(virtualSize / cluster / perTable);
  const l1 = view(await readStructure(file, l1At, l1Needed * 8, 'QED L1 table'));
  const l2Cache = new LruCache<number, DataView>(DISK_LIMITS.tableCacheBytes, (v) => v.byteLength);
  const map = {
    format: 'qed' as const,
    virtualSize,
    blockSize: cluster,
    async lookup(block: number): Promise<BlockMapping> {
      const l1Index = Math.floor(block / perTable);
      const l2Index = block - l1Index * perTable;
      if (l1Index >= l1Needed) throw new DiskError(`QED cluster ${block} is outside the L1 table`);
      const l2At = fieldNumber(l1.getBigUint64(l1Index * 8, true), 'QED L1 entry');
      if (l2At === 0) return { kind: 'hole', blocks: perTable - l2Index };
      if (l2At === l1At) throw new DiskError(`QED L1 entry ${l1Index} points at the L1 table itself`);
      checkCluster(l2At, 'L2 table');
      const l2 = await l2Cache.get(l2At, async () => view(await readStructure(file, l2At, tableBytes, 'QED L2 table')));
      const e = l2.getBigUint64(l2Index * 8, true);
      if (e === 0n) return { kind: 'hole' };
      if (e === ZERO_CLUSTER) return { kind: 'zero' };
      const at = fieldNumber(e, 'QED L2 entry');
      checkCluster(at, `data cluster ${block}`);
      if ((at >= l1At && at < l1At + tableBytes) || (at >= l2At && at < l2At + tableBytes))
        throw new DiskError(`QED data cluster ${block} at ${at} overlaps a table`);
      return { kind: 'data', fileOffset: at };
    },
    async close() {
      await file.close?.();
    },
  };
  return new BlockMapReader(map, file);
}

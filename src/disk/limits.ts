/**
 * Limits of the disk readers, in one place. Everything here is ours, not the specs': the specs
 * allow far larger values, which is exactly what a hostile image uses to make a reader allocate
 * without bound or spin. Over a limit is a DiskError, never a silent truncation.
 */
import { DEFAULT_LIMITS } from '../formats/limits.js';

const KiB = 1024;
const MiB = 1024 * KiB;

export interface DiskLimits {
  /** Entries of a top-level table (qcow2/QED L1, VMDK grain directory, VHD/VHDX BAT, VDI block map) read at open. */
  readonly maxTableEntries: number;
  /** Bytes of second-level tables (qcow2/QED L2, VMDK grain tables) held in the LRU cache. */
  readonly tableCacheBytes: number;
  /** Bytes of decompressed clusters / grains held in the LRU cache. */
  readonly decodedCacheBytes: number;
  /** Largest unit we decompress into memory (qcow2 cluster ≤ 2 MiB; a VMDK grain may claim 1 GiB). */
  readonly maxDecodedUnitBytes: number;
  /** Largest second-level table we read in one piece (QED: 16 clusters of 64 MiB would be 1 GiB). */
  readonly maxSecondLevelTableBytes: number;
  /** Largest single `read()` a caller may ask for. */
  readonly maxReadBytes: number;
  /** qcow2 internal snapshots walked when looking one up. */
  readonly maxSnapshots: number;
  /** Bytes of a VMDK descriptor read (monolithicFlat / split extents). */
  readonly maxDescriptorBytes: number;
  /** Tar members walked inside an OVA. */
  readonly maxOvaMembers: number;
}

export const DISK_LIMITS: DiskLimits = Object.freeze({
  maxTableEntries: DEFAULT_LIMITS.maxTableEntries,
  tableCacheBytes: 32 * MiB,
  decodedCacheBytes: 16 * MiB,
  maxDecodedUnitBytes: 16 * MiB,
  maxSecondLevelTableBytes: 64 * MiB,
  maxReadBytes: 256 * MiB,
  maxSnapshots: DEFAULT_LIMITS.maxSnapshots,
  maxDescriptorBytes: DEFAULT_LIMITS.maxDescriptorBytes,
  maxOvaMembers: DEFAULT_LIMITS.maxOvaMembers,
});

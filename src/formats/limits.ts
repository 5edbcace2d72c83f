/**
 * Limits of the format engine: one typed object with documented defaults (docs/FORMATS.md).
 * Everything here is ours, not the specs': the specs allow far larger values, which is exactly
 * what a hostile image uses to make a parser allocate or loop without end.
 */
export interface InspectLimits {
  /** Largest virtual size accepted (default 64 TiB). Over it: VIRTUAL_SIZE_LIMIT. */
  maxVirtualSize: bigint;
  /** Nested compression wrappers peeled at most (default 3: e.g. xz inside gz inside zstd). */
  maxWrapperDepth: number;
  /** Bytes one compression wrapper may expand to (default 4 TiB). */
  maxDecompressedBytes: number;
  /** Expansion ratio a wrapper may reach once past `ratioFloorBytes` (default 5000:1). */
  maxCompressionRatio: number;
  /** Output below this size never trips the ratio limits (default 64 MiB). */
  ratioFloorBytes: number;
  /**
   * The zero-bomb rule: a wrapper whose output is nearly all zeros (`zeroBombShare`) and expands
   * more than this ratio past `ratioFloorBytes` is a DECOMPRESSION_BOMB (default 100:1; 0 = off).
   * Lower than `maxCompressionRatio` because deflate cannot exceed ~1030:1 and `gzip -1` of zeros
   * is 229:1: without it a gzip of zeros could never be refused.
   */
  zeroBombRatio: number;
  /** Share of a wrapper's output in all-zero 4 KiB blocks that counts as "nearly all zeros" (default 0.99). */
  zeroBombShare: number;
  /** Bytes kept from the start of a stream (default 1 MiB). */
  headBytes: number;
  /** Bytes kept from the end of a stream (default 64 KiB). */
  tailBytes: number;
  /** Bytes of declared capture regions a stream inspection may hold (default 16 MiB). */
  maxCaptureBytes: number;
  /** Entries a format table (L1, BAT, grain directory, partition table) may declare for us to read (default 4 Mi). */
  maxTableEntries: number;
  /**
   * Bytes of block-mapping tables (qcow2 L2 and refcount tables, grain tables, BATs, block maps)
   * one inspection scans entry by entry (default 256 MiB: the L2 tables of 2 TiB of 64 KiB
   * clusters). Scanning holds no table in memory; the limit bounds the work. Over it: OVER_LIMIT.
   */
  maxTableScanBytes: number;
  /** Size of a text descriptor (vmdk descriptor, OVF) we read (default 1 MiB). */
  maxDescriptorBytes: number;
  /** Members of an OVA (tar) we walk (default 1024). */
  maxOvaMembers: number;
  /** qcow2 internal snapshots we accept (default 65536, qemu's own limit). */
  maxSnapshots: number;
}

const KiB = 1024;
const MiB = 1024 * KiB;
const TiB = 1024 ** 4;

export const DEFAULT_LIMITS: Readonly<InspectLimits> = Object.freeze({
  maxVirtualSize: 64n * BigInt(TiB),
  maxWrapperDepth: 3,
  maxDecompressedBytes: 4 * TiB,
  maxCompressionRatio: 5000,
  ratioFloorBytes: 64 * MiB,
  zeroBombRatio: 100,
  zeroBombShare: 0.99,
  headBytes: 1 * MiB,
  tailBytes: 64 * KiB,
  maxCaptureBytes: 16 * MiB,
  maxTableEntries: 4 * MiB,
  maxTableScanBytes: 256 * MiB,
  maxDescriptorBytes: 1 * MiB,
  maxOvaMembers: 1024,
  maxSnapshots: 65536,
});

export function limitsWith(overrides: Partial<InspectLimits> = {}): InspectLimits {
  return { ...DEFAULT_LIMITS, ...overrides };
}

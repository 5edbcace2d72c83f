/**
 * The qcow2 on-disk layout, one place for the parser (qcow2.ts), the block-map rules, the reader
 * (src/disk/readers/qcow2.ts) and the writer (src/disk/writers/qcow2.ts).
 *
 * Spec: qemu docs/interop/qcow2.rst. All fields big-endian; bit numbers are the spec's own,
 * zero-based from the least significant bit. The field table with what each user reads is in
 * qcow2.ts (parser) and in the writer (the values it writes).
 */
export const QCOW2 = {
  /** "QFI\xfb" as a big-endian u32 at offset 0 */
  magic: 0x514649fb,
  /** header field offsets */
  header: {
    magic: 0,
    version: 4,
    backingFileOffset: 8,
    backingFileSize: 16,
    clusterBits: 20,
    size: 24,
    cryptMethod: 32,
    l1Size: 36,
    l1TableOffset: 40,
    refcountTableOffset: 48,
    refcountTableClusters: 56,
    nbSnapshots: 60,
    snapshotsOffset: 64,
    /** v3 fields from here */
    incompatibleFeatures: 72,
    compatibleFeatures: 80,
    autoclearFeatures: 88,
    refcountOrder: 96,
    headerLength: 100,
    /** only when header_length > 104 */
    compressionType: 104,
  },
  /** v2 headers end here (and header extensions begin) */
  v2HeaderLength: 72,
  /** the shortest v3 header */
  v3MinHeaderLength: 104,
  minClusterBits: 9,
  maxClusterBits: 21,
  /** refcount_order ≤ 6: at most 64-bit refcounts */
  maxRefcountOrder: 6,
  /** incompatible_features bit numbers */
  incompatible: { dirty: 0, corrupt: 1, externalDataFile: 2, compressionType: 3, extendedL2: 4 },
  /** compatible_features bit numbers */
  compatible: { lazyRefcounts: 0 },
  /** autoclear_features bit numbers */
  autoclear: { bitmaps: 0, rawExternalData: 1 },
  /** compression_type byte values */
  compression: { zlib: 0, zstd: 1 },
  /** header extension types ({type u32, length u32, data padded to 8}); type 0 ends them */
  extension: {
    end: 0x00000000,
    backingFormat: 0xe2792aca,
    featureNameTable: 0x6803f857,
    bitmaps: 0x23852875,
    fullDiskEncryptionHeader: 0x0537be77,
    externalDataFile: 0x44415441,
  },
  /** L1, L2 and refcount table entries (u64) */
  entry: {
    bytes: 8,
    /** extended L2: an entry plus a u64 subcluster bitmap */
    extendedL2Bytes: 16,
    /** bits 9..55: the host offset of an L2 table, a data cluster or a refcount block */
    offsetMask: 0x00fffffffffffe00n,
    /** L2 bit 0: the cluster reads as zeros */
    zero: 1n,
    /** L2 bit 62: a compressed cluster (see compressedSizeShift) */
    compressed: 1n << 62n,
    /** L1/L2 bit 63: refcount is exactly 1 (the cluster may be written in place) */
    copied: 1n << 63n,
  },
  /** subclusters per cluster with extended L2: bitmap bits 0..31 allocated, 32..63 reads zero */
  subclusters: 32,
  /** compressed cluster sizes count 512-byte sectors */
  sectorBytes: 512,
  /** snapshot table entry: 40-byte header, extra data, id, name, padded to 8 */
  snapshot: {
    headerBytes: 40,
    l1TableOffset: 0,
    l1Size: 8,
    idSize: 12,
    nameSize: 14,
    extraDataSize: 36,
    /** qemu refuses more extra data than this */
    maxExtraDataSize: 1024,
    /** offset of the u64 virtual disk size inside the extra data */
    extraDiskSize: 8,
  },
} as const;

/**
 * A compressed L2 entry holds, with x = 62 − (cluster_bits − 8), the host byte offset in bits
 * 0..x−1 and the number of 512-byte sectors beyond the one holding that offset in bits x..61.
 */
export function compressedSizeShift(clusterBits: number): bigint {
  return BigInt(62 - (clusterBits - 8));
}

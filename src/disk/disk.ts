/**
 * The virtual block device contract shared by every reader and writer in `src/disk/`.
 *
 * A reader exposes what the guest sees: `read(offset, length)` over [0, virtualSize) and an
 * allocation map of ascending, contiguous extents covering the whole disk. Writers consume a
 * reader; they never read the extents marked `zero` or `hole`, which is how sparseness survives
 * a conversion.
 */
import type { Writable } from 'node:stream';
import type { FormatName } from '../formats/format.js';

/**
 * The formats the disk engine reads: every format the format engine knows but these, so a new
 * format name is a disk format (and needs its entry in disk-formats.ts) unless it is listed here.
 * qcow, luks, parallels: no reader (convert them with qemu-img first); iso: read as raw.
 */
type NoDiskReader = 'qcow' | 'luks' | 'parallels' | 'iso';
export type DiskFormat = Exclude<FormatName, NoDiskReader>;

/**
 * `data`: bytes stored in the image (may still be zeros); `zero`: the image records the range as
 * reading zeros (qcow2 zero cluster, VHDX PAYLOAD_BLOCK_ZERO); `hole`: nothing allocated, reads
 * zeros. Writers treat `zero` and `hole` alike unless their format can say "zero" explicitly.
 */
export type ExtentKind = 'data' | 'zero' | 'hole';

export interface Extent {
  readonly offset: number;
  readonly length: number;
  readonly kind: ExtentKind;
}

export interface DiskReader {
  readonly format: DiskFormat;
  /** Guest-visible size in bytes. */
  readonly virtualSize: number;
  /** Allocation granularity (cluster, grain, block) when the format has one. */
  readonly clusterSize?: number;
  /**
   * Extents covering [offset, offset + length) (default: the whole disk), ascending and
   * contiguous, each clipped to the asked range. Adjacent extents of one kind may or may not
   * be merged.
   */
  extents(offset?: number, length?: number): AsyncIterable<Extent>;
  /** Guest bytes [offset, offset + length); zeros for unallocated ranges. Never a short read inside the disk. */
  read(offset: number, length: number): Promise<Uint8Array>;
  /**
   * Optional: where the guest bytes lie in the image file, for a reader whose data is stored as
   * is in one local file (raw, and the block-mapped formats read from a file). Writers use it to
   * copy data runs file to file inside the kernel (`src/io/copy-range.ts`) instead of reading them.
   */
  readonly stored?: StoredLayout;
  close(): Promise<void>;
}

/**
 * A stretch of guest bytes and how it is stored. `stored`: the image file's bytes
 * [fileOffset, fileOffset + length) as they are (they may still be zeros; past the end of the file
 * they read zeros). `zero`: reads zeros (a hole, a zero cluster). `other`: must be read through
 * `read()` (compressed, or otherwise not the file's bytes as they are).
 */
export type StoredRun =
  | { readonly offset: number; readonly length: number; readonly kind: 'stored'; readonly fileOffset: number }
  | { readonly offset: number; readonly length: number; readonly kind: 'zero' | 'other' };

export interface StoredLayout {
  /** the open image file (`fileOffset` is an offset in it); valid until the reader is closed */
  readonly fd: number;
  /** True when `runs(…, align)` can start and end every run on a multiple of `align` (or at the end of the disk). */
  alignsTo(align: number): boolean;
  /**
   * Runs covering [offset, offset + length), ascending and contiguous, each clipped to the range;
   * with `align` (one `alignsTo` accepts; default 1) every run boundary inside the range is a
   * multiple of it.
   */
  runs(offset: number, length: number, align?: number): AsyncIterable<StoredRun>;
}

/** Where a writer puts its output. */
export type OutputTarget =
  /** A file path: the writer writes `<path>.part`, fsyncs and renames, so a crash never leaves a file that looks complete. */
  | { readonly kind: 'file'; readonly path: string }
  /** A sequential stream (HTTP response): only writers with `streamable: true` accept it. */
  | { readonly kind: 'stream'; readonly stream: Writable };

export interface WriteProgress {
  readonly done: number;
  readonly total: number;
}

/** qemu's cache modes (`-drive cache=`, `qemu-img convert -t`); what each means here: `cache-mode.ts`. */
export const CACHE_MODES = ['writeback', 'writethrough', 'none', 'directsync', 'unsafe'] as const;
export type CacheMode = (typeof CACHE_MODES)[number];

export interface WriteOptions {
  /** Format-specific options from `-o key=value,...` (cluster_size, subformat, compression_type, ...). */
  readonly options?: Readonly<Record<string, string>>;
  /** `-c`: compress where the format can (qcow2 zlib/zstd, vmdk streamOptimized always does). */
  readonly compress?: boolean;
  readonly onProgress?: (p: WriteProgress) => void;
  readonly signal?: AbortSignal;
  /** A file target's cache mode (qemu's `-t`; `cache-mode.ts`). Default writeback: flushed before the rename. */
  readonly cache?: CacheMode;
}

export interface WriteResult {
  /** Bytes written to the target. */
  readonly bytesWritten: number;
}

export interface DiskWriter {
  readonly format: DiskFormat;
  /** True when this writer can produce its output in one sequential pass to a stream target. */
  readonly streamable: boolean;
  write(src: DiskReader, out: OutputTarget, opts?: WriteOptions): Promise<WriteResult>;
}

/** A reader or writer met bytes or options it cannot accept; the message says what and what to do. */
export class DiskError extends Error {
  constructor(
    message: string,
    readonly code: 'MALFORMED_IMAGE' | 'UNSUPPORTED' | 'UNSAFE_IMAGE' | 'BAD_OPTION' | 'IO' = 'MALFORMED_IMAGE',
  ) {
    super(message);
    this.name = 'DiskError';
  }
}

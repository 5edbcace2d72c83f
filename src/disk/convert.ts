/**
 * `convertFile`: one image file to another format, as `qemu-img convert` — but behind the safety
 * verdict. The source is opened with `openDisk` (the format engine runs first: a backing file, an
 * external data file, extents outside `allowExtentDir` or any other error finding refuses the
 * source before a byte of guest data is read), then the writer of the output format consumes the
 * reader and commits `<out>.part` by rename (flushed first unless the cache mode is `unsafe`), so
 * a failed or aborted conversion leaves no output that looks complete.
 *
 * QED sources are accepted (`allowDeprecatedFormats`): converting them away is what they are
 * refused for storage for. Progress is in guest bytes of the virtual size processed.
 */
import { realpath } from 'node:fs/promises';
import { resolve } from 'node:path';
import { DiskError, type CacheMode, type DiskFormat, type WriteProgress } from './disk.js';
import { DISK_FORMAT_NAMES, DISK_FORMAT_TABLE, isDiskFormat, writerFor } from './disk-formats.js';
import { openDisk } from './open-disk.js';

export interface ConvertOptions {
  /** the format the source is declared as; must match what its bytes are (default: detected) */
  readonly inFormat?: string;
  /** output format (qemu's `vpc` is accepted for vhd) */
  readonly outFormat: string;
  /** writer options, as `-o key=value,...` */
  readonly options?: Readonly<Record<string, string>>;
  /** `-c`: compress where the output format can */
  readonly compress?: boolean;
  readonly onProgress?: (p: WriteProgress) => void;
  readonly signal?: AbortSignal;
  /** directory a descriptor VMDK's extent files may be read from (default: such sources are refused) */
  readonly allowExtentDir?: string;
  /** qcow2 source: read this internal snapshot (id or name) instead of the active layer */
  readonly snapshot?: string;
  /** the output's cache mode (qemu's `-t`); default writeback, flushed before the rename */
  readonly cache?: CacheMode;
}

export interface ConvertResult {
  /** the source's format as detected */
  readonly inFormat: DiskFormat;
  readonly outFormat: DiskFormat;
  readonly virtualSize: number;
  /** bytes written to the output file */
  readonly bytesWritten: number;
}

const OUTPUT_ALIASES: Readonly<Record<string, DiskFormat>> = { vpc: 'vhd' };

/** The output format named by `name` (case-insensitive, `vpc` = vhd), or BAD_OPTION / UNSUPPORTED. */
export function outputFormat(name: string): DiskFormat {
  const k = name.toLowerCase();
  const f = OUTPUT_ALIASES[k] ?? k;
  if (!isDiskFormat(f)) {
    throw new DiskError(
      `unknown output format "${name}"; use one of ${DISK_FORMAT_NAMES.filter((x) => DISK_FORMAT_TABLE[x].writer !== null).join(', ')} (or vpc for vhd)`,
      'BAD_OPTION',
    );
  }
  writerFor(f); // qed: UNSUPPORTED, with what to use instead
  return f;
}

export async function convertFile(inPath: string, outPath: string, opts: ConvertOptions): Promise<ConvertResult> {
  const outFormat = outputFormat(opts.outFormat);
  const writer = writerFor(outFormat);
  if (opts.compress) checkCompress(outFormat, opts.options);
  if ((await canonical(inPath)) === (await canonical(outPath))) {
    throw new DiskError(`the output ${outPath} is the input; write the converted image to another path`, 'BAD_OPTION');
  }
  opts.signal?.throwIfAborted();
  const reader = await openDisk(inPath, {
    ...(opts.inFormat === undefined ? {} : { format: opts.inFormat }),
    ...(opts.allowExtentDir === undefined ? {} : { allowExtentDir: opts.allowExtentDir }),
    ...(opts.snapshot === undefined ? {} : { snapshot: opts.snapshot }),
    allowDeprecatedFormats: true,
  });
  try {
    const { bytesWritten } = await writer.write(
      reader,
      { kind: 'file', path: outPath },
      {
        ...(opts.options === undefined ? {} : { options: opts.options }),
        compress: opts.compress === true,
        ...(opts.onProgress === undefined ? {} : { onProgress: opts.onProgress }),
        ...(opts.signal === undefined ? {} : { signal: opts.signal }),
        ...(opts.cache === undefined ? {} : { cache: opts.cache }),
      },
    );
    return { inFormat: reader.format, outFormat, virtualSize: reader.virtualSize, bytesWritten };
  } finally {
    await reader.close();
  }
}

/**
 * `-c` where the output cannot be compressed is refused, as qemu-img does ("Compression not
 * supported for this file format"): silently writing an uncompressed image is another image than
 * asked for. streamOptimized VMDK (and the OVA's VMDK) are compressed anyway.
 */
function checkCompress(format: DiskFormat, options: Readonly<Record<string, string>> | undefined): void {
  const monolithic = format === 'vmdk' && options?.['subformat'] === 'monolithicSparse';
  if ((format === 'qcow2' || format === 'vmdk' || format === 'ova') && !monolithic) return;
  const what = monolithic ? 'vmdk monolithicSparse' : format;
  throw new DiskError(`${what} cannot be compressed (-c); compressed outputs are qcow2, vmdk streamOptimized and ova`, 'BAD_OPTION');
}

/** The real path of `p`, or its absolute path when it does not exist yet. */
async function canonical(p: string): Promise<string> {
  return realpath(p).catch(() => resolve(p));
}

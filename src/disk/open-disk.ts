/**
 * `openDisk`: the one way to open an image file as a virtual disk. It runs the format engine
 * (`inspectFile`) first and refuses an image whose verdict is not safe, refuses a declared format
 * that is not the detected one, then hands the file to the reader of the detected format.
 *
 * Two options widen what is accepted, each by exactly the findings it makes acceptable:
 * `allowExtentDir` (a descriptor VMDK's extent files, read from that directory only) accepts
 * VMDK_CREATE_TYPE and VMDK_EXTENT_OUTSIDE; `allowDeprecatedFormats` accepts QED's
 * UNSUPPORTED_FORMAT so a QED image can be converted away. Every other finding still refuses.
 */
import { COMPRESSION_PROBE_BYTES, detectCompression } from '../formats/compression.js';
import type { Finding, FindingCode } from '../formats/findings.js';
import { FileSource } from '../io/file-source.js';
import { inspectFile } from '../inspect/inspect-file.js';
import { DiskError, type DiskFormat, type DiskReader } from './disk.js';
import { DISK_FORMAT_NAMES, DISK_FORMAT_TABLE, isDiskFormat, readerFormatOf } from './disk-formats.js';

export interface OpenDiskOptions {
  /** the format the caller says this is (qemu's `vpc` is accepted for vhd); must match the detected one */
  format?: string;
  /** directory a descriptor VMDK's extent files may be read from (default: such VMDKs are refused) */
  allowExtentDir?: string;
  /** qcow2 internal snapshot (id or name) to read instead of the active image */
  snapshot?: string;
  /** read QED (deprecated, refused for storage) so it can be converted */
  allowDeprecatedFormats?: boolean;
}

const ALIASES: Record<string, DiskFormat> = { vpc: 'vhd', img: 'raw' };

export async function openDisk(path: string, opts: OpenDiskOptions = {}): Promise<DiskReader> {
  const declared = opts.format === undefined ? undefined : normalFormat(opts.format);
  const probe = await FileSource.open(path).catch((e: Error) => {
    throw new DiskError(`cannot open ${path}: ${e.message}`, 'IO');
  });
  try {
    const compression = detectCompression(await probe.read(0, COMPRESSION_PROBE_BYTES));
    if (compression) throw new DiskError(`${path} is ${compression}-compressed; decompress it first (disk readers need random access)`, 'UNSUPPORTED');
  } finally {
    await probe.close();
  }
  const report = await inspectFile(path);
  const accepted = new Set<FindingCode>();
  if (opts.allowExtentDir !== undefined && report.format === 'vmdk') {
    accepted.add('VMDK_CREATE_TYPE');
    accepted.add('VMDK_EXTENT_OUTSIDE');
  }
  if (opts.allowDeprecatedFormats && report.format === 'qed') accepted.add('UNSUPPORTED_FORMAT');
  const blocking = report.findings.filter((f) => f.severity === 'error' && !accepted.has(f.code));
  if (blocking.length > 0) {
    throw new DiskError(`${path} is refused by the safety checks: ${describe(blocking)}`, 'UNSAFE_IMAGE');
  }
  const detected = readerFormatOf(report.format);
  if (detected === undefined) throw new DiskError(`${path} is ${report.format}, which has no disk reader; convert it with qemu-img first`, 'UNSUPPORTED');
  if (declared !== undefined && declared !== detected) {
    throw new DiskError(
      `${path} was declared as ${opts.format} but its bytes are ${report.format}; declare the format it really is (a mismatch is how format-confusion attacks work)`,
      'UNSAFE_IMAGE',
    );
  }
  if (opts.snapshot !== undefined && detected !== 'qcow2') throw new DiskError(`snapshots can only be read from qcow2 images, not ${detected}`, 'BAD_OPTION');
  const file = await FileSource.open(path);
  return DISK_FORMAT_TABLE[detected].open(file, opts);
}

function normalFormat(f: string): DiskFormat {
  const k = f.toLowerCase();
  const n = ALIASES[k] ?? k;
  if (!isDiskFormat(n)) throw new DiskError(`unknown disk format "${f}" (known: ${DISK_FORMAT_NAMES.join(', ')}, vpc)`, 'BAD_OPTION');
  return n;
}

function describe(findings: readonly Finding[]): string {
  return findings.map((f) => `${f.code}: ${f.message}`).join('; ');
}

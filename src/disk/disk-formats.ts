/**
 * The disk engine's one table of formats: for each disk format its reader and its writer. Keyed
 * by `DiskFormat` (every format name of the format engine but those with no reader, see disk.ts),
 * so a new format name without its entry here does not compile.
 *
 * `qed` has no writer (qemu itself deprecates creating it): asking for it is UNSUPPORTED, with
 * what to use instead. An ISO has no reader of its own: guests read it as raw bytes.
 */
import type { FormatName } from '../formats/format.js';
import { DiskError, type DiskFormat, type DiskReader, type DiskWriter } from './disk.js';
import type { DiskFile } from './disk-file.js';
import { openOva } from './readers/ova.js';
import { openQcow2 } from './readers/qcow2.js';
import { openQed } from './readers/qed.js';
import { openRaw } from './readers/raw.js';
import { openVdi } from './readers/vdi.js';
import { openVhd } from './readers/vhd.js';
import { openVhdx } from './readers/vhdx.js';
import { openVmdk } from './readers/vmdk.js';
import { ovaWriter } from './writers/ova.js';
import { qcow2Writer } from './writers/qcow2.js';
import { rawWriter } from './writers/raw.js';
import { vdiWriter } from './writers/vdi.js';
import { vhdWriter } from './writers/vhd.js';
import { vhdxWriter } from './writers/vhdx.js';
import { vmdkWriter } from './writers/vmdk.js';

/** What a reader may be asked for besides the file; each reader takes the options it knows. */
export interface ReaderOptions {
  /** qcow2: the internal snapshot (id or name) to read instead of the active image */
  readonly snapshot?: string;
  /** vmdk: directory a descriptor VMDK's extent files may be read from */
  readonly allowExtentDir?: string;
}

export interface DiskFormatEntry {
  open(file: DiskFile, opts: ReaderOptions): Promise<DiskReader>;
  /** null: we do not write this format */
  readonly writer: DiskWriter | null;
}

export const DISK_FORMAT_TABLE = {
  raw: { open: async (file) => openRaw(file), writer: rawWriter },
  qcow2: { open: (file, o) => openQcow2(file, o.snapshot === undefined ? {} : { snapshot: o.snapshot }), writer: qcow2Writer },
  vmdk: { open: (file, o) => openVmdk(file, o.allowExtentDir === undefined ? {} : { allowExtentDir: o.allowExtentDir }), writer: vmdkWriter },
  vdi: { open: (file) => openVdi(file), writer: vdiWriter },
  vhd: { open: (file) => openVhd(file), writer: vhdWriter },
  vhdx: { open: (file) => openVhdx(file), writer: vhdxWriter },
  qed: { open: (file) => openQed(file), writer: null },
  ova: { open: (file) => openOva(file), writer: ovaWriter },
} as const satisfies Record<DiskFormat, DiskFormatEntry>;

/** The disk formats, in the table's order. */
export const DISK_FORMAT_NAMES = Object.keys(DISK_FORMAT_TABLE) as DiskFormat[];

type Table = typeof DISK_FORMAT_TABLE;
/** Disk formats we write (the conversion targets). */
export type WritableDiskFormat = { [K in DiskFormat]: Table[K]['writer'] extends null ? never : K }[DiskFormat];

export function isDiskFormat(name: string): name is DiskFormat {
  return Object.hasOwn(DISK_FORMAT_TABLE, name);
}

/** The disk format a detected format (format engine name) is read as, or undefined when it has no reader. An ISO reads as raw. */
export function readerFormatOf(detected: FormatName): DiskFormat | undefined {
  if (detected === 'iso') return 'raw';
  return isDiskFormat(detected) ? detected : undefined;
}

export function writerFor(format: DiskFormat): DiskWriter {
  const w: DiskWriter | null = DISK_FORMAT_TABLE[format].writer;
  if (!w) throw new DiskError(`no writer for ${format}; convert to qcow2 instead`, 'UNSUPPORTED');
  return w;
}

/**
 * One table from disk format to writer. `qed` has no writer (qemu itself deprecates creating it):
 * asking for it is UNSUPPORTED, with what to use instead.
 */
import { DiskError, type DiskFormat, type DiskWriter } from '../disk.js';
import { ovaWriter } from './ova.js';
import { qcow2Writer } from './qcow2.js';
import { rawWriter } from './raw.js';
import { vdiWriter } from './vdi.js';
import { vhdWriter } from './vhd.js';
import { vhdxWriter } from './vhdx.js';
import { vmdkWriter } from './vmdk.js';

const WRITERS: Readonly<Record<DiskFormat, DiskWriter | undefined>> = {
  raw: rawWriter,
  qcow2: qcow2Writer,
  vmdk: vmdkWriter,
  vdi: vdiWriter,
  vhd: vhdWriter,
  vhdx: vhdxWriter,
  qed: undefined,
  ova: ovaWriter,
};

export function writerFor(format: DiskFormat): DiskWriter {
  const w = WRITERS[format];
  if (!w) throw new DiskError(`no writer for ${format}; convert to qcow2 instead`, 'UNSUPPORTED');
  return w;
}

/**
 * The one table of formats the engine knows, keyed by format name: a name in FORMAT_NAMES without
 * its descriptor does not compile. Key order is only the order of reporting; detection runs every
 * probe (raw is the fallback and is never probed).
 */
import type { FormatDescriptor, FormatName } from './format.js';
import { isoFormat } from './iso.js';
import { luksFormat } from './luks.js';
import { ovaFormat } from './ova.js';
import { parallelsFormat } from './parallels.js';
import { qcowFormat } from './qcow.js';
import { qcow2Format } from './qcow2.js';
import { qedFormat } from './qed.js';
import { rawFormat } from './raw.js';
import { vdiFormat } from './vdi.js';
import { vhdFormat } from './vhd.js';
import { vhdxFormat } from './vhdx.js';
import { vmdkFormat } from './vmdk.js';

const FORMAT_TABLE = {
  qcow2: qcow2Format,
  qcow: qcowFormat,
  qed: qedFormat,
  vmdk: vmdkFormat,
  vdi: vdiFormat,
  vhd: vhdFormat,
  vhdx: vhdxFormat,
  luks: luksFormat,
  iso: isoFormat,
  ova: ovaFormat,
  parallels: parallelsFormat,
  raw: rawFormat,
} as const satisfies Record<FormatName, FormatDescriptor>;

export const FORMATS: readonly FormatDescriptor[] = Object.values(FORMAT_TABLE);

export function formatByName(name: FormatName): FormatDescriptor {
  return FORMAT_TABLE[name];
}

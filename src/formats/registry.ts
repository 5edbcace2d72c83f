/**
 * The one table of formats the engine knows. Order is only the order of reporting; detection
 * runs every probe (raw is the fallback and is never probed).
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

export const FORMATS: readonly FormatDescriptor[] = [
  qcow2Format,
  qcowFormat,
  qedFormat,
  vmdkFormat,
  vdiFormat,
  vhdFormat,
  vhdxFormat,
  luksFormat,
  isoFormat,
  ovaFormat,
  parallelsFormat,
  rawFormat,
];

export function formatByName(name: FormatName): FormatDescriptor {
  const f = FORMATS.find((d) => d.name === name);
  if (!f) throw new Error(`unknown format ${name}`);
  return f;
}

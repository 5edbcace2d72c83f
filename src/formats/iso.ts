/**
 * ISO 9660 / UDF optical images, with El Torito boot records.
 *
 * Spec: ECMA-119 (ISO 9660) §8 volume descriptors; "El Torito" Bootable CD-ROM Format
 * Specification 1.0 §2; ECMA-167 / OSTA UDF 2.60 (volume recognition sequence, anchor volume
 * descriptor pointer at sector 256).
 *
 * | where | what |
 * |-------|------|
 * | 32768 + 2048·n | volume descriptors: type u8, "CD001", version; until type 255 (terminator) |
 * | primary (type 1) | system id 8..40, volume id 40..72, volume space size u32 LE at 80, logical block size u16 LE at 128, application id 574..702, creation date 813..830 |
 * | supplementary (type 2) | escape sequences at 88 ("%/@", "%/C", "%/E": Joliet) |
 * | boot record (type 0) | "EL TORITO SPECIFICATION" at 7, boot catalog LBA u32 LE at 71 |
 * | boot catalog | validation entry (header 1, platform, key 55 AA, words sum to 0), initial entry (0x88 bootable, media, load segment, sector count, load RBA), section headers 0x90/0x91 with entries |
 * | UDF | "BEA01", "NSR02"/"NSR03", "TEA01" descriptors in the same area; anchor (tag 2) at sector 256 |
 *
 * Hypervisors attach an ISO as a raw CD-ROM: the virtual size is the file size (as qemu-img).
 * isohybrid images also carry an MBR/GPT in the system area (first 32 KiB): summarised and
 * checked like a raw disk's.
 */
import { bytesEqual, latin1, readExact, type ByteSource, view } from './byte-source.js';
import { finding, type Finding } from './findings.js';
import { describeFormat, type InspectContext } from './format.js';
import { readPartitionTable, type PartitionTable } from './partition-table.js';

const SECTOR = 2048;
const VDS_START = 16 * SECTOR;
const MAX_DESCRIPTORS = 64;
const MAX_BOOT_ENTRIES = 64;
const PLATFORMS: Record<number, string> = { 0: 'x86', 1: 'PowerPC', 2: 'Mac', 0xef: 'EFI' };
const MEDIA: Record<number, string> = { 0: 'no emulation', 1: '1.2M floppy', 2: '1.44M floppy', 3: '2.88M floppy', 4: 'hard disk' };

export interface BootEntry {
  platform: string;
  bootable: boolean;
  mediaType: string;
  loadSegment: number;
  sectorCount: number;
  loadRba: number;
}

export interface IsoDetails {
  iso9660: boolean;
  udf?: { nsr: string; anchor: boolean };
  systemId?: string;
  volumeId?: string;
  applicationId?: string;
  volumeSize?: number;
  logicalBlockSize?: number;
  joliet: boolean;
  created?: string;
  elTorito?: { bootCatalogLba: number; entries: BootEntry[] };
  partitionTable?: PartitionTable;
}

function trim(b: Uint8Array): string {
  return latin1(b).replace(/[\0 ]+$/, '');
}

async function inspect(src: ByteSource, ctx: InspectContext) {
  const findings: Finding[] = [];
  const details: IsoDetails = { iso9660: false, joliet: false };
  let bootCatalogLba: number | undefined;
  let nsr: string | undefined;
  for (let i = 0; i < MAX_DESCRIPTORS; i++) {
    const d = await src.read(VDS_START + i * SECTOR, SECTOR);
    if (d.length < SECTOR) break;
    const ident = latin1(d.subarray(1, 6));
    if (ident === 'CD001') {
      details.iso9660 = true;
      const type = d[0]!;
      // the terminator ends the ISO 9660 set; a UDF recognition sequence may follow it
      if (type === 255) continue;
      const v = view(d);
      if (type === 1) {
        details.systemId = trim(d.subarray(8, 40));
        details.volumeId = trim(d.subarray(40, 72));
        details.volumeSize = v.getUint32(80, true);
        details.logicalBlockSize = v.getUint16(128, true);
        details.applicationId = trim(d.subarray(574, 702));
        const c = latin1(d.subarray(813, 827));
        if (/^\d{14}$/.test(c)) details.created = `${c.slice(0, 4)}-${c.slice(4, 6)}-${c.slice(6, 8)}T${c.slice(8, 10)}:${c.slice(10, 12)}:${c.slice(12, 14)}`;
      } else if (type === 2) {
        const esc = latin1(d.subarray(88, 91));
        if (esc === '%/@' || esc === '%/C' || esc === '%/E') details.joliet = true;
      } else if (type === 0 && latin1(d.subarray(7, 30)) === 'EL TORITO SPECIFICATION') {
        bootCatalogLba = v.getUint32(71, true);
      }
    } else if (['BEA01', 'NSR02', 'NSR03', 'TEA01', 'BOOT2', 'CDW02'].includes(ident)) {
      if (ident.startsWith('NSR')) nsr = ident;
      if (ident === 'TEA01') break;
    } else {
      break;
    }
  }
  if (details.logicalBlockSize !== undefined && details.volumeSize !== undefined) {
    const bytes = details.volumeSize * details.logicalBlockSize;
    if (details.logicalBlockSize !== 2048 && details.logicalBlockSize !== 512 && details.logicalBlockSize !== 1024) {
      findings.push(finding('MALFORMED_HEADER', `ISO logical block size ${details.logicalBlockSize} is not 512, 1024 or 2048`));
    }
    if (src.size !== undefined && bytes > src.size) {
      findings.push(finding('TRUNCATED', `the ISO volume is ${bytes} bytes but the file has only ${src.size}; the image is truncated — upload it whole`));
    }
  }
  if (bootCatalogLba !== undefined) {
    details.elTorito = { bootCatalogLba, entries: [] };
    if (src.size !== undefined && (bootCatalogLba + 1) * SECTOR > src.size) {
      findings.push(finding('OFFSET_PAST_END', `El Torito boot catalog at sector ${bootCatalogLba} lies past the end of the image`));
    } else {
      details.elTorito.entries = await readBootCatalog(await readExact(src, bootCatalogLba * SECTOR, SECTOR, 'El Torito boot catalog'), findings);
    }
  }
  if (nsr) {
    const anchor = await src.read(256 * SECTOR, 16);
    details.udf = { nsr, anchor: anchor.length === 16 && view(anchor).getUint16(0, true) === 2 };
  }
  const pt = await readPartitionTable(src, ctx.limits);
  if (pt.table) details.partitionTable = pt.table;
  // hybrid layouts are normal on ISOs: keep the findings about malformed tables, not the hybrid notice
  findings.push(...pt.findings.filter((f) => f.code !== 'HYBRID_MBR'));
  const subformat = details.iso9660 && details.udf ? 'iso9660+udf' : details.udf ? 'udf' : 'iso9660';
  return { subformat, virtualSize: src.size === undefined ? undefined : BigInt(src.size), details, findings };
}

async function readBootCatalog(b: Uint8Array, findings: Finding[]): Promise<BootEntry[]> {
  const entries: BootEntry[] = [];
  if (b[0] !== 1 || b[30] !== 0x55 || b[31] !== 0xaa) {
    findings.push(finding('MALFORMED_HEADER', 'El Torito validation entry is missing its header id or 55 AA key'));
    return entries;
  }
  let sum = 0;
  const v = view(b);
  for (let i = 0; i < 32; i += 2) sum = (sum + v.getUint16(i, true)) & 0xffff;
  if (sum !== 0) findings.push(finding('CHECKSUM_MISMATCH', 'El Torito validation entry checksum does not match'));
  let platform = PLATFORMS[b[1]!] ?? `0x${b[1]!.toString(16)}`;
  const entry = (at: number) => {
    entries.push({
      platform,
      bootable: b[at] === 0x88,
      mediaType: MEDIA[b[at + 1]! & 0x0f] ?? `0x${b[at + 1]!.toString(16)}`,
      loadSegment: v.getUint16(at + 2, true),
      sectorCount: v.getUint16(at + 6, true),
      loadRba: v.getUint32(at + 8, true),
    });
  };
  entry(32);
  for (let at = 64; at + 32 <= b.length && entries.length < MAX_BOOT_ENTRIES;) {
    const ind = b[at]!;
    if (ind !== 0x90 && ind !== 0x91) break;
    platform = PLATFORMS[b[at + 1]!] ?? `0x${b[at + 1]!.toString(16)}`;
    const n = v.getUint16(at + 2, true);
    at += 32;
    for (let k = 0; k < n && at + 32 <= b.length && entries.length < MAX_BOOT_ENTRIES; k++, at += 32) entry(at);
    if (ind === 0x91) break;
  }
  return entries;
}

export const isoFormat = describeFormat<IsoDetails>({
  name: 'iso',
  description: 'ISO 9660 / UDF optical image, El Torito boot, isohybrid MBR/GPT',
  async probe(src) {
    const d = await src.read(VDS_START, 6);
    if (d.length < 6) return false;
    const ident = latin1(d.subarray(1, 6));
    return ident === 'CD001' || ident === 'BEA01' || bytesEqual(d, 1, 'NSR0');
  },
  inspect,
  // ISO has no references outside itself; structural findings come from inspect
  checks: [],
  // guests read an ISO as raw bytes, so a raw claim accepts it; nothing else does
  claimAliases: ['raw'],
});

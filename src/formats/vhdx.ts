/**
 * VHDX — Microsoft Virtual Hard Disk v2.
 *
 * Spec: [MS-VHDX] "Virtual Hard Disk v2 (VHDX) File Format" §2; qemu block/vhdx.c. Little-endian.
 *
 * | offset  | size  | structure |
 * |---------|-------|-----------|
 * | 0       | 8     | file type identifier "vhdxfile" (+ creator, UTF-16LE, 512 bytes) |
 * | 64 KiB  | 4 KiB | header 1: "head", CRC-32C, sequence number u64, GUIDs, log version u16, version u16 (1), log length u32, log offset u64 |
 * | 128 KiB | 4 KiB | header 2 (the valid one with the higher sequence number is current) |
 * | 192 KiB | 64 KiB| region table 1: "regi", CRC-32C, entry count (≤ 2047); entries {GUID, file offset u64, length u32, required u32} |
 * | 256 KiB | 64 KiB| region table 2 (a copy) |
 *
 * Regions: BAT 2DC27766-F623-4200-9D64-115E9BFD4A08, metadata 8B7CA206-4790-4B9A-B8FE-575F050F886E.
 * Metadata table ("metadata", entry count u16 at 10; entries of 32 bytes from 32: item GUID,
 * offset u32 (from the region start), length u32, flags u32: bit 0 isUser, 1 isVirtualDisk,
 * 2 isRequired): File Parameters (block size, bit 0 LeaveBlocksAllocated, bit 1 HasParent),
 * Virtual Disk Size, Page 83 Data, Logical Sector Size, Physical Sector Size, Parent Locator.
 *
 * Unknown *required* regions or metadata items mean the image needs features we (and qemu) do
 * not implement: refused. A parent means a differencing disk that reads another file: refused.
 */
import { FormatError, bytesEqual, readExact, type ByteSource, view } from './byte-source.js';
import { crc32c } from './crc32c.js';
import { finding, type Finding } from './findings.js';
import { describeFormat, type InspectContext, type SafetyRule } from './format.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const HEADER_OFFSETS = [64 * KiB, 128 * KiB];
const REGION_OFFSETS = [192 * KiB, 256 * KiB];
const HEADER_SIZE = 4 * KiB;
const REGION_SIZE = 64 * KiB;
const MAX_REGIONS = 2047;
const MAX_METADATA_ENTRIES = 2047;

const BAT_GUID = '2dc27766-f623-4200-9d64-115e9bfd4a08';
const METADATA_GUID = '8b7ca206-4790-4b9a-b8fe-575f050f886e';
const ITEM = {
  fileParameters: 'caa16737-fa36-4d43-b3b6-33f0aa44e76b',
  virtualDiskSize: '2fa54224-cd1b-4876-b211-5dbed83bf4b8',
  page83: 'beca12ab-b2e6-4523-93ef-c309e000c746',
  logicalSectorSize: '8141bf1d-a96f-4709-ba47-f233a8faab5f',
  physicalSectorSize: 'cda348c7-445d-4471-9cc9-e9885251c556',
  parentLocator: 'a8d35f2d-b30b-454d-abf7-d3d84834ab0c',
} as const;

export interface VhdxDetails {
  creator: string;
  headerSequence: string;
  version: number;
  logLength: number;
  logGuidSet: boolean;
  regions: { guid: string; name: string; offset: number; length: number; required: boolean }[];
  blockSize?: number;
  leaveBlocksAllocated?: boolean;
  hasParent: boolean;
  logicalSectorSize?: number;
  physicalSectorSize?: number;
  parentLocator?: Record<string, string>;
  unknownRequired: string[];
}

/** GUID bytes (mixed-endian as Windows stores them) → canonical lower-case string. */
export function guid(b: Uint8Array): string {
  const h = (i: number) => b[i]!.toString(16).padStart(2, '0');
  return (
    `${h(3)}${h(2)}${h(1)}${h(0)}-${h(5)}${h(4)}-${h(7)}${h(6)}-${h(8)}${h(9)}-` + [10, 11, 12, 13, 14, 15].map(h).join('')
  );
}

async function inspect(src: ByteSource, ctx: InspectContext) {
  const findings: Finding[] = [];
  const ident = await readExact(src, 0, 520, 'VHDX file identifier');
  const creator = new TextDecoder('utf-16le').decode(ident.subarray(8, 520)).replace(/\0.*$/s, '');

  // headers: the valid one with the highest sequence number is current
  let current: { seq: bigint; b: DataView } | undefined;
  for (const off of HEADER_OFFSETS) {
    const b = await readExact(src, off, HEADER_SIZE, 'VHDX header');
    if (!bytesEqual(b, 0, 'head')) continue;
    if (crc32c(b, 4, 4) !== view(b).getUint32(4, true)) continue;
    const seq = view(b).getBigUint64(8, true);
    if (!current || seq > current.seq) current = { seq, b: view(b) };
  }
  if (!current) {
    findings.push(finding('CHECKSUM_MISMATCH', 'neither VHDX header has a valid signature and CRC-32C; the image is damaged — recreate it'));
    throw new FormatError('no valid VHDX header', 'CHECKSUM_MISMATCH');
  }
  const version = current.b.getUint16(66, true);
  const logLength = current.b.getUint32(68, true);
  const logGuidSet = !new Uint8Array(current.b.buffer, current.b.byteOffset + 48, 16).every((x) => x === 0);
  if (version !== 1) throw new FormatError(`header version ${version} is not 1`, 'MALFORMED_HEADER');

  // region table (first valid copy)
  let table: DataView | undefined;
  for (const off of REGION_OFFSETS) {
    const b = await readExact(src, off, REGION_SIZE, 'VHDX region table');
    if (!bytesEqual(b, 0, 'regi')) continue;
    if (crc32c(b, 4, 4) !== view(b).getUint32(4, true)) continue;
    table = view(b);
    break;
  }
  if (!table) throw new FormatError('no VHDX region table with a valid signature and CRC-32C', 'CHECKSUM_MISMATCH');
  const count = table.getUint32(8, true);
  if (count > MAX_REGIONS) throw new FormatError(`region table declares ${count} entries (at most ${MAX_REGIONS})`, 'OVER_LIMIT');
  const regions: VhdxDetails['regions'] = [];
  const unknownRequired: string[] = [];
  for (let i = 0; i < count; i++) {
    const at = 16 + i * 32;
    const g = guid(new Uint8Array(table.buffer, table.byteOffset + at, 16));
    const offset = table.getBigUint64(at + 16, true);
    const length = table.getUint32(at + 24, true);
    const required = (table.getUint32(at + 28, true) & 1) === 1;
    const name = g === BAT_GUID ? 'BAT' : g === METADATA_GUID ? 'metadata' : 'unknown';
    if (offset % BigInt(MiB) !== 0n || length % MiB !== 0) {
      findings.push(finding('MALFORMED_HEADER', `${name} region at ${offset} (${length} bytes) is not 1 MiB aligned`));
    }
    if (src.size !== undefined && offset + BigInt(length) > BigInt(src.size)) {
      findings.push(finding('OFFSET_PAST_END', `${name} region at ${offset} (${length} bytes) runs past the end of the ${src.size}-byte image`));
    }
    if (name === 'unknown' && required) unknownRequired.push(`region ${g}`);
    regions.push({ guid: g, name, offset: Number(offset), length, required });
  }
  const meta = regions.find((r) => r.name === 'metadata');
  if (!meta) throw new FormatError('no metadata region', 'MALFORMED_HEADER');
  if (!regions.some((r) => r.name === 'BAT')) throw new FormatError('no BAT region', 'MALFORMED_HEADER');

  const details: VhdxDetails = {
    creator,
    headerSequence: current.seq.toString(),
    version,
    logLength,
    logGuidSet,
    regions,
    hasParent: false,
    unknownRequired,
  };
  let virtualSize: bigint | undefined;
  const mt = await readExact(src, meta.offset, 32, 'VHDX metadata table header');
  if (!bytesEqual(mt, 0, 'metadata')) throw new FormatError(`no metadata table signature at ${meta.offset}`, 'MALFORMED_HEADER');
  const entries = view(mt).getUint16(10, true);
  if (entries > MAX_METADATA_ENTRIES) throw new FormatError(`metadata table declares ${entries} entries (at most ${MAX_METADATA_ENTRIES})`, 'OVER_LIMIT');
  const et = await readExact(src, meta.offset + 32, entries * 32, 'VHDX metadata entries');
  const items: { id: string; offset: number; length: number; required: boolean; user: boolean }[] = [];
  for (let i = 0; i < entries; i++) {
    const e = view(et.subarray(i * 32, i * 32 + 32));
    const flags = e.getUint32(24, true);
    items.push({ id: guid(et.subarray(i * 32, i * 32 + 16)), offset: e.getUint32(16, true), length: e.getUint32(20, true), user: (flags & 1) === 1, required: (flags & 4) === 4 });
  }
  items.sort((a, b) => a.offset - b.offset); // ascending reads (streams)
  const known = new Set<string>(Object.values(ITEM));
  for (const it of items) {
    if (!known.has(it.id)) {
      if (it.required && !it.user) unknownRequired.push(`metadata item ${it.id}`);
      continue;
    }
    if (it.offset < 64 * KiB || it.offset + it.length > meta.length) {
      findings.push(finding('OFFSET_PAST_END', `metadata item ${it.id} at ${it.offset} (${it.length} bytes) lies outside the metadata region`));
      continue;
    }
    if (it.length > ctx.limits.maxDescriptorBytes) {
      findings.push(finding('OVER_LIMIT', `metadata item ${it.id} of ${it.length} bytes is over the ${ctx.limits.maxDescriptorBytes}-byte limit`));
      continue;
    }
    const d = await readExact(src, meta.offset + it.offset, it.length, 'VHDX metadata item');
    const v = view(d);
    switch (it.id) {
      case ITEM.fileParameters: {
        if (d.length < 8) throw new FormatError('file parameters item is shorter than 8 bytes', 'MALFORMED_HEADER');
        details.blockSize = v.getUint32(0, true);
        const flags = v.getUint32(4, true);
        details.leaveBlocksAllocated = (flags & 1) === 1;
        details.hasParent = (flags & 2) === 2;
        break;
      }
      case ITEM.virtualDiskSize:
        if (d.length < 8) throw new FormatError('virtual disk size item is shorter than 8 bytes', 'MALFORMED_HEADER');
        virtualSize = v.getBigUint64(0, true);
        break;
      case ITEM.logicalSectorSize:
        details.logicalSectorSize = v.getUint32(0, true);
        break;
      case ITEM.physicalSectorSize:
        details.physicalSectorSize = v.getUint32(0, true);
        break;
      case ITEM.parentLocator:
        details.parentLocator = parseParentLocator(d);
        break;
      default:
        break;
    }
  }
  if (details.blockSize !== undefined && (details.blockSize < MiB || details.blockSize > 256 * MiB || (details.blockSize & (details.blockSize - 1)) !== 0)) {
    findings.push(finding('MALFORMED_HEADER', `block size ${details.blockSize} is not a power of two between 1 MiB and 256 MiB`));
  }
  if (details.logicalSectorSize !== undefined && details.logicalSectorSize !== 512 && details.logicalSectorSize !== 4096) {
    findings.push(finding('MALFORMED_HEADER', `logical sector size ${details.logicalSectorSize} is not 512 or 4096`));
  }
  if (virtualSize === undefined) throw new FormatError('no virtual disk size metadata item', 'MALFORMED_HEADER');
  const subformat = details.hasParent ? 'differencing' : details.leaveBlocksAllocated ? 'fixed' : 'dynamic';
  return { subformat, virtualSize, details, findings };
}

/** Parent locator: header (type GUID, reserved u16, count u16) then entries (key/value offsets u32, lengths u16), UTF-16LE strings. */
function parseParentLocator(d: Uint8Array): Record<string, string> {
  const out: Record<string, string> = {};
  if (d.length < 20) return out;
  const v = view(d);
  const n = Math.min(v.getUint16(18, true), 64);
  const dec = new TextDecoder('utf-16le');
  for (let i = 0; i < n; i++) {
    const at = 20 + i * 12;
    if (at + 12 > d.length) break;
    const ko = v.getUint32(at, true);
    const vo = v.getUint32(at + 4, true);
    const kl = v.getUint16(at + 8, true);
    const vl = v.getUint16(at + 10, true);
    if (ko + kl > d.length || vo + vl > d.length) continue;
    out[dec.decode(d.subarray(ko, ko + kl))] = dec.decode(d.subarray(vo, vo + vl));
  }
  return out;
}

const checks: SafetyRule<VhdxDetails>[] = [
  {
    code: 'DIFFERENCING_DISK',
    description: 'a differencing VHDX reads its parent, another file',
    run: ({ details: d }) =>
      d.hasParent || d.parentLocator
        ? [
            finding(
              'DIFFERENCING_DISK',
              `differencing VHDX with parent ${JSON.stringify(d.parentLocator?.relative_path ?? d.parentLocator?.absolute_win32_path ?? d.parentLocator?.parent_linkage ?? '(unnamed)')}; ` +
                `merge it into a standalone disk ("qemu-img convert -O vhdx IN OUT" or Merge-VHD) and upload that`,
            ),
          ]
        : [],
  },
  {
    code: 'UNKNOWN_FEATURES',
    description: 'required regions or metadata items we do not know: the image cannot be read correctly',
    run: ({ details: d }) =>
      d.unknownRequired.length
        ? [finding('UNKNOWN_FEATURES', `VHDX requires features we do not implement (${d.unknownRequired.join(', ')}); convert it with a current tool`)]
        : [],
  },
];

export const vhdxFormat = describeFormat<VhdxDetails>({
  name: 'vhdx',
  description: 'Microsoft VHDX: dynamic, fixed, differencing',
  async probe(src) {
    return bytesEqual(await src.read(0, 8), 0, 'vhdxfile');
  },
  inspect,
  checks,
});

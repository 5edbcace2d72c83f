/**
 * VHDX — Microsoft Virtual Hard Disk v2.
 *
 * Spec: [MS-VHDX] "Virtual Hard Disk v2 (VHDX) File Format" §2 (v20160714); what qemu accepts:
 * qemu block/vhdx.c, block/vhdx.h (`vhdx_parse_header`, `vhdx_open_region_tables`,
 * `vhdx_parse_metadata`, `vhdx_calc_bat_entries`). Little-endian; GUIDs in Windows mixed-endian
 * byte order. Checksums are CRC-32C over the structure with its checksum field zeroed.
 *
 * | offset  | size   | structure |
 * |---------|--------|-----------|
 * | 0       | 8      | file type identifier "vhdxfile" |
 * | 8       | 512    | creator (UTF-16LE) |
 * | 64 KiB  | 4 KiB  | header 1 |
 * | 128 KiB | 4 KiB  | header 2 — the current header is the valid one with the higher sequence number |
 * | 192 KiB | 64 KiB | region table (qemu reads this copy only) |
 * | 256 KiB | 64 KiB | region table copy |
 *
 * Header: 0 "head", 4 checksum u32, 8 sequence number u64, 16 file write GUID, 32 data write GUID,
 * 48 log GUID (zero: the log is empty), 64 log version u16 (0), 66 version u16 (1), 68 log length
 * u32, 72 log offset u64.
 * Region table: 0 "regi", 4 checksum u32, 8 entry count u32 (≤ 2047), 12 reserved; entries of 32
 * bytes from 16: GUID, file offset u64, length u32, flags u32 (bit 0 required).
 * Regions: BAT 2DC27766-F623-4200-9D64-115E9BFD4A08, metadata 8B7CA206-4790-4B9A-B8FE-575F050F886E.
 * Metadata table (start of the metadata region, 64 KiB): 0 "metadata", 8 reserved u16, 10 entry
 * count u16 (≤ 2047), entries of 32 bytes from 32: item GUID, offset u32 (from the region start,
 * ≥ 64 KiB), length u32, flags u32 (bit 0 isUser, bit 1 isVirtualDisk, bit 2 isRequired).
 * Items: File Parameters (block size u32, flags u32: bit 0 LeaveBlocksAllocated, bit 1 HasParent),
 * Virtual Disk Size u64, Page 83 Data (GUID), Logical Sector Size u32, Physical Sector Size u32,
 * Parent Locator (type GUID, reserved u16, key/value count u16, entries {key offset u32, value
 * offset u32, key length u16, value length u16}, UTF-16LE strings).
 *
 * Invariants enforced: a valid header (qemu: two valid headers with the same sequence number must
 * be identical), version 1, a valid first region table, both BAT and metadata regions once, regions
 * 1 MiB aligned, inside the file and not overlapping each other, the headers or the log; the five
 * required metadata items present, inside the metadata region; block size a power of two in
 * 1 MiB..256 MiB; sector sizes 512 or 4096; the BAT region large enough for the disk. Unknown
 * *required* regions or metadata items: UNKNOWN_FEATURES (qemu refuses them too). A non-empty log
 * (log GUID set) means the image was not closed cleanly: a warning. Ours: at most
 * `limits.maxTableEntries` BAT entries, metadata items up to `limits.maxDescriptorBytes`. Neither
 * the BAT nor the log is read.
 */
import { emptyScan, mergeScan, scanTable, tableFindings, vhdxBatRule, vhdxBlockNeed, type TableScan } from './block-map-rules.js';
import { FormatError, bytesEqual, readExact, type ByteSource, view } from './byte-source.js';
import { crc32c } from './crc32c.js';
import { finding, type Finding } from './findings.js';
import { describeFormat, type InspectContext, type Inspection, type SafetyRule } from './format.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const IDENT_BYTES = 8 + 512;
const HEADER_OFFSETS = [64 * KiB, 128 * KiB] as const;
const HEADER_SIZE = 4 * KiB;
const REGION_TABLE_OFFSET = 192 * KiB;
const REGION_TABLE_SIZE = 64 * KiB;
const METADATA_TABLE_SIZE = 64 * KiB;
/** [MS-VHDX] §2.3 / §2.6.1: at most 2047 region table and metadata table entries. */
const MAX_ENTRIES = 2047;
/** Headers and region tables occupy the first MiB; regions and the log start after it. */
const HEADER_SECTION = MiB;
/** bits of the flags fields */
const REGION_REQUIRED = 1 << 0;
const META_IS_USER = 1 << 0;
const META_IS_VIRTUAL_DISK = 1 << 1;
const META_IS_REQUIRED = 1 << 2;
const PARAM_LEAVE_BLOCKS_ALLOCATED = 1 << 0;
const PARAM_HAS_PARENT = 1 << 1;

export const BAT_GUID = '2dc27766-f623-4200-9d64-115e9bfd4a08';
export const METADATA_GUID = '8b7ca206-4790-4b9a-b8fe-575f050f886e';
export const ITEM = {
  fileParameters: 'caa16737-fa36-4d43-b3b6-33f0aa44e76b',
  virtualDiskSize: '2fa54224-cd1b-4876-b211-5dbed83bf4b8',
  page83Data: 'beca12ab-b2e6-4523-93ef-c309e000c746',
  logicalSectorSize: '8141bf1d-a96f-4709-ba47-f233a8faab5f',
  physicalSectorSize: 'cda348c7-445d-4471-9cc9-e9885251c556',
  parentLocator: 'a8d35f2d-b30b-454d-abf7-d3d84834ab0c',
} as const;
/** the items qemu (and the spec, for a disk without parent) requires */
const REQUIRED_ITEMS = [ITEM.fileParameters, ITEM.virtualDiskSize, ITEM.page83Data, ITEM.logicalSectorSize, ITEM.physicalSectorSize];
/** [MS-VHDX] §2.6.2.6: the parent locator type of a VHDX parent */
const VHDX_PARENT_LOCATOR_TYPE = 'b04aefb7-d19e-4a81-b789-25b8e9445913';

export interface VhdxRegion {
  guid: string;
  name: 'BAT' | 'metadata' | 'unknown';
  offset: bigint;
  length: number;
  required: boolean;
}

export interface VhdxDetails {
  creator: string;
  /** 1 or 2: which header is current */
  currentHeader: number;
  headerSequence: bigint;
  version: number;
  logVersion: number;
  logOffset: bigint;
  logLength: number;
  /** the log holds entries to replay (log GUID set): the image was not closed cleanly */
  logDirty: boolean;
  regions: VhdxRegion[];
  blockSize?: number;
  leaveBlocksAllocated?: boolean;
  hasParent: boolean;
  logicalSectorSize?: number;
  physicalSectorSize?: number;
  page83Data?: string;
  /** BAT entries the disk needs (computed as qemu's vhdx_calc_bat_entries) */
  batEntries?: number;
  parentLocator?: { type: string; entries: Record<string, string> };
  metadataItems: { guid: string; offset: number; length: number; user: boolean; virtualDisk: boolean; required: boolean }[];
  unknownRequired: string[];
}

/** GUID bytes (Windows mixed-endian) → canonical lower-case string. */
export function guid(b: Uint8Array): string {
  const h = (i: number) => b[i]!.toString(16).padStart(2, '0');
  return `${h(3)}${h(2)}${h(1)}${h(0)}-${h(5)}${h(4)}-${h(7)}${h(6)}-${h(8)}${h(9)}-${[10, 11, 12, 13, 14, 15].map(h).join('')}`;
}

function utf16(b: Uint8Array): string {
  const s = new TextDecoder('utf-16le').decode(b);
  const nul = s.indexOf('\0');
  return nul < 0 ? s : s.slice(0, nul);
}

interface Header {
  index: number;
  bytes: Uint8Array;
  seq: bigint;
}

async function readHeaders(src: ByteSource, findings: Finding[]): Promise<Header> {
  const valid: Header[] = [];
  for (const [i, off] of HEADER_OFFSETS.entries()) {
    const b = await readExact(src, off, HEADER_SIZE, `VHDX header ${i + 1}`);
    const signed = bytesEqual(b, 0, 'head');
    if (signed && crc32c(b, 4, 4) === view(b).getUint32(4, true)) {
      valid.push({ index: i + 1, bytes: b, seq: view(b).getBigUint64(8, true) });
    } else {
      findings.push(
        signed
          ? finding(
              'CHECKSUM_MISMATCH',
              `VHDX header ${i + 1} has a bad CRC-32C; readers fall back to the other header — repair the image (open it in Hyper-V, or qemu-img convert it) and upload again`,
              'warning',
            )
          : finding(
              'MALFORMED_HEADER',
              `VHDX header ${i + 1} has no "head" signature; readers fall back to the other header — repair the image and upload again`,
              'warning',
            ),
      );
    }
  }
  if (valid.length === 0) {
    // the warnings above are superseded by the error thrown here
    findings.length = 0;
    throw new FormatError('neither VHDX header (64 KiB, 128 KiB) has a valid signature and CRC-32C', 'CHECKSUM_MISMATCH');
  }
  const [a, b] = valid;
  if (!b) return a!;
  if (a!.seq === b.seq) {
    // qemu: Disk2VHD writes two identical headers; different ones with one sequence number are corrupt
    if (!a!.bytes.every((x, i) => x === b.bytes[i])) throw new FormatError(`both VHDX headers carry sequence number ${a!.seq} but differ`, 'MALFORMED_HEADER');
    return a!;
  }
  return a!.seq > b.seq ? a! : b;
}

async function inspect(src: ByteSource, ctx: InspectContext): Promise<Inspection<VhdxDetails>> {
  const findings: Finding[] = [];
  const ident = await readExact(src, 0, IDENT_BYTES, 'VHDX file identifier');
  const current = await readHeaders(src, findings);
  const h = view(current.bytes);
  const version = h.getUint16(66, true);
  const logVersion = h.getUint16(64, true);
  if (version !== 1) throw new FormatError(`VHDX header version ${version} is not 1`, 'MALFORMED_HEADER');
  if (logVersion !== 0) throw new FormatError(`VHDX log version ${logVersion} is not 0`, 'MALFORMED_HEADER');
  const logLength = h.getUint32(68, true);
  const logOffset = h.getBigUint64(72, true);
  const logDirty = !current.bytes.subarray(48, 64).every((x) => x === 0);

  const rt = await readExact(src, REGION_TABLE_OFFSET, REGION_TABLE_SIZE, 'VHDX region table');
  if (!bytesEqual(rt, 0, 'regi')) throw new FormatError(`no region table signature ("regi") at ${REGION_TABLE_OFFSET}`, 'MALFORMED_HEADER');
  if (crc32c(rt, 4, 4) !== view(rt).getUint32(4, true))
    throw new FormatError(`the region table at ${REGION_TABLE_OFFSET} has a bad CRC-32C`, 'CHECKSUM_MISMATCH');
  const count = view(rt).getUint32(8, true);
  if (count > MAX_ENTRIES) throw new FormatError(`region table declares ${count} entries (the format allows ${MAX_ENTRIES})`, 'OVER_LIMIT');
  const regions: VhdxRegion[] = [];
  const unknownRequired: string[] = [];
  for (let i = 0; i < count; i++) {
    const at = 16 + i * 32;
    const e = view(rt.subarray(at, at + 32));
    const g = guid(rt.subarray(at, at + 16));
    const name = g === BAT_GUID ? 'BAT' : g === METADATA_GUID ? 'metadata' : 'unknown';
    const region: VhdxRegion = {
      guid: g,
      name,
      offset: e.getBigUint64(16, true),
      length: e.getUint32(24, true),
      required: (e.getUint32(28, true) & REGION_REQUIRED) !== 0,
    };
    if (name !== 'unknown' && regions.some((r) => r.name === name))
      throw new FormatError(`the region table lists the ${name} region twice`, 'MALFORMED_HEADER');
    if (name === 'unknown' && region.required) unknownRequired.push(`region ${g}`);
    regions.push(region);
  }
  const meta = regions.find((r) => r.name === 'metadata');
  const bat = regions.find((r) => r.name === 'BAT');
  if (!meta || !bat) throw new FormatError(`the region table has no ${meta ? 'BAT' : 'metadata'} region`, 'MALFORMED_HEADER');

  // every region and the log: aligned, after the header section, inside the file, not overlapping
  const spans = [...regions.map((r) => ({ what: `${r.name} region ${r.name === 'unknown' ? r.guid : ''}`.trim(), offset: r.offset, length: r.length }))];
  if (logLength > 0) spans.push({ what: 'log', offset: logOffset, length: logLength });
  for (const s of spans) {
    if (s.offset % BigInt(MiB) !== 0n || s.length % MiB !== 0 || s.offset < BigInt(HEADER_SECTION)) {
      findings.push(
        finding('MALFORMED_HEADER', `VHDX ${s.what} at ${s.offset} (${s.length} bytes) is not 1 MiB aligned after the header section; recreate the image`),
      );
    }
    if (src.size !== undefined && s.offset + BigInt(s.length) > BigInt(src.size)) {
      findings.push(
        finding(
          'OFFSET_PAST_END',
          `VHDX ${s.what} at ${s.offset} (${s.length} bytes) runs past the end of the ${src.size}-byte image; the image is truncated or crafted`,
        ),
      );
    }
  }
  for (let i = 0; i < spans.length; i++) {
    for (let k = i + 1; k < spans.length; k++) {
      const a = spans[i]!;
      const b = spans[k]!;
      if (a.offset < b.offset + BigInt(b.length) && b.offset < a.offset + BigInt(a.length)) {
        findings.push(finding('MALFORMED_HEADER', `VHDX ${a.what} and ${b.what} overlap; the image is crafted or damaged — recreate it`));
      }
    }
  }

  const details: VhdxDetails = {
    creator: utf16(ident.subarray(8, IDENT_BYTES)),
    currentHeader: current.index,
    headerSequence: current.seq,
    version,
    logVersion,
    logOffset,
    logLength,
    logDirty,
    regions,
    hasParent: false,
    metadataItems: [],
    unknownRequired,
  };
  if (meta.length < METADATA_TABLE_SIZE) throw new FormatError(`metadata region of ${meta.length} bytes cannot hold its 64 KiB table`, 'MALFORMED_HEADER');
  if (meta.offset > BigInt(Number.MAX_SAFE_INTEGER)) throw new FormatError(`metadata region offset ${meta.offset} is out of range`, 'OFFSET_PAST_END');
  const metaOffset = Number(meta.offset);
  // the BAT is scanned before the metadata is read: a stream passes it first
  let batScan: TableScan | undefined;
  const batInside = src.size === undefined || bat.offset + BigInt(bat.length) <= BigInt(src.size);
  if (bat.length > ctx.limits.maxTableScanBytes) {
    findings.push(
      finding(
        'OVER_LIMIT',
        `VHDX BAT region of ${bat.length} bytes is over the ${ctx.limits.maxTableScanBytes}-byte limit of table bytes checked per image; convert the disk to qcow2`,
      ),
    );
  } else if (batInside && bat.offset <= BigInt(Number.MAX_SAFE_INTEGER)) {
    batScan = await scanTable(src, Number(bat.offset), bat.length, vhdxBatRule(Number(bat.offset), bat.length));
  }
  const virtualSize = await readMetadata(src, metaOffset, meta.length, details, ctx, findings);

  if (details.blockSize !== undefined && details.logicalSectorSize !== undefined && virtualSize !== undefined && isValidBlockSize(details.blockSize)) {
    const entries = batEntries(virtualSize, details.blockSize, details.logicalSectorSize, details.hasParent);
    details.batEntries = Number(entries);
    // qemu: "BAT region too small" — entries past the region would be read from other structures
    if (entries * 8n > BigInt(bat.length)) {
      findings.push(
        finding(
          'MALFORMED_HEADER',
          `VHDX BAT region of ${bat.length} bytes cannot hold the ${entries} entries a ${virtualSize}-byte disk needs; recreate the image`,
        ),
      );
    }
    if (entries > BigInt(ctx.limits.maxTableEntries)) {
      findings.push(
        finding(
          'OVER_LIMIT',
          `VHDX block allocation table of ${entries} entries is over the limit of ${ctx.limits.maxTableEntries}; use a larger block size or convert the disk to qcow2`,
        ),
      );
    } else if (batScan) {
      // every present block wholly inside the file (block-map-rules.ts, shared with the reader)
      const total = emptyScan();
      mergeScan(total, vhdxBlockNeed(batScan, details.blockSize), `VHDX BAT at ${bat.offset}`);
      findings.push(...tableFindings(total, src.size));
    }
  }
  if (logDirty) {
    findings.push(
      finding(
        'CORRUPT_IMAGE',
        'VHDX log holds entries that were never applied (the image was not closed cleanly; qemu will not open it read-only); open it once in Hyper-V or run "qemu-img check -r all" on it, then upload again',
        'warning',
      ),
    );
  }
  const subformat = details.hasParent ? 'differencing' : details.leaveBlocksAllocated ? 'fixed' : 'dynamic';
  const inspection: Inspection<VhdxDetails> = { subformat, details, findings };
  if (virtualSize !== undefined && virtualSize > 0n) inspection.virtualSize = virtualSize;
  return inspection;
}

function isValidBlockSize(n: number): boolean {
  return n >= MiB && n <= 256 * MiB && (n & (n - 1)) === 0;
}

/** BAT entries (qemu vhdx_calc_bat_entries, [MS-VHDX] §2.5): payload blocks plus one sector bitmap block per chunk. */
function batEntries(virtualSize: bigint, blockSize: number, logicalSectorSize: number, hasParent: boolean): bigint {
  const chunkRatio = (2n ** 23n * BigInt(logicalSectorSize)) / BigInt(blockSize);
  const dataBlocks = (virtualSize + BigInt(blockSize) - 1n) / BigInt(blockSize);
  const bitmapBlocks = (dataBlocks + chunkRatio - 1n) / chunkRatio;
  if (hasParent) return bitmapBlocks * (chunkRatio + 1n);
  return dataBlocks === 0n ? 0n : dataBlocks + (dataBlocks - 1n) / chunkRatio;
}

async function readMetadata(
  src: ByteSource,
  metaOffset: number,
  metaLength: number,
  details: VhdxDetails,
  ctx: InspectContext,
  findings: Finding[],
): Promise<bigint | undefined> {
  const head = await readExact(src, metaOffset, 32, 'VHDX metadata table header');
  if (!bytesEqual(head, 0, 'metadata')) throw new FormatError(`no metadata table signature ("metadata") at ${metaOffset}`, 'MALFORMED_HEADER');
  const count = view(head).getUint16(10, true);
  if (count > MAX_ENTRIES) throw new FormatError(`metadata table declares ${count} entries (the format allows ${MAX_ENTRIES})`, 'OVER_LIMIT');
  const table = await readExact(src, metaOffset + 32, count * 32, 'VHDX metadata table entries');
  const items: (VhdxDetails['metadataItems'][number] & { known: boolean })[] = [];
  const known = new Set<string>(Object.values(ITEM));
  for (let i = 0; i < count; i++) {
    const e = view(table.subarray(i * 32, i * 32 + 32));
    const flags = e.getUint32(24, true);
    const item = {
      guid: guid(table.subarray(i * 32, i * 32 + 16)),
      offset: e.getUint32(16, true),
      length: e.getUint32(20, true),
      user: (flags & META_IS_USER) !== 0,
      virtualDisk: (flags & META_IS_VIRTUAL_DISK) !== 0,
      required: (flags & META_IS_REQUIRED) !== 0,
      known: false,
    };
    item.known = !item.user && known.has(item.guid);
    if (items.some((x) => x.guid === item.guid && x.user === item.user))
      throw new FormatError(`metadata item ${item.guid} is listed twice`, 'MALFORMED_HEADER');
    // qemu: an unknown item marked required means features we cannot honour
    if (!item.known && item.required) details.unknownRequired.push(`metadata item ${item.guid}`);
    const { known: _k, ...fact } = item;
    details.metadataItems.push(fact);
    items.push(item);
  }
  for (const g of REQUIRED_ITEMS) {
    if (!items.some((x) => x.known && x.guid === g)) throw new FormatError(`required metadata item ${g} is missing`, 'MALFORMED_HEADER');
  }

  let virtualSize: bigint | undefined;
  // item data in ascending offset order (a stream only moves forward)
  for (const it of items.filter((x) => x.known).sort((a, b) => a.offset - b.offset)) {
    if (it.length === 0) continue;
    if (it.offset < METADATA_TABLE_SIZE || it.offset + it.length > metaLength) {
      findings.push(
        finding(
          'OFFSET_PAST_END',
          `VHDX metadata item ${it.guid} at ${it.offset} (${it.length} bytes) lies outside its ${metaLength}-byte metadata region; the image is crafted or damaged`,
        ),
      );
      continue;
    }
    if (it.length > ctx.limits.maxDescriptorBytes) {
      findings.push(finding('OVER_LIMIT', `VHDX metadata item ${it.guid} of ${it.length} bytes is over the ${ctx.limits.maxDescriptorBytes}-byte limit`));
      continue;
    }
    const d = await readExact(src, metaOffset + it.offset, it.length, `VHDX metadata item ${it.guid}`);
    const v = view(d);
    const need = (n: number) => {
      if (d.length < n) throw new FormatError(`metadata item ${it.guid} is ${d.length} bytes, shorter than ${n}`, 'MALFORMED_HEADER');
    };
    switch (it.guid) {
      case ITEM.fileParameters: {
        need(8);
        details.blockSize = v.getUint32(0, true);
        const flags = v.getUint32(4, true);
        details.leaveBlocksAllocated = (flags & PARAM_LEAVE_BLOCKS_ALLOCATED) !== 0;
        details.hasParent = (flags & PARAM_HAS_PARENT) !== 0;
        break;
      }
      case ITEM.virtualDiskSize:
        need(8);
        virtualSize = v.getBigUint64(0, true);
        break;
      case ITEM.page83Data:
        need(16);
        details.page83Data = guid(d.subarray(0, 16));
        break;
      case ITEM.logicalSectorSize:
        need(4);
        details.logicalSectorSize = v.getUint32(0, true);
        break;
      case ITEM.physicalSectorSize:
        need(4);
        details.physicalSectorSize = v.getUint32(0, true);
        break;
      case ITEM.parentLocator:
        details.parentLocator = parseParentLocator(d);
        break;
    }
  }
  if (details.blockSize !== undefined && !isValidBlockSize(details.blockSize)) {
    findings.push(finding('MALFORMED_HEADER', `VHDX block size ${details.blockSize} is not a power of two between 1 MiB and 256 MiB; recreate the image`));
  }
  for (const [what, n] of [
    ['logical', details.logicalSectorSize],
    ['physical', details.physicalSectorSize],
  ] as const) {
    if (n !== undefined && n !== 512 && n !== 4096)
      findings.push(finding('MALFORMED_HEADER', `VHDX ${what} sector size ${n} is not 512 or 4096; recreate the image`));
  }
  if (virtualSize !== undefined && details.logicalSectorSize && (virtualSize === 0n || virtualSize % BigInt(details.logicalSectorSize) !== 0n)) {
    findings.push(
      finding(
        'MALFORMED_HEADER',
        `VHDX virtual disk size ${virtualSize} is not a positive multiple of the ${details.logicalSectorSize}-byte logical sector; recreate the image`,
      ),
    );
  }
  return virtualSize;
}

/** Parent locator: type GUID, reserved u16, count u16, entries of 12 bytes; keys and values UTF-16LE at offsets from the item start. */
function parseParentLocator(d: Uint8Array): { type: string; entries: Record<string, string> } {
  if (d.length < 20) throw new FormatError(`parent locator of ${d.length} bytes is shorter than its 20-byte header`, 'MALFORMED_HEADER');
  const v = view(d);
  const type = guid(d.subarray(0, 16));
  const count = v.getUint16(18, true);
  if (20 + count * 12 > d.length) throw new FormatError(`parent locator declares ${count} entries, more than its ${d.length} bytes hold`, 'MALFORMED_HEADER');
  const entries: Record<string, string> = {};
  const dec = new TextDecoder('utf-16le');
  for (let i = 0; i < count; i++) {
    const at = 20 + i * 12;
    const ko = v.getUint32(at, true);
    const vo = v.getUint32(at + 4, true);
    const kl = v.getUint16(at + 8, true);
    const vl = v.getUint16(at + 10, true);
    if (ko + kl > d.length || vo + vl > d.length) throw new FormatError(`parent locator entry ${i} points outside the item`, 'MALFORMED_HEADER');
    entries[dec.decode(d.subarray(ko, ko + kl))] = dec.decode(d.subarray(vo, vo + vl));
  }
  return { type: type === VHDX_PARENT_LOCATOR_TYPE ? 'vhdx' : type, entries };
}

const checks: SafetyRule<VhdxDetails>[] = [
  {
    code: 'DIFFERENCING_DISK',
    description: 'a differencing VHDX reads its parent, another file',
    run: ({ details: d }) => {
      if (!d.hasParent && !d.parentLocator) return [];
      const e = d.parentLocator?.entries ?? {};
      const parent = e.relative_path ?? e.absolute_win32_path ?? e.volume_path ?? e.parent_linkage ?? '(unnamed)';
      return [
        finding(
          'DIFFERENCING_DISK',
          `differencing VHDX with parent ${JSON.stringify(parent)}; merge it into a standalone disk ` +
            `(Hyper-V Merge-VHD, or "qemu-img convert -O vhdx CHILD OUT" next to its parent) and upload that`,
        ),
      ];
    },
  },
  {
    code: 'UNKNOWN_FEATURES',
    description: 'required regions or metadata items we do not know: the image cannot be read correctly',
    run: ({ details: d }) =>
      d.unknownRequired.length
        ? [
            finding(
              'UNKNOWN_FEATURES',
              `VHDX requires features we (and qemu) do not implement (${d.unknownRequired.join(', ')}); convert it with the tool that made it to a plain VHDX or qcow2 and upload that`,
            ),
          ]
        : [],
  },
];

export const vhdxFormat = describeFormat<VhdxDetails>({
  name: 'vhdx',
  description: 'Microsoft VHDX: dynamic, fixed, differencing',
  async probe(src) {
    // qemu's probe is exactly the 8-byte identifier; a narrower one would let qemu see a VHDX in what we call raw
    return bytesEqual(await src.read(0, 8), 0, 'vhdxfile');
  },
  inspect,
  checks,
});

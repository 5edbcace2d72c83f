/**
 * VHD — Microsoft Virtual Hard Disk (Virtual PC / Hyper-V v1) image; qemu calls it "vpc".
 *
 * Spec: "Virtual Hard Disk Image Format Specification" (Microsoft, 2006), "Hard Disk Footer
 * Format" and "Dynamic Disk Header Format". What qemu accepts and how it sizes the disk: qemu
 * block/vpc.c (`vpc_probe`, `vpc_open`). All fields big-endian.
 *
 * Footer (512 bytes; at the end of every VHD; dynamic and differencing disks also keep a copy at
 * offset 0. Virtual PC before 2004 wrote a 511-byte footer, which the spec says readers accept):
 * | offset | size | field |
 * |--------|------|-------|
 * | 0      | 8    | cookie "conectix" |
 * | 8      | 4    | features (bit 0 temporary, bit 1 reserved, always set) |
 * | 12     | 4    | file format version (0x00010000) |
 * | 16     | 8    | data offset: the dynamic disk header; all ones for a fixed disk |
 * | 24     | 4    | timestamp, seconds since 2000-01-01 00:00:00 UTC |
 * | 28     | 4    | creator application ("vpc ", "qemu", "qem2", "win ", "d2v ", "CTXS", "tap\0") |
 * | 32     | 4    | creator version (major u16, minor u16) |
 * | 36     | 4    | creator host OS ("Wi2k", "Mac ") |
 * | 40     | 8    | original size (bytes) |
 * | 48     | 8    | current size (bytes) |
 * | 56     | 4    | disk geometry: cylinders u16, heads u8, sectors per track u8 |
 * | 60     | 4    | disk type: 2 fixed, 3 dynamic, 4 differencing |
 * | 64     | 4    | checksum: one's complement of the byte sum of the footer with this field zeroed |
 * | 68     | 16   | unique id |
 * | 84     | 1    | saved state |
 *
 * Dynamic disk header (1024 bytes at the footer's data offset):
 * | offset | size | field |
 * |--------|------|-------|
 * | 0      | 8    | cookie "cxsparse" |
 * | 8      | 8    | data offset (unused, all ones) |
 * | 16     | 8    | table offset: the block allocation table (BAT) |
 * | 24     | 4    | header version (0x00010000) |
 * | 28     | 4    | max table entries (BAT entries of 4 bytes) |
 * | 32     | 4    | block size (2 MiB by default) |
 * | 36     | 4    | checksum (as the footer's) |
 * | 40     | 16   | parent unique id |
 * | 56     | 4    | parent timestamp |
 * | 64     | 512  | parent unicode name (UTF-16BE) |
 * | 576    | 8×24 | parent locator entries: platform code u32 ("W2ru", "W2ku", "Mac ", "MacX"), platform data space u32, platform data length u32, reserved u32, platform data offset u64 |
 *
 * Virtual size, as qemu 7.2 `vpc_open`: cylinders × heads × sectors × 512, unless the creator
 * application is one that writes the real size ('win ', 'qem2', 'd2v ', 'CTXS', 'tap\0') or the
 * geometry is the maximum 65535×16×255 — then the current size (rounded down to sectors).
 * (qemu ≥ 10.0 inverts the list: CHS only for 'vpc ' and 'qemu'; the two agree on every creator
 * named here.)
 *
 * Invariants enforced: footer checksum (qemu refuses a bad one), known disk type, the footer copy
 * at 0 agrees with the one at the end, dynamic header cookie and checksum, block size a power of
 * two ≥ 512 and the BAT large enough for the disk (qemu), BAT inside the file, at most 2040 GiB
 * (qemu's VHD_MAX_SECTORS), a fixed disk holds its data. The BAT itself is never read: its offset
 * and size are checked against the file size and `limits.maxTableEntries` (ours).
 *
 * Detection: qemu's probe only looks for the cookie at offset 0, so qemu-img calls a fixed VHD
 * "raw" unless told `-f vpc`. We also look at the end, where a fixed disk keeps its only footer:
 * the cookie there plus a 1.x file format version.
 */
import { checkTables, vhdBatRule } from './block-map-rules.js';
import { FormatError, bytesEqual, readExact, tailOffset, type ByteSource, view } from './byte-source.js';
import { finding, type Finding } from './findings.js';
import { describeFormat, type InspectContext, type Inspection, type SafetyRule } from './format.js';

const COOKIE = 'conectix';
const DYN_COOKIE = 'cxsparse';
const FOOTER = 512;
/** Virtual PC before 2004 wrote the footer one byte short. */
const OLD_FOOTER = 511;
const DYN_HEADER = 1024;
const SECTOR = 512n;

// footer field offsets
export const F_FEATURES = 8;
export const F_VERSION = 12;
export const F_DATA_OFFSET = 16;
export const F_TIMESTAMP = 24;
export const F_CREATOR_APP = 28;
export const F_CREATOR_VERSION = 32;
export const F_CREATOR_OS = 36;
export const F_ORIGINAL_SIZE = 40;
export const F_CURRENT_SIZE = 48;
export const F_CYLINDERS = 56;
export const F_HEADS = 58;
export const F_SECTORS = 59;
export const F_DISK_TYPE = 60;
export const F_CHECKSUM = 64;
export const F_UNIQUE_ID = 68;
const F_SAVED_STATE = 84;

// dynamic disk header field offsets
const D_TABLE_OFFSET = 16;
const D_VERSION = 24;
const D_MAX_ENTRIES = 28;
const D_BLOCK_SIZE = 32;
const D_CHECKSUM = 36;
const D_PARENT_ID = 40;
const D_PARENT_TIMESTAMP = 56;
const D_PARENT_NAME = 64;
const D_PARENT_NAME_BYTES = 512;
const D_LOCATORS = 576;
const LOCATOR_BYTES = 24;
const LOCATOR_COUNT = 8;

/** qemu VHD_MAX_GEOMETRY: the geometry of a disk too large for CHS, whose real size is the current size. */
const MAX_GEOMETRY_SECTORS = 65535 * 16 * 255;
/** qemu VHD_MAX_SECTORS: 2040 GiB, the largest VHD qemu (and Hyper-V) opens. */
const MAX_SECTORS = 0xff000000n;
/** Seconds from the Unix epoch to the VHD epoch, 2000-01-01 00:00:00 UTC. */
const VHD_EPOCH_SECONDS = 946684800;

const DISK_TYPES: Record<number, VhdDiskType> = { 2: 'fixed', 3: 'dynamic', 4: 'differencing' };
/** Creators whose current-size field is the disk size (qemu 7.2 vpc_open's table). */
const SIZE_CREATORS = ['win ', 'qem2', 'd2v ', 'CTXS', 'tap\0'];
const PLATFORMS: Record<string, string> = {
  W2ru: 'W2ru (Windows relative path, UTF-16LE)',
  W2ku: 'W2ku (Windows absolute path, UTF-16LE)',
  'Mac ': 'Mac (Mac OS alias)',
  MacX: 'MacX (file URL, UTF-8)',
  Wi2r: 'Wi2r (deprecated)',
  Wi2k: 'Wi2k (deprecated)',
};

type VhdDiskType = 'fixed' | 'dynamic' | 'differencing';

export interface VhdParentLocator {
  platform: string;
  dataSpace: number;
  dataLength: number;
  dataOffset: bigint;
}

export interface VhdDetails {
  diskType: VhdDiskType;
  /** where the footer was found: both copies, only the end (fixed), only the start (end lost) */
  footerAt: 'start+end' | 'end' | 'start';
  /** 511 when the footer is the short one of early Virtual PC */
  footerBytes: number;
  features: number;
  formatVersion: string;
  /** dynamic header offset; absent for a fixed disk (all ones) */
  dataOffset?: bigint;
  timestamp: string;
  creatorApplication: string;
  creatorVersion: string;
  creatorHostOs: string;
  originalSize: bigint;
  currentSize: bigint;
  geometry: { cylinders: number; heads: number; sectorsPerTrack: number };
  /** which rule gave the virtual size (see the header comment) */
  sizeFrom: 'geometry' | 'current size';
  uniqueId: string;
  savedState: boolean;
  // dynamic and differencing disks
  dynamicHeaderVersion?: string;
  tableOffset?: bigint;
  maxTableEntries?: number;
  blockSize?: number;
  // differencing disks
  parentUniqueId?: string;
  parentTimestamp?: string;
  parentName?: string;
  parentLocators?: VhdParentLocator[];
}

/** One's complement of the byte sum, the checksum field counted as zeros. */
function checksumOk(b: Uint8Array, field: number): boolean {
  let sum = 0;
  for (let i = 0; i < b.length; i++) if (i < field || i >= field + 4) sum = (sum + b[i]!) >>> 0;
  return ~sum >>> 0 === view(b).getUint32(field);
}

function ascii4(b: Uint8Array, at: number): string {
  return String.fromCharCode(...b.subarray(at, at + 4));
}

function printable(s: string): string {
  return s.replace(/\0/g, '\\0');
}

function hexId(b: Uint8Array): string {
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function vhdTime(seconds: number): string {
  return new Date((VHD_EPOCH_SECONDS + seconds) * 1000).toISOString();
}

/** A footer: the cookie and a 1.x file format version (the spec's only version is 1.0). */
function looksLikeFooter(b: Uint8Array): boolean {
  return b.length >= F_VERSION + 4 && bytesEqual(b, 0, COOKIE) && view(b).getUint16(F_VERSION) === 1;
}

/** The footer at the end of the file (512 bytes, or the 511-byte one of early Virtual PC, zero-padded). */
async function footerAtEnd(src: ByteSource): Promise<{ bytes: Uint8Array; length: number } | undefined> {
  const at = tailOffset(src, FOOTER);
  const b = await src.read(at, FOOTER);
  if (b.length === FOOTER && looksLikeFooter(b)) return { bytes: b, length: FOOTER };
  const oldAt = tailOffset(src, OLD_FOOTER);
  const old = await src.read(oldAt, OLD_FOOTER);
  if (old.length === OLD_FOOTER && looksLikeFooter(old)) {
    const padded = new Uint8Array(FOOTER);
    padded.set(old);
    return { bytes: padded, length: OLD_FOOTER };
  }
  return undefined;
}

/** The fields that decide what a reader sees; both footer copies must agree on them. */
function sameDisk(a: Uint8Array, b: Uint8Array): boolean {
  const va = view(a);
  const vb = view(b);
  return (
    va.getBigUint64(F_DATA_OFFSET) === vb.getBigUint64(F_DATA_OFFSET) &&
    va.getBigUint64(F_CURRENT_SIZE) === vb.getBigUint64(F_CURRENT_SIZE) &&
    va.getUint32(F_CYLINDERS) === vb.getUint32(F_CYLINDERS) &&
    va.getUint32(F_DISK_TYPE) === vb.getUint32(F_DISK_TYPE) &&
    ascii4(a, F_CREATOR_APP) === ascii4(b, F_CREATOR_APP)
  );
}

async function inspect(src: ByteSource, ctx: InspectContext): Promise<Inspection<VhdDetails>> {
  const findings: Finding[] = [];
  // reads in ascending order: the copy at 0, the dynamic header, then the end (kept by a stream's tail)
  const start = await src.read(0, FOOTER);
  const startIsFooter = start.length === FOOTER && bytesEqual(start, 0, COOKIE);
  const startType = startIsFooter ? view(start).getUint32(F_DISK_TYPE) : undefined;
  let dyn: Uint8Array | undefined;
  if (startIsFooter && (startType === 3 || startType === 4)) {
    const dataOffset = view(start).getBigUint64(F_DATA_OFFSET);
    if (src.size !== undefined && dataOffset + BigInt(DYN_HEADER) > BigInt(src.size)) {
      throw new FormatError(`dynamic disk header at ${dataOffset} (${DYN_HEADER} bytes) lies past the end of the ${src.size}-byte image`, 'OFFSET_PAST_END');
    }
    if (dataOffset > BigInt(Number.MAX_SAFE_INTEGER)) throw new FormatError(`dynamic disk header offset ${dataOffset} is out of range`, 'OFFSET_PAST_END');
    dyn = await readExact(src, Number(dataOffset), DYN_HEADER, 'VHD dynamic disk header');
  }
  // a stream's end is not known while it flows: with a copy at 0 the run goes on without it, so it
  // declares the BAT scan before the BAT streams by; the final run (size known) reads the end
  const end = src.size === undefined && startIsFooter ? undefined : await footerAtEnd(src);
  // qemu reads the copy at 0 when it is there, else the end
  const footer = startIsFooter ? start : end?.bytes;
  if (!footer) throw new FormatError('no VHD footer ("conectix") at the start or at the end', 'MALFORMED_HEADER');
  const f = view(footer);

  if (!checksumOk(footer, F_CHECKSUM)) {
    findings.push(
      finding(
        'CHECKSUM_MISMATCH',
        'VHD footer checksum does not match its bytes (qemu refuses such an image); the image is damaged or was edited by hand — recreate it and upload again',
      ),
    );
  }
  const diskTypeCode = f.getUint32(F_DISK_TYPE);
  const diskType = DISK_TYPES[diskTypeCode];
  if (!diskType) throw new FormatError(`disk type ${diskTypeCode} is not 2 (fixed), 3 (dynamic) or 4 (differencing)`, 'MALFORMED_HEADER');
  if (startIsFooter && end && !sameDisk(start, end.bytes)) {
    findings.push(
      finding(
        'MALFORMED_HEADER',
        'the VHD footer copy at offset 0 and the footer at the end describe different disks, so readers disagree on what this image is; recreate it and upload again',
      ),
    );
  }

  const creator = ascii4(footer, F_CREATOR_APP);
  const cylinders = f.getUint16(F_CYLINDERS);
  const heads = footer[F_HEADS]!;
  const sectorsPerTrack = footer[F_SECTORS]!;
  const currentSize = f.getBigUint64(F_CURRENT_SIZE);
  const chsSectors = cylinders * heads * sectorsPerTrack;
  const useCurrentSize = SIZE_CREATORS.includes(creator) || chsSectors === MAX_GEOMETRY_SECTORS;
  const sectors = useCurrentSize ? currentSize / SECTOR : BigInt(chsSectors);
  const dataOffset = f.getBigUint64(F_DATA_OFFSET);
  const details: VhdDetails = {
    diskType,
    footerAt: startIsFooter && end ? 'start+end' : startIsFooter ? 'start' : 'end',
    footerBytes: !startIsFooter && end ? end.length : FOOTER,
    features: f.getUint32(F_FEATURES),
    formatVersion: `${f.getUint16(F_VERSION)}.${f.getUint16(F_VERSION + 2)}`,
    timestamp: vhdTime(f.getUint32(F_TIMESTAMP)),
    creatorApplication: printable(creator),
    creatorVersion: `${f.getUint16(F_CREATOR_VERSION)}.${f.getUint16(F_CREATOR_VERSION + 2)}`,
    creatorHostOs: printable(ascii4(footer, F_CREATOR_OS)),
    originalSize: f.getBigUint64(F_ORIGINAL_SIZE),
    currentSize,
    geometry: { cylinders, heads, sectorsPerTrack },
    sizeFrom: useCurrentSize ? 'current size' : 'geometry',
    uniqueId: hexId(footer.subarray(F_UNIQUE_ID, F_UNIQUE_ID + 16)),
    savedState: footer[F_SAVED_STATE] !== 0,
  };
  if (dataOffset !== 0xffffffffffffffffn) details.dataOffset = dataOffset;
  if (sectors > MAX_SECTORS) {
    findings.push(
      finding(
        'MALFORMED_HEADER',
        `VHD declares ${sectors * SECTOR} bytes, over the format's 2040 GiB maximum (qemu refuses it); convert the disk to qcow2 or VHDX`,
      ),
    );
  }
  if (sectors === 0n) findings.push(finding('MALFORMED_HEADER', 'VHD declares a disk of 0 bytes (zero geometry or current size); recreate the image'));

  if (diskType === 'fixed') {
    if (!end) findings.push(finding('TRUNCATED', 'fixed VHD has no footer at its end; the image is truncated — upload it whole'));
    else if (src.size !== undefined && BigInt(src.size - end.length) < sectors * SECTOR) {
      findings.push(
        finding('TRUNCATED', `fixed VHD holds ${src.size - end.length} data bytes but declares ${sectors * SECTOR}; the image is truncated — upload it whole`),
      );
    }
  } else {
    // a dynamic disk's BAT and data follow its header; only the copy at 0 says where
    if (!startIsFooter || !dyn) throw new FormatError(`a ${diskType} VHD must begin with a copy of its footer`, 'MALFORMED_HEADER');
    if (!end) findings.push(finding('TRUNCATED', `${diskType} VHD has no footer at its end; the image is truncated — upload it whole`));
    await inspectDynamic(dyn, details, sectors, src, ctx, findings);
  }
  const inspection: Inspection<VhdDetails> = { subformat: diskType, details, findings };
  if (sectors > 0n) inspection.virtualSize = sectors * SECTOR;
  return inspection;
}

async function inspectDynamic(dyn: Uint8Array, details: VhdDetails, sectors: bigint, src: ByteSource, ctx: InspectContext, findings: Finding[]): Promise<void> {
  if (!bytesEqual(dyn, 0, DYN_COOKIE)) throw new FormatError(`no dynamic disk header ("cxsparse") at offset ${details.dataOffset}`, 'MALFORMED_HEADER');
  if (!checksumOk(dyn, D_CHECKSUM)) {
    findings.push(
      finding(
        'CHECKSUM_MISMATCH',
        'VHD dynamic disk header checksum does not match its bytes; the image is damaged or was edited by hand — recreate it and upload again',
      ),
    );
  }
  const d = view(dyn);
  const tableOffset = d.getBigUint64(D_TABLE_OFFSET);
  const maxEntries = d.getUint32(D_MAX_ENTRIES);
  const blockSize = d.getUint32(D_BLOCK_SIZE);
  details.dynamicHeaderVersion = `${d.getUint16(D_VERSION)}.${d.getUint16(D_VERSION + 2)}`;
  details.tableOffset = tableOffset;
  details.maxTableEntries = maxEntries;
  details.blockSize = blockSize;
  // qemu: "Invalid block size"
  if (blockSize < 512 || (blockSize & (blockSize - 1)) !== 0) {
    findings.push(finding('MALFORMED_HEADER', `VHD block size ${blockSize} is not a power of two of at least 512 bytes (qemu refuses it); recreate the image`));
  } else if (BigInt(maxEntries) * BigInt(blockSize) < sectors * SECTOR) {
    // qemu: "Page table too small" — blocks past the table would be read from nowhere
    findings.push(
      finding(
        'MALFORMED_HEADER',
        `VHD block allocation table (${maxEntries} blocks of ${blockSize} bytes) is too small for the ${sectors * SECTOR}-byte disk; recreate the image`,
      ),
    );
  }
  if (maxEntries > ctx.limits.maxTableEntries) {
    findings.push(
      finding(
        'OVER_LIMIT',
        `VHD block allocation table of ${maxEntries} entries is over the limit of ${ctx.limits.maxTableEntries}; use a larger block size or convert the disk to qcow2`,
      ),
    );
  }
  if (src.size !== undefined && tableOffset + BigInt(maxEntries) * 4n > BigInt(src.size)) {
    findings.push(
      finding(
        'OFFSET_PAST_END',
        `VHD block allocation table at ${tableOffset} (${maxEntries} entries of 4 bytes) runs past the end of the ${src.size}-byte image; the image is truncated or crafted`,
      ),
    );
  }
  // every allocated block inside the file (block-map-rules.ts, shared with the reader); a
  // differencing disk's blocks are checked the same way
  const validBlocks = blockSize >= 512 && (blockSize & (blockSize - 1)) === 0;
  const batInside = src.size === undefined || tableOffset + BigInt(maxEntries) * 4n <= BigInt(src.size);
  if (validBlocks && batInside && maxEntries <= ctx.limits.maxTableEntries && tableOffset <= BigInt(Number.MAX_SAFE_INTEGER)) {
    const needed = Math.min(maxEntries, Number((sectors * SECTOR + BigInt(blockSize) - 1n) / BigInt(blockSize)));
    const batOffset = Number(tableOffset);
    const rule = vhdBatRule({ batOffset, batBytes: needed * 4, blockSize });
    findings.push(...(await checkTables(src, [{ offset: batOffset, length: needed * 4, rule }], ctx.limits.maxTableScanBytes, 'VHD')));
  }
  if (details.diskType !== 'differencing') return;
  details.parentUniqueId = hexId(dyn.subarray(D_PARENT_ID, D_PARENT_ID + 16));
  details.parentTimestamp = vhdTime(d.getUint32(D_PARENT_TIMESTAMP));
  const name = new TextDecoder('utf-16be').decode(dyn.subarray(D_PARENT_NAME, D_PARENT_NAME + D_PARENT_NAME_BYTES));
  const nul = name.indexOf('\0');
  details.parentName = nul < 0 ? name : name.slice(0, nul);
  details.parentLocators = [];
  for (let i = 0; i < LOCATOR_COUNT; i++) {
    const at = D_LOCATORS + i * LOCATOR_BYTES;
    if (d.getUint32(at) === 0) continue; // unused entry
    const code = ascii4(dyn, at);
    details.parentLocators.push({
      platform: PLATFORMS[code] ?? printable(code),
      dataSpace: d.getUint32(at + 4),
      dataLength: d.getUint32(at + 8),
      dataOffset: d.getBigUint64(at + 16),
    });
  }
}

const checks: SafetyRule<VhdDetails>[] = [
  {
    code: 'DIFFERENCING_DISK',
    description: 'a differencing VHD reads its parent, another file',
    run: ({ details: d }) =>
      d.diskType === 'differencing'
        ? [
            finding(
              'DIFFERENCING_DISK',
              `differencing VHD with parent ${JSON.stringify(d.parentName ?? '')}; merge it into a standalone disk ` +
                `(Hyper-V Merge-VHD, or "qemu-img convert -O vpc CHILD OUT" next to its parent) and upload that`,
            ),
          ]
        : [],
  },
];

export const vhdFormat = describeFormat<VhdDetails>({
  name: 'vhd',
  description: 'Microsoft VHD (Virtual PC): fixed, dynamic, differencing',
  async probe(src) {
    // qemu's own probe: the cookie at 0 (dynamic, differencing); nothing narrower, or qemu would
    // see a VHD in what we call raw
    if (bytesEqual(await src.read(0, COOKIE.length), 0, COOKIE)) return true;
    return (await footerAtEnd(src)) !== undefined;
  },
  inspect,
  checks,
  // vpc: qemu's name
  claimAliases: ['vpc'],
});

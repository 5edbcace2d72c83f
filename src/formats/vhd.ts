/**
 * VHD — Microsoft Virtual Hard Disk (Virtual PC) image.
 *
 * Spec: "Virtual Hard Disk Image Format Specification" (Microsoft, 2006), Appendix "Hard Disk
 * Footer Format" and "Dynamic Disk Header Format"; qemu block/vpc.c for the sizing rule. All fields
 * big-endian.
 *
 * Footer (512 bytes; at the end of every VHD, and copied at offset 0 of dynamic/differencing ones):
 * | offset | size | field |
 * |--------|------|-------|
 * | 0      | 8    | cookie "conectix" |
 * | 8      | 4    | features |
 * | 12     | 4    | file format version (0x00010000) |
 * | 16     | 8    | data offset (dynamic header; all ones for fixed) |
 * | 24     | 4    | timestamp (seconds since 2000-01-01) |
 * | 28     | 4    | creator application ("vpc ", "qemu", "qem2", "win ", "d2v ", "CTXS", "tap\0") |
 * | 32     | 4    | creator version |
 * | 36     | 4    | creator host OS ("Wi2k", "Mac ") |
 * | 40     | 8    | original size |
 * | 48     | 8    | current size |
 * | 56     | 4    | geometry: cylinders u16, heads u8, sectors/track u8 |
 * | 60     | 4    | disk type (2 fixed, 3 dynamic, 4 differencing) |
 * | 64     | 4    | checksum: one's complement of the byte sum with this field zeroed |
 * | 68     | 16   | unique id |
 * | 84     | 1    | saved state |
 *
 * Dynamic header (1024 bytes at data offset): 0 cookie "cxsparse", 8 data offset, 16 table
 * offset (BAT), 24 header version, 28 max table entries, 32 block size, 36 checksum, 40 parent
 * unique id, 56 parent timestamp, 64 parent unicode name (512 bytes UTF-16BE), 576 eight parent
 * locator entries of 24 bytes (platform code, data space, data length, reserved, data offset u64).
 *
 * A fixed VHD carries its footer only at the end: the probe looks there too (qemu's own probe only
 * looks at offset 0, so qemu-img calls a fixed VHD "raw" unless told `-f vpc`).
 *
 * Virtual size follows qemu: CHS geometry × 512, unless the creator is one that writes the real
 * size (win, qem2, d2v, CTXS, tap) or the geometry is the maximum (65535×16×255) — then current size.
 */
import { FormatError, bytesEqual, readExact, tailOffset, type ByteSource, view } from './byte-source.js';
import { finding, type Finding } from './findings.js';
import { describeFormat, type InspectContext, type SafetyRule } from './format.js';

const COOKIE = 'conectix';
const DYN_COOKIE = 'cxsparse';
const FOOTER = 512;
const DYN_HEADER = 1024;
const VHD_MAX_GEOMETRY = 65535 * 16 * 255;
const DISK_TYPES: Record<number, string> = { 2: 'fixed', 3: 'dynamic', 4: 'differencing' };
const SIZE_CREATORS = ['win ', 'qem2', 'd2v ', 'CTXS', 'tap\0'];
const PLATFORMS: Record<string, string> = { W2ru: 'W2ru (relative Windows path)', W2ku: 'W2ku (absolute Windows path)', 'Mac ': 'Mac', MacX: 'MacX (file URL)', Wi2r: 'Wi2r', Wi2k: 'Wi2k' };

export interface VhdDetails {
  diskType: string;
  footerAt: 'start+end' | 'end' | 'start';
  creatorApplication: string;
  creatorVersion: string;
  creatorHostOs: string;
  originalSize: number;
  currentSize: number;
  geometry: { cylinders: number; heads: number; sectorsPerTrack: number };
  sizeFrom: 'geometry' | 'current size';
  uniqueId: string;
  savedState: boolean;
  blockSize?: number;
  maxTableEntries?: number;
  tableOffset?: number;
  parentName?: string;
  parentLocators?: { platform: string; dataLength: number; dataOffset: number }[];
}

function checksumOk(b: Uint8Array, at: number): boolean {
  let sum = 0;
  for (let i = 0; i < b.length; i++) if (i < at || i >= at + 4) sum = (sum + b[i]!) >>> 0;
  return (~sum >>> 0) === view(b).getUint32(at);
}

function ascii4(b: Uint8Array, at: number): string {
  return String.fromCharCode(...b.subarray(at, at + 4));
}

async function footerAtEnd(src: ByteSource): Promise<Uint8Array | undefined> {
  const end = tailOffset(src, FOOTER);
  const b = await src.read(end, FOOTER);
  if (b.length === FOOTER && bytesEqual(b, 0, COOKIE)) return b;
  // very old Virtual PC images have a 511-byte footer
  if (src.size !== undefined && src.size >= 511) {
    const b2 = await src.read(src.size - 511, 511);
    if (b2.length === 511 && bytesEqual(b2, 0, COOKIE)) {
      const padded = new Uint8Array(FOOTER);
      padded.set(b2);
      return padded;
    }
  }
  return undefined;
}

async function inspect(src: ByteSource, ctx: InspectContext) {
  const findings: Finding[] = [];
  const start = await src.read(0, FOOTER);
  const startIsFooter = start.length === FOOTER && bytesEqual(start, 0, COOKIE);
  const end = await footerAtEnd(src);
  const footer = startIsFooter ? start : end;
  if (!footer) throw new FormatError('no VHD footer found at the start or the end', 'MALFORMED_HEADER');
  if (!checksumOk(footer, 64)) {
    findings.push(finding('CHECKSUM_MISMATCH', 'VHD footer checksum does not match its bytes; the image is damaged or was edited by hand — recreate it'));
  }
  const f = view(footer);
  const dataOffset = f.getBigUint64(16);
  const diskTypeCode = f.getUint32(60);
  const diskType = DISK_TYPES[diskTypeCode];
  if (!diskType) throw new FormatError(`disk type ${diskTypeCode} is not 2 (fixed), 3 (dynamic) or 4 (differencing)`, 'MALFORMED_HEADER');
  const creator = ascii4(footer, 28);
  const cyls = f.getUint16(56);
  const heads = footer[58]!;
  const secs = footer[59]!;
  const currentSize = f.getBigUint64(48);
  const chsSectors = cyls * heads * secs;
  const useSize = SIZE_CREATORS.includes(creator) || chsSectors === VHD_MAX_GEOMETRY;
  const virtualSize = useSize ? (currentSize / 512n) * 512n : BigInt(chsSectors) * 512n;
  const details: VhdDetails = {
    diskType,
    footerAt: startIsFooter && end ? 'start+end' : startIsFooter ? 'start' : 'end',
    creatorApplication: creator.replace(/\0/g, '\\0'),
    creatorVersion: `${f.getUint16(32)}.${f.getUint16(34)}`,
    creatorHostOs: ascii4(footer, 36).replace(/\0/g, ''),
    originalSize: Number(f.getBigUint64(40)),
    currentSize: Number(currentSize),
    geometry: { cylinders: cyls, heads, sectorsPerTrack: secs },
    sizeFrom: useSize ? 'current size' : 'geometry',
    uniqueId: [...footer.subarray(68, 84)].map((x) => x.toString(16).padStart(2, '0')).join(''),
    savedState: footer[84] === 1,
  };
  if (diskType === 'fixed') {
    if (!end) findings.push(finding('TRUNCATED', 'fixed VHD has no footer at its end; the image is truncated — upload it whole'));
    if (src.size !== undefined && end && BigInt(src.size - FOOTER) < currentSize) {
      findings.push(finding('TRUNCATED', `fixed VHD holds ${src.size - FOOTER} data bytes but declares ${currentSize}; the image is truncated`));
    }
  } else {
    if (!startIsFooter) throw new FormatError(`a ${diskType} VHD must begin with a footer copy`, 'MALFORMED_HEADER');
    if (!end) findings.push(finding('TRUNCATED', `${diskType} VHD has no footer at its end; the image is truncated — upload it whole`));
    if (dataOffset > BigInt(Number.MAX_SAFE_INTEGER)) throw new FormatError(`data offset ${dataOffset} is out of range`, 'FIELD_OUT_OF_RANGE');
    const dyn = await readExact(src, Number(dataOffset), DYN_HEADER, 'VHD dynamic disk header');
    if (!bytesEqual(dyn, 0, DYN_COOKIE)) throw new FormatError(`no dynamic disk header ("cxsparse") at offset ${dataOffset}`, 'MALFORMED_HEADER');
    if (!checksumOk(dyn, 36)) findings.push(finding('CHECKSUM_MISMATCH', 'VHD dynamic disk header checksum does not match; the image is damaged — recreate it'));
    const d = view(dyn);
    const tableOffset = d.getBigUint64(16);
    const maxEntries = d.getUint32(28);
    const blockSize = d.getUint32(32);
    details.blockSize = blockSize;
    details.maxTableEntries = maxEntries;
    details.tableOffset = Number(tableOffset);
    if (blockSize < 512 || (blockSize & (blockSize - 1)) !== 0) throw new FormatError(`block size ${blockSize} is not a power of two ≥ 512`, 'MALFORMED_HEADER');
    if (maxEntries > ctx.limits.maxTableEntries) {
      findings.push(finding('OVER_LIMIT', `block allocation table of ${maxEntries} entries is over the limit of ${ctx.limits.maxTableEntries}`));
    }
    if (BigInt(maxEntries) * BigInt(blockSize) < virtualSize) {
      findings.push(finding('MALFORMED_HEADER', `block allocation table (${maxEntries} × ${blockSize}) is too small for the ${virtualSize}-byte disk`));
    }
    if (src.size !== undefined && tableOffset + BigInt(maxEntries) * 4n > BigInt(src.size)) {
      findings.push(finding('OFFSET_PAST_END', `block allocation table at ${tableOffset} (${maxEntries} entries) runs past the end of the ${src.size}-byte image`));
    }
    if (diskType === 'differencing') {
      const name = new TextDecoder('utf-16be').decode(dyn.subarray(64, 576)).replace(/\0.*$/s, '');
      details.parentName = name;
      details.parentLocators = [];
      for (let i = 0; i < 8; i++) {
        const e = view(dyn.subarray(576 + i * 24, 600 + i * 24));
        const code = ascii4(dyn, 576 + i * 24);
        if (e.getUint32(0) === 0) continue;
        details.parentLocators.push({ platform: PLATFORMS[code] ?? code, dataLength: e.getUint32(8), dataOffset: Number(e.getBigUint64(16)) });
      }
    }
  }
  return { subformat: diskType, virtualSize, details, findings };
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
                `("qemu-img convert -O vpc IN OUT" or Hyper-V's Merge-VHD) and upload that`,
            ),
          ]
        : [],
  },
];

export const vhdFormat = describeFormat<VhdDetails>({
  name: 'vhd',
  description: 'Microsoft VHD (Virtual PC): fixed, dynamic, differencing',
  async probe(src) {
    const start = await src.read(0, 8);
    if (bytesEqual(start, 0, COOKIE)) return true;
    return (await footerAtEnd(src)) !== undefined;
  },
  inspect,
  checks,
});

/**
 * VDI — VirtualBox Disk Image.
 *
 * Spec: VirtualBox source, src/VBox/Storage/VDICore.h (`VDIPREHEADER`, `VDIHEADER1PLUS`); what
 * qemu accepts: qemu block/vdi.c (`vdi_probe`, `vdi_open`, `VdiHeader`). Little-endian.
 *
 * | offset | size | field |
 * |--------|------|-------|
 * | 0      | 64   | text: "<<< Oracle VM VirtualBox Disk Image >>>\n" (or Sun xVM / innotek / QEMU VM) |
 * | 64     | 4    | signature 0xbeda107f |
 * | 68     | 4    | version (0x00010001: 1.1) |
 * | 72     | 4    | header size (of the 1.1 header that follows this field's start − 8) |
 * | 76     | 4    | image type: 1 normal (dynamic), 2 fixed (static), 3 undo, 4 diff |
 * | 80     | 4    | image flags |
 * | 84     | 256  | description |
 * | 340    | 4    | offset of the block map (bytes) |
 * | 344    | 4    | offset of the data (bytes) |
 * | 348    | 16   | legacy geometry: cylinders, heads, sectors, sector size (512) |
 * | 364    | 4    | unused |
 * | 368    | 8    | disk size (bytes) → virtual size, rounded up to whole sectors as qemu does |
 * | 376    | 4    | block size (1 MiB) |
 * | 380    | 4    | block extra data (bytes before each block) |
 * | 384    | 4    | blocks in image (block map entries, 4 bytes each) |
 * | 388    | 4    | blocks allocated |
 * | 392    | 16   | UUID of this image |
 * | 408    | 16   | UUID of the last snapshot |
 * | 424    | 16   | UUID of the link (the image this one differs from) |
 * | 440    | 16   | UUID of the parent |
 *
 * Invariants enforced, as qemu `vdi_open`: version 1.1, sector size 512, block size 1 MiB,
 * block map and data offsets sector-aligned, disk size ≤ blocks × block size, no link or parent
 * UUID (qemu refuses both: a differencing image reads another file). Ours in addition: a known
 * image type, the block map after the header and before the data, inside the file, at most
 * `limits.maxTableEntries` blocks; the allocated blocks inside the file. The block map itself is
 * never read.
 *
 * Detection is qemu's: the signature at 64. A narrower probe (the text, the version) would let
 * qemu autodetect a VDI in an upload we call raw; a bad version is refused by inspect instead.
 */
import { checkTables, vdiMapRule } from './block-map-rules.js';
import { FormatError, readExact, type ByteSource, view } from './byte-source.js';
import { finding, type Finding } from './findings.js';
import { describeFormat, type InspectContext, type Inspection, type SafetyRule } from './format.js';

const TEXT_BYTES = 64;
const O_SIGNATURE = 64;
const O_VERSION = 68;
const O_HEADER_SIZE = 72;
const O_IMAGE_TYPE = 76;
const O_IMAGE_FLAGS = 80;
const O_DESCRIPTION = 84;
const DESCRIPTION_BYTES = 256;
const O_BMAP = 340;
const O_DATA = 344;
const O_CYLINDERS = 348;
const O_HEADS = 352;
const O_SECTORS = 356;
const O_SECTOR_SIZE = 360;
const O_DISK_SIZE = 368;
const O_BLOCK_SIZE = 376;
const O_BLOCK_EXTRA = 380;
const O_BLOCKS = 384;
const O_ALLOCATED = 388;
const O_UUID_IMAGE = 392;
const O_UUID_LAST_SNAP = 408;
const O_UUID_LINK = 424;
const O_UUID_PARENT = 440;
/** the 1.1 header as qemu defines it, through the parent UUID */
const HEADER_BYTES = 456;

const SIGNATURE = 0xbeda107f;
const VERSION_1_1 = 0x00010001;
const SECTOR = 512;
const BLOCK_SIZE = 1024 * 1024;
const IMAGE_TYPES: Record<number, VdiImageType> = { 1: 'dynamic', 2: 'static', 3: 'undo', 4: 'diff' };

type VdiImageType = 'dynamic' | 'static' | 'undo' | 'diff';

export interface VdiDetails {
  text: string;
  version: string;
  headerSize: number;
  imageType: VdiImageType;
  imageFlags: number;
  description: string;
  blockMapOffset: number;
  dataOffset: number;
  geometry: { cylinders: number; heads: number; sectors: number; sectorSize: number };
  diskSize: bigint;
  blockSize: number;
  blockExtra: number;
  blocksInImage: number;
  blocksAllocated: number;
  uuid?: string;
  lastSnapshotUuid?: string;
  linkUuid?: string;
  parentUuid?: string;
}

/** RTUUID bytes as VirtualBox stores them (first three fields little-endian); absent when all zero. */
function uuid(b: Uint8Array): string | undefined {
  if (b.every((x) => x === 0)) return undefined;
  const h = (i: number) => b[i]!.toString(16).padStart(2, '0');
  return `${h(3)}${h(2)}${h(1)}${h(0)}-${h(5)}${h(4)}-${h(7)}${h(6)}-${h(8)}${h(9)}-${[10, 11, 12, 13, 14, 15].map(h).join('')}`;
}

function text(b: Uint8Array): string {
  const s = new TextDecoder('latin1').decode(b);
  const nul = s.indexOf('\0');
  return (nul < 0 ? s : s.slice(0, nul)).trim();
}

async function inspect(src: ByteSource, ctx: InspectContext): Promise<Inspection<VdiDetails>> {
  const findings: Finding[] = [];
  const b = await readExact(src, 0, HEADER_BYTES, 'VDI header');
  const h = view(b);
  const version = h.getUint32(O_VERSION, true);
  if (version !== VERSION_1_1) {
    throw new FormatError(`VDI version ${version >>> 16}.${version & 0xffff} is not 1.1 (qemu refuses it)`, 'MALFORMED_HEADER');
  }
  const typeCode = h.getUint32(O_IMAGE_TYPE, true);
  const imageType = IMAGE_TYPES[typeCode];
  if (!imageType) throw new FormatError(`VDI image type ${typeCode} is not 1 (dynamic), 2 (static), 3 (undo) or 4 (diff)`, 'MALFORMED_HEADER');
  const headerSize = h.getUint32(O_HEADER_SIZE, true);
  const bmap = h.getUint32(O_BMAP, true);
  const data = h.getUint32(O_DATA, true);
  const sectorSize = h.getUint32(O_SECTOR_SIZE, true);
  const diskSize = h.getBigUint64(O_DISK_SIZE, true);
  // qemu rounds odd sizes (VBoxManage convertfromraw makes them) up to whole sectors
  const sectorSize64 = BigInt(SECTOR);
  const virtualSize = ((diskSize + sectorSize64 - 1n) / sectorSize64) * sectorSize64;
  const blockSize = h.getUint32(O_BLOCK_SIZE, true);
  const blockExtra = h.getUint32(O_BLOCK_EXTRA, true);
  const blocks = h.getUint32(O_BLOCKS, true);
  const allocated = h.getUint32(O_ALLOCATED, true);
  if (sectorSize !== SECTOR) throw new FormatError(`VDI sector size ${sectorSize} is not 512 (qemu refuses it)`, 'MALFORMED_HEADER');
  if (blockSize !== BLOCK_SIZE) throw new FormatError(`VDI block size ${blockSize} is not 1 MiB (qemu refuses it)`, 'MALFORMED_HEADER');
  if (bmap % SECTOR !== 0 || data % SECTOR !== 0) {
    throw new FormatError(`VDI block map offset ${bmap} and data offset ${data} must be multiples of 512 (qemu refuses it)`, 'MALFORMED_HEADER');
  }

  const details: VdiDetails = {
    text: text(b.subarray(0, TEXT_BYTES)),
    version: '1.1',
    headerSize,
    imageType,
    imageFlags: h.getUint32(O_IMAGE_FLAGS, true),
    description: text(b.subarray(O_DESCRIPTION, O_DESCRIPTION + DESCRIPTION_BYTES)),
    blockMapOffset: bmap,
    dataOffset: data,
    geometry: { cylinders: h.getUint32(O_CYLINDERS, true), heads: h.getUint32(O_HEADS, true), sectors: h.getUint32(O_SECTORS, true), sectorSize },
    diskSize,
    blockSize,
    blockExtra,
    blocksInImage: blocks,
    blocksAllocated: allocated,
  };
  const ids = { uuid: O_UUID_IMAGE, lastSnapshotUuid: O_UUID_LAST_SNAP, linkUuid: O_UUID_LINK, parentUuid: O_UUID_PARENT } as const;
  for (const [k, at] of Object.entries(ids) as [keyof typeof ids, number][]) {
    const id = uuid(b.subarray(at, at + 16));
    if (id) details[k] = id;
  }

  // qemu: "disk size ..., image bitmap has room for ..." — blocks past the map would be read from nowhere
  if (BigInt(blocks) * BigInt(blockSize) < virtualSize) {
    findings.push(
      finding(
        'MALFORMED_HEADER',
        `VDI disk size ${virtualSize} is larger than its ${blocks} blocks of ${blockSize} bytes (qemu refuses it); recreate the image`,
      ),
    );
  }
  if (allocated > blocks)
    findings.push(finding('MALFORMED_HEADER', `VDI claims ${allocated} blocks allocated of only ${blocks}; the image is damaged — recreate it`));
  if (blocks > ctx.limits.maxTableEntries) {
    findings.push(
      finding('OVER_LIMIT', `VDI block map of ${blocks} entries is over the limit of ${ctx.limits.maxTableEntries}; convert the disk to qcow2 or split it`),
    );
  }
  const mapBytes = Math.ceil((blocks * 4) / SECTOR) * SECTOR;
  if (bmap < O_SIGNATURE + 8 + Math.min(headerSize, HEADER_BYTES)) {
    findings.push(finding('MALFORMED_HEADER', `VDI block map at ${bmap} overlaps the header; the image is crafted or damaged — recreate it`));
  }
  if (data < bmap + mapBytes) {
    // the data area would start inside the block map: block writes would rewrite the map
    findings.push(
      finding(
        'OFFSET_PAST_END',
        `VDI block map at ${bmap} (${blocks} entries, ${mapBytes} bytes) runs past the data offset ${data}; the image is crafted or damaged`,
      ),
    );
  }
  if (src.size !== undefined) {
    if (bmap + mapBytes > src.size) {
      findings.push(
        finding(
          'OFFSET_PAST_END',
          `VDI block map at ${bmap} (${mapBytes} bytes) runs past the end of the ${src.size}-byte image; the image is truncated or crafted`,
        ),
      );
    }
    if (data > src.size) {
      findings.push(finding('OFFSET_PAST_END', `VDI data offset ${data} lies past the end of the ${src.size}-byte image; the image is truncated or crafted`));
    } else if (data + allocated * (blockSize + blockExtra) > src.size) {
      findings.push(
        finding(
          'TRUNCATED',
          `VDI declares ${allocated} allocated blocks after offset ${data}, more than the ${src.size}-byte file holds; the image is truncated — upload it whole`,
        ),
      );
    }
  }
  // every allocated block inside the file (block-map-rules.ts, shared with the reader)
  const mapInside = src.size === undefined || bmap + blocks * 4 <= src.size;
  if (blocks <= ctx.limits.maxTableEntries && mapInside && data >= bmap + blocks * 4) {
    findings.push(
      ...(await checkTables(
        src,
        [{ offset: bmap, length: blocks * 4, rule: vdiMapRule({ dataOffset: data, blockSize, blocks }) }],
        ctx.limits.maxTableScanBytes,
        'VDI',
      )),
    );
  }
  const inspection: Inspection<VdiDetails> = { subformat: imageType, details, findings };
  if (virtualSize > 0n) inspection.virtualSize = virtualSize;
  return inspection;
}

const checks: SafetyRule<VdiDetails>[] = [
  {
    code: 'DIFFERENCING_DISK',
    description: 'a differencing (diff/undo) VDI, or one with a link or parent UUID, reads another image',
    run: ({ details: d }) =>
      d.imageType === 'diff' || d.imageType === 'undo' || d.parentUuid || d.linkUuid
        ? [
            finding(
              'DIFFERENCING_DISK',
              `VDI is a ${d.imageType} image linked to parent ${d.parentUuid ?? d.linkUuid ?? '(unknown)'} (qemu refuses it); clone it into a standalone disk ` +
                `("VBoxManage clonemedium" on the newest snapshot) and upload that`,
            ),
          ]
        : [],
  },
];

export const vdiFormat = describeFormat<VdiDetails>({
  name: 'vdi',
  description: 'VirtualBox VDI: dynamic, static',
  async probe(src) {
    const b = await src.read(O_SIGNATURE, 4);
    return b.length === 4 && view(b).getUint32(0, true) === SIGNATURE;
  },
  inspect,
  checks,
});

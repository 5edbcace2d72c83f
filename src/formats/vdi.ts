/**
 * VDI — VirtualBox Disk Image.
 *
 * Spec: VirtualBox source (VDICore.h, "VDIHEADER1PLUS"); qemu block/vdi.c for what qemu accepts.
 * All fields little-endian.
 *
 * | offset | size | field |
 * |--------|------|-------|
 * | 0      | 64   | text "<<< Oracle VM VirtualBox Disk Image >>>\n" (or Sun xVM / innotek) |
 * | 64     | 4    | signature 0xbeda107f |
 * | 68     | 4    | version (0x00010001) |
 * | 72     | 4    | header size (≥ 0x180) |
 * | 76     | 4    | image type: 1 dynamic, 2 static, 3 undo, 4 diff |
 * | 80     | 4    | flags |
 * | 84     | 256  | description |
 * | 340    | 4    | offset of the block map (bytes) |
 * | 344    | 4    | offset of the data (bytes) |
 * | 348    | 16   | legacy geometry: cylinders, heads, sectors, sector size (512) |
 * | 368    | 8    | disk size (bytes) |
 * | 376    | 4    | block size (1 MiB) |
 * | 380    | 4    | block extra data |
 * | 384    | 4    | blocks in image |
 * | 388    | 4    | blocks allocated |
 * | 392    | 16×4 | UUIDs: image, last snapshot, link, parent |
 *
 * Invariants (as qemu): sector size 512, block size 1 MiB, block map and data offsets
 * sector-aligned with the map before the data, disk size ≤ blocks × block size; a non-zero link
 * or parent UUID means a differencing image, which reads another file.
 */
import { FormatError, bytesEqual, readExact, type ByteSource, view } from './byte-source.js';
import { finding, type Finding } from './findings.js';
import { describeFormat, type InspectContext, type SafetyRule } from './format.js';

const SIGNATURE = 0xbeda107f;
const VERSION_1_1 = 0x00010001;
const HEADER = 456;
const TYPES: Record<number, string> = { 1: 'dynamic', 2: 'static', 3: 'undo', 4: 'diff' };
const BLOCK_SIZE = 1024 * 1024;

export interface VdiDetails {
  text: string;
  version: string;
  imageType: string;
  description: string;
  blockMapOffset: number;
  dataOffset: number;
  blockSize: number;
  blocksInImage: number;
  blocksAllocated: number;
  uuid: string;
  parentUuid?: string;
  linkUuid?: string;
}

function uuid(b: Uint8Array): string | undefined {
  if (b.every((x) => x === 0)) return undefined;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

async function inspect(src: ByteSource, ctx: InspectContext) {
  const findings: Finding[] = [];
  const b = await readExact(src, 0, HEADER, 'VDI header');
  const h = view(b);
  const version = h.getUint32(68, true);
  if (version !== VERSION_1_1) throw new FormatError(`version 0x${version.toString(16)} is not 1.1`, 'MALFORMED_HEADER');
  const typeCode = h.getUint32(76, true);
  const imageType = TYPES[typeCode];
  if (!imageType) throw new FormatError(`image type ${typeCode} is unknown`, 'MALFORMED_HEADER');
  const bmap = h.getUint32(340, true);
  const data = h.getUint32(344, true);
  const sectorSize = h.getUint32(360, true);
  const diskSize = h.getBigUint64(368, true);
  const blockSize = h.getUint32(376, true);
  const blocks = h.getUint32(384, true);
  const allocated = h.getUint32(388, true);
  if (sectorSize !== 512) throw new FormatError(`sector size ${sectorSize} is not 512`, 'MALFORMED_HEADER');
  if (blockSize !== BLOCK_SIZE) throw new FormatError(`block size ${blockSize} is not 1 MiB`, 'MALFORMED_HEADER');
  if (bmap % 512 !== 0 || data % 512 !== 0) throw new FormatError(`block map (${bmap}) and data (${data}) offsets must be sector-aligned`, 'MALFORMED_HEADER');
  if (blocks > ctx.limits.maxTableEntries) findings.push(finding('OVER_LIMIT', `${blocks} blocks is over the limit of ${ctx.limits.maxTableEntries} block map entries`));
  if (BigInt(blocks) * BigInt(blockSize) < diskSize) {
    findings.push(finding('MALFORMED_HEADER', `disk size ${diskSize} is larger than its ${blocks} blocks of ${blockSize} bytes`));
  }
  if (allocated > blocks) findings.push(finding('MALFORMED_HEADER', `${allocated} blocks allocated of only ${blocks}`));
  const mapBytes = Math.ceil((blocks * 4) / 512) * 512;
  if (bmap < HEADER - 56 || data < bmap + mapBytes) {
    findings.push(finding('MALFORMED_HEADER', `block map at ${bmap} (${mapBytes} bytes) overlaps the header or the data at ${data}`));
  }
  if (src.size !== undefined && bmap + mapBytes > src.size) {
    findings.push(finding('OFFSET_PAST_END', `block map at ${bmap} (${mapBytes} bytes) runs past the end of the ${src.size}-byte image`));
  }
  const details: VdiDetails = {
    text: new TextDecoder().decode(b.subarray(0, 64)).replace(/\0.*$/s, '').trim(),
    version: '1.1',
    imageType,
    description: new TextDecoder().decode(b.subarray(84, 340)).replace(/\0.*$/s, ''),
    blockMapOffset: bmap,
    dataOffset: data,
    blockSize,
    blocksInImage: blocks,
    blocksAllocated: allocated,
    uuid: uuid(b.subarray(392, 408)) ?? '',
  };
  const link = uuid(b.subarray(424, 440));
  const parent = uuid(b.subarray(440, 456));
  if (link) details.linkUuid = link;
  if (parent) details.parentUuid = parent;
  return { subformat: imageType, virtualSize: diskSize, details, findings };
}

const checks: SafetyRule<VdiDetails>[] = [
  {
    code: 'DIFFERENCING_DISK',
    description: 'a differencing (diff/undo) VDI reads its parent, another file',
    run: ({ details: d }) =>
      d.imageType === 'diff' || d.imageType === 'undo' || d.parentUuid || d.linkUuid
        ? [
            finding(
              'DIFFERENCING_DISK',
              `VDI is a ${d.imageType} image linked to parent ${d.parentUuid ?? d.linkUuid ?? '(unknown)'}; clone it into a standalone disk ` +
                `("VBoxManage clonemedium" or "qemu-img convert -O vdi IN OUT") and upload that`,
            ),
          ]
        : [],
  },
];

export const vdiFormat = describeFormat<VdiDetails>({
  name: 'vdi',
  description: 'VirtualBox VDI: dynamic, static',
  async probe(src) {
    const b = await src.read(0, 72);
    return b.length === 72 && view(b).getUint32(64, true) === SIGNATURE && (bytesEqual(b, 0, '<<<') || view(b).getUint32(68, true) === VERSION_1_1);
  },
  inspect,
  checks,
});

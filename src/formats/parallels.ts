/**
 * Parallels / Virtuozzo (ploop) image. Detected and described.
 *
 * Spec: qemu docs/interop/parallels.txt; what qemu accepts: qemu block/parallels.c
 * (`parallels_probe`, `parallels_open`). Little-endian. The BAT (4-byte entries) follows the
 * 64-byte header.
 *
 * | offset | size | field |
 * |--------|------|-------|
 * | 0      | 16   | magic "WithoutFreeSpace" (legacy: BAT entries in sectors) or "WithouFreSpacExt" (BAT entries in clusters) |
 * | 16     | 4    | version (2) |
 * | 20     | 4    | heads (geometry, unused) |
 * | 24     | 4    | cylinders (geometry, unused) |
 * | 28     | 4    | tracks: sectors per cluster |
 * | 32     | 4    | bat_entries |
 * | 36     | 8    | nb_sectors: disk size in sectors (legacy magic: low 32 bits only) |
 * | 44     | 4    | inuse: 0x746F6E59 while open (not closed cleanly), else 0 |
 * | 48     | 4    | data_off: first data sector (0: right after the BAT) |
 * | 52     | 4    | flags (bit 0: the image is empty) |
 * | 56     | 8    | ext_off: format extension cluster, in sectors (0: none) |
 *
 * Virtual size as qemu: nb_sectors × 512, with nb_sectors cut to 32 bits for the legacy magic.
 * Invariants, as qemu `parallels_open`: version 2 (the probe), tracks ≠ 0 and the cluster not
 * over 2 GiB/513 sectors, the BAT covering the disk size ("Catalog size too small"). Ours: the BAT
 * (at most `limits.maxTableEntries` entries, never read), data_off and the format extension inside
 * the file; the BAT not running into the data. A ploop image references no other file.
 */
import { FormatError, bytesEqual, readExact, view, type ByteSource } from './byte-source.js';
import { finding, type Finding } from './findings.js';
import { describeFormat, type InspectContext, type Inspection } from './format.js';

const MAGIC_LEGACY = 'WithoutFreeSpace';
const MAGIC_EXT = 'WithouFreSpacExt';
const VERSION = 2;
const HEADER_BYTES = 64;
const O_VERSION = 16;
const O_HEADS = 20;
const O_CYLINDERS = 24;
const O_TRACKS = 28;
const O_BAT_ENTRIES = 32;
const O_NB_SECTORS = 36;
const O_INUSE = 44;
const O_DATA_OFF = 48;
const O_FLAGS = 52;
const O_EXT_OFF = 56;
const INUSE_MAGIC = 0x746f6e59;
const SECTOR = 512;
/** qemu: tracks > INT32_MAX / 513 is "Too big cluster" */
const MAX_TRACKS = Math.floor(0x7fffffff / 513);
/** qemu: bat_entries > INT_MAX / 4 is "Catalog too large" */
const MAX_BAT_ENTRIES = Math.floor(0x7fffffff / 4);

export interface ParallelsDetails {
  magic: string;
  version: number;
  heads: number;
  cylinders: number;
  clusterSize: number;
  batEntries: number;
  nbSectors: bigint;
  /** the image was open when it was copied (inuse magic): it may be inconsistent */
  inUse: boolean;
  dataOffset: number;
  flags: number;
  extensionOffset?: bigint;
}

async function inspect(src: ByteSource, ctx: InspectContext): Promise<Inspection<ParallelsDetails>> {
  const findings: Finding[] = [];
  const b = await readExact(src, 0, HEADER_BYTES, 'parallels header');
  const h = view(b);
  const legacy = bytesEqual(b, 0, MAGIC_LEGACY);
  const tracks = h.getUint32(O_TRACKS, true);
  if (tracks === 0) throw new FormatError('parallels image has zero sectors per cluster (qemu refuses it)', 'MALFORMED_HEADER');
  if (tracks > MAX_TRACKS) throw new FormatError(`parallels cluster of ${tracks} sectors is too big (qemu refuses it)`, 'MALFORMED_HEADER');
  const bat = h.getUint32(O_BAT_ENTRIES, true);
  const rawSectors = h.getBigUint64(O_NB_SECTORS, true);
  const nbSectors = legacy ? rawSectors & 0xffffffffn : rawSectors;
  const clusterSize = tracks * SECTOR;
  const dataOffset = h.getUint32(O_DATA_OFF, true) * SECTOR;
  const extOff = h.getBigUint64(O_EXT_OFF, true);
  const details: ParallelsDetails = {
    magic: legacy ? MAGIC_LEGACY : MAGIC_EXT,
    version: h.getUint32(O_VERSION, true),
    heads: h.getUint32(O_HEADS, true),
    cylinders: h.getUint32(O_CYLINDERS, true),
    clusterSize,
    batEntries: bat,
    nbSectors,
    inUse: h.getUint32(O_INUSE, true) === INUSE_MAGIC,
    dataOffset,
    flags: h.getUint32(O_FLAGS, true),
  };
  if (extOff !== 0n) details.extensionOffset = extOff * BigInt(SECTOR);

  const batEnd = HEADER_BYTES + bat * 4;
  if (bat > ctx.limits.maxTableEntries || bat > MAX_BAT_ENTRIES) {
    findings.push(
      finding(
        'OVER_LIMIT',
        `parallels BAT of ${bat} entries is over the limit of ${Math.min(ctx.limits.maxTableEntries, MAX_BAT_ENTRIES)}; convert the disk to qcow2 with a larger cluster size`,
      ),
    );
  }
  // qemu (recent versions): "Catalog size too small for advertised disk size"
  if (BigInt(bat) * BigInt(clusterSize) < nbSectors * BigInt(SECTOR)) {
    findings.push(
      finding(
        'MALFORMED_HEADER',
        `parallels BAT of ${bat} clusters of ${clusterSize} bytes cannot cover the ${nbSectors * BigInt(SECTOR)}-byte disk; recreate the image`,
      ),
    );
  }
  if (dataOffset !== 0 && dataOffset < batEnd) {
    findings.push(
      finding('MALFORMED_HEADER', `parallels data offset ${dataOffset} lies inside the BAT (which ends at ${batEnd}); the image is crafted or damaged`),
    );
  }
  if (src.size !== undefined) {
    if (batEnd > src.size)
      findings.push(
        finding(
          'OFFSET_PAST_END',
          `parallels BAT of ${bat} entries (up to ${batEnd}) runs past the end of the ${src.size}-byte image; the image is truncated or crafted`,
        ),
      );
    if (dataOffset > src.size)
      findings.push(
        finding('OFFSET_PAST_END', `parallels data offset ${dataOffset} lies past the end of the ${src.size}-byte image; the image is truncated or crafted`),
      );
    if (details.extensionOffset !== undefined && details.extensionOffset + BigInt(clusterSize) > BigInt(src.size)) {
      findings.push(
        finding(
          'OFFSET_PAST_END',
          `parallels format extension at ${details.extensionOffset} (one ${clusterSize}-byte cluster) runs past the end of the ${src.size}-byte image`,
        ),
      );
    }
  }
  if (details.inUse) {
    findings.push(
      finding(
        'CORRUPT_IMAGE',
        'parallels image was copied while in use (inuse marker set) and may be inconsistent; run "qemu-img check -r all" on it, then upload again',
        'warning',
      ),
    );
  }
  const inspection: Inspection<ParallelsDetails> = { details, findings };
  if (nbSectors > 0n) inspection.virtualSize = nbSectors * BigInt(SECTOR);
  return inspection;
}

export const parallelsFormat = describeFormat<ParallelsDetails>({
  name: 'parallels',
  description: 'Parallels / Virtuozzo ploop (detected and described)',
  async probe(src) {
    // exactly qemu's probe: either magic and version 2
    const b = await src.read(0, O_VERSION + 4);
    return b.length === O_VERSION + 4 && (bytesEqual(b, 0, MAGIC_LEGACY) || bytesEqual(b, 0, MAGIC_EXT)) && view(b).getUint32(O_VERSION, true) === VERSION;
  },
  inspect,
  // ploop references nothing outside itself; its structural findings come from inspect
  checks: [],
  // ploop: Glance's and OpenNebula's name
  claimAliases: ['ploop'],
});

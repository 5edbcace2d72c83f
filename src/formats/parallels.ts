/**
 * Parallels / Virtuozzo ploop image. Detected and described.
 *
 * Spec: qemu docs/interop/parallels.txt, block/parallels.c. Little-endian.
 * | offset | size | field |
 * |--------|------|-------|
 * | 0  | 16 | magic "WithoutFreeSpace" (v2) or "WithouFreSpacExt" (v2 with extensions) |
 * | 16 | 4  | version (2) |
 * | 20 | 4  | heads |
 * | 24 | 4  | cylinders |
 * | 28 | 4  | tracks: cluster size in sectors |
 * | 32 | 4  | BAT entries |
 * | 36 | 8  | nb_sectors (virtual size / 512) |
 * | 44 | 4  | inuse (0x746F6E59 when not closed cleanly) |
 * | 48 | 4  | data_off (sectors) |
 * | 52 | 4  | flags |
 * | 56 | 8  | ext_off (sectors, format extension cluster) |
 */
import { FormatError, bytesEqual, readExact, view, type ByteSource } from './byte-source.js';
import { finding, type Finding } from './findings.js';
import { describeFormat, type InspectContext } from './format.js';

export interface ParallelsDetails {
  magic: string;
  clusterSize: number;
  batEntries: number;
  dataOffset: number;
  inUse: boolean;
  extensionOffset: number;
}

export const parallelsFormat = describeFormat<ParallelsDetails>({
  name: 'parallels',
  description: 'Parallels / Virtuozzo ploop (detected and described)',
  async probe(src) {
    const b = await src.read(0, 20);
    return b.length === 20 && (bytesEqual(b, 0, 'WithoutFreeSpace') || bytesEqual(b, 0, 'WithouFreSpacExt')) && view(b).getUint32(16, true) === 2;
  },
  async inspect(src: ByteSource, ctx: InspectContext) {
    const findings: Finding[] = [];
    const b = await readExact(src, 0, 64, 'parallels header');
    const h = view(b);
    const tracks = h.getUint32(28, true);
    if (tracks === 0 || tracks > 1 << 20) throw new FormatError(`cluster size of ${tracks} sectors is out of range`, 'MALFORMED_HEADER');
    const bat = h.getUint32(32, true);
    const details: ParallelsDetails = {
      magic: new TextDecoder().decode(b.subarray(0, 16)),
      clusterSize: tracks * 512,
      batEntries: bat,
      dataOffset: h.getUint32(48, true) * 512,
      inUse: h.getUint32(44, true) === 0x746f6e59,
      extensionOffset: Number(h.getBigUint64(56, true)) * 512,
    };
    if (bat > ctx.limits.maxTableEntries) findings.push(finding('OVER_LIMIT', `BAT of ${bat} entries is over the limit of ${ctx.limits.maxTableEntries}`));
    if (src.size !== undefined && 64 + bat * 4 > src.size) findings.push(finding('OFFSET_PAST_END', `BAT of ${bat} entries runs past the end of the ${src.size}-byte image`));
    return { virtualSize: h.getBigUint64(36, true) * 512n, details, findings };
  },
  // ploop references nothing outside itself; structural findings come from inspect
  checks: [],
});

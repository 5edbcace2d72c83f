/**
 * LUKS — Linux Unified Key Setup, versions 1 and 2 (an encrypted block device image).
 *
 * Spec: "LUKS On-Disk Format Specification" 1.2.3 (v1) and "LUKS2 On-Disk Format" (v2);
 * qemu crypto/block-luks.c (qemu reads LUKS1 only). Big-endian binary headers.
 *
 * v1: 0 magic "LUKS\xba\xbe", 6 version u16, 8 cipher name (32), 40 cipher mode (32), 72 hash
 *     spec (32), 104 payload offset u32 (sectors), 108 key bytes u32, 168 UUID (40), 208 eight
 *     key slots of 48 bytes (active = 0x00AC71F3).
 * v2: 0 magic, 6 version u16 (2), 8 header size u64 (binary + JSON), 16 sequence id u64, 24
 *     label (48), 72 checksum algorithm (32), 168 UUID (40), 208 subsystem (48); the JSON area
 *     follows the 4 KiB binary header (segments with offset and size, keyslots).
 *
 * The guest-visible size is the payload: the file size minus the payload offset (as qemu-img).
 */
import { FormatError, bytesEqual, cString, readExact, type ByteSource, view } from './byte-source.js';
import { finding, type Finding } from './findings.js';
import { describeFormat, type InspectContext } from './format.js';

const MAGIC = new Uint8Array([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]);
const V1_HEADER = 592;
const V2_BINARY = 4096;
const KEY_ACTIVE = 0x00ac71f3;

export interface LuksDetails {
  version: number;
  cipher?: string;
  hash?: string;
  keyBytes?: number;
  uuid: string;
  label?: string;
  payloadOffset: number;
  activeKeySlots: number;
  segments?: { type: string; offset: number; size: string; encryption?: string }[];
}

async function inspect(src: ByteSource, ctx: InspectContext) {
  const findings: Finding[] = [];
  const b = await readExact(src, 0, V1_HEADER, 'LUKS header');
  const v = view(b);
  const version = v.getUint16(6);
  let details: LuksDetails;
  if (version === 1) {
    const payloadSectors = v.getUint32(104);
    let active = 0;
    for (let i = 0; i < 8; i++) if (v.getUint32(208 + i * 48) === KEY_ACTIVE) active++;
    details = {
      version,
      cipher: `${cString(b.subarray(8, 40))}-${cString(b.subarray(40, 72))}`,
      hash: cString(b.subarray(72, 104)),
      keyBytes: v.getUint32(108),
      uuid: cString(b.subarray(168, 208)),
      payloadOffset: payloadSectors * 512,
      activeKeySlots: active,
    };
  } else if (version === 2) {
    const hdrSize = v.getBigUint64(8);
    if (hdrSize < BigInt(V2_BINARY) || hdrSize > BigInt(V2_BINARY + ctx.limits.maxDescriptorBytes)) {
      throw new FormatError(`LUKS2 header size ${hdrSize} is outside 4 KiB .. 4 KiB + ${ctx.limits.maxDescriptorBytes}`, 'OVER_LIMIT');
    }
    const jsonBytes = await readExact(src, V2_BINARY, Number(hdrSize) - V2_BINARY, 'LUKS2 JSON area');
    let meta: { segments?: Record<string, { type?: string; offset?: string; size?: string; encryption?: string }>; keyslots?: Record<string, unknown> };
    try {
      meta = JSON.parse(cString(jsonBytes)) as typeof meta;
    } catch (e) {
      throw new FormatError(`LUKS2 JSON metadata does not parse (${(e as Error).message})`, 'MALFORMED_HEADER');
    }
    const segments = Object.values(meta.segments ?? {}).map((s) => ({
      type: String(s.type ?? ''),
      offset: Number(s.offset ?? 0),
      size: String(s.size ?? ''),
      encryption: s.encryption,
    }));
    const first = segments[0];
    details = {
      version,
      uuid: cString(b.subarray(168, 208)),
      label: cString(b.subarray(24, 72)),
      payloadOffset: first?.offset ?? 0,
      activeKeySlots: Object.keys(meta.keyslots ?? {}).length,
      segments,
    };
    if (first?.encryption) details.cipher = first.encryption;
  } else {
    throw new FormatError(`LUKS version ${version} is not 1 or 2`, 'MALFORMED_HEADER');
  }
  let virtualSize: bigint | undefined;
  if (src.size !== undefined) {
    if (details.payloadOffset > src.size)
      findings.push(finding('OFFSET_PAST_END', `LUKS payload offset ${details.payloadOffset} lies past the end of the ${src.size}-byte image`));
    else virtualSize = BigInt(src.size - details.payloadOffset);
  }
  findings.push(
    finding('ENCRYPTED', `LUKS${version}-encrypted volume (${details.cipher ?? 'cipher unknown'}); guests need the passphrase or key to use it`, 'info'),
  );
  return { subformat: `luks${version}`, virtualSize, details, findings };
}

export const luksFormat = describeFormat<LuksDetails>({
  name: 'luks',
  description: 'LUKS v1/v2 encrypted volume',
  async probe(src) {
    const b = await src.read(0, 8);
    return b.length === 8 && bytesEqual(b, 0, MAGIC) && (view(b).getUint16(6) === 1 || view(b).getUint16(6) === 2);
  },
  inspect,
  // encryption is reported by inspect (info); a LUKS volume references nothing outside itself
  checks: [],
});

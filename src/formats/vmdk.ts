/**
 * VMDK — VMware virtual disk: hosted sparse extents (monolithicSparse, streamOptimized) with an
 * embedded text descriptor, and stand-alone text descriptors.
 *
 * Spec: "Virtual Disk Format 5.0" (VMware technical note), §"Hosted Sparse Extent Header",
 * §"The Descriptor File", §"Stream-Optimized Compressed Sparse Extents"; qemu block/vmdk.c; oslo.utils
 * format_inspector.py (VMDKInspector). Sparse header fields little-endian.
 *
 * | offset | size | field |
 * |--------|------|-------|
 * | 0      | 4    | magic "KDMV" (0x564d444b) |
 * | 4      | 4    | version (1..3) |
 * | 8      | 4    | flags: bit 0 valid newline test, 1 redundant grain table, 2 zeroed-grain GTEs, 16 compressed grains, 17 markers |
 * | 12     | 8    | capacity (sectors) |
 * | 20     | 8    | grain size (sectors) |
 * | 28     | 8    | descriptor offset (sectors) |
 * | 36     | 8    | descriptor size (sectors) |
 * | 44     | 4    | grain table entries per table |
 * | 48     | 8    | redundant grain directory offset (sectors) |
 * | 56     | 8    | grain directory offset (sectors; all ones = in the footer, streamOptimized) |
 * | 64     | 8    | overhead (sectors) |
 * | 72     | 1    | unclean shutdown |
 * | 73     | 4    | newline detection "\n \r\n" |
 * | 77     | 2    | compress algorithm (0 none, 1 deflate) |
 *
 * streamOptimized keeps a footer (a copy of the header with the real grain directory offset) at
 * end − 1024, between a footer marker and the end-of-stream marker.
 *
 * Descriptor: `key = "value"` lines (version, CID, parentCID, createType, parentFileNameHint,
 * ddb.*) and extent lines `ACCESS SECTORS TYPE ["FILENAME" [OFFSET]]`.
 *
 * Why the rules: any extent naming a file makes qemu open that *host* file (CVE-2022-47951 read
 * /etc/passwd through a FLAT extent). Only monolithicSparse and streamOptimized keep everything in
 * one file; their single SPARSE extent names the image itself.
 */
import { FormatError, bytesEqual, latin1, readExact, tailOffset, type ByteSource, view } from './byte-source.js';
import { finding, type Finding } from './findings.js';
import { describeFormat, type InspectContext, type SafetyRule } from './format.js';

const SPARSE_MAGIC = 'KDMV';
const COWD_MAGIC = 'COWD';
const HEADER = 512;
const GD_AT_END = 0xffffffffffffffffn;
const SAFE_CREATE_TYPES = ['monolithicSparse', 'streamOptimized'];
const EXTENT_TYPES = ['FLAT', 'SPARSE', 'ZERO', 'VMFS', 'VMFSSPARSE', 'VMFSRDM', 'VMFSRAW', 'SESPARSE'];
const ACCESS = ['RW', 'RDONLY', 'NOACCESS'];
const MAX_EXTENTS = 1024;
const TEXT_PROBE = 1024;

export interface VmdkExtent {
  access: string;
  sectors: number;
  type: string;
  file?: string;
  offset?: number;
}

export interface VmdkDetails {
  container: 'sparse' | 'descriptor' | 'cowd';
  version?: number;
  flags?: string[];
  capacitySectors?: number;
  grainSizeSectors?: number;
  compressAlgorithm?: 'none' | 'deflate';
  uncleanShutdown?: boolean;
  descriptorOffset?: number;
  descriptorSize?: number;
  grainDirectoryAtEnd?: boolean;
  createType?: string;
  cid?: string;
  parentCid?: string;
  parentFileNameHint?: string;
  descriptorVersion?: string;
  extents: VmdkExtent[];
  ddb: Record<string, string>;
  malformedLines: string[];
}

export interface ParsedDescriptor {
  keys: Record<string, string>;
  extents: VmdkExtent[];
  ddb: Record<string, string>;
  malformed: string[];
}

export function parseDescriptor(text: string): ParsedDescriptor {
  const keys: Record<string, string> = {};
  const ddb: Record<string, string> = {};
  const extents: VmdkExtent[] = [];
  const malformed: string[] = [];
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const ext = /^(\S+)\s+(\d+)\s+(\S+)(?:\s+"([^"]*)"(?:\s+(\d+))?)?\s*$/.exec(line);
    if (ext && !line.includes('=')) {
      const e: VmdkExtent = { access: ext[1]!, sectors: Number(ext[2]), type: ext[3]! };
      if (ext[4] !== undefined) e.file = ext[4];
      if (ext[5] !== undefined) e.offset = Number(ext[5]);
      if (!ACCESS.includes(e.access) || !EXTENT_TYPES.includes(e.type) || !Number.isSafeInteger(e.sectors)) malformed.push(line.slice(0, 200));
      extents.push(e);
      continue;
    }
    const kv = /^([A-Za-z0-9_.]+)\s*=\s*"?([^"]*)"?\s*$/.exec(line);
    if (kv) {
      if (kv[1]!.startsWith('ddb.')) ddb[kv[1]!.slice(4)] = kv[2]!;
      else keys[kv[1]!] = kv[2]!;
      continue;
    }
    malformed.push(line.slice(0, 200));
  }
  return { keys, extents, ddb, malformed };
}

function looksLikeDescriptor(b: Uint8Array): boolean {
  // text only, and a descriptor's marks: the header comment or a createType key
  for (let i = 0; i < b.length; i++) {
    const c = b[i]!;
    if (c === 0) {
      b = b.subarray(0, i);
      break;
    }
    if (c < 9 || (c > 13 && c < 32) || c > 126) return false;
  }
  const t = latin1(b);
  return /^# Disk DescriptorFile/m.test(t) || (/^\s*createType\s*=/m.test(t) && /^\s*version\s*=/m.test(t));
}

async function inspect(src: ByteSource, ctx: InspectContext) {
  const findings: Finding[] = [];
  const first = await src.read(0, HEADER);
  const details: VmdkDetails = { container: 'descriptor', extents: [], ddb: {}, malformedLines: [] };
  let descriptorText: string | undefined;
  let capacity: bigint | undefined;
  if (bytesEqual(first, 0, COWD_MAGIC)) {
    details.container = 'cowd';
    const h = view(await readExact(src, 0, 24, 'VMDK COWD header'));
    capacity = BigInt(h.getUint32(12, true));
    details.version = h.getUint32(4, true);
    details.capacitySectors = Number(capacity);
    details.createType = 'vmfsSparse';
  } else if (bytesEqual(first, 0, SPARSE_MAGIC)) {
    details.container = 'sparse';
    let hb = await readExact(src, 0, HEADER, 'VMDK sparse header');
    let h = view(hb);
    const version = h.getUint32(4, true);
    if (version < 1 || version > 3) throw new FormatError(`sparse header version ${version} is not 1..3`, 'MALFORMED_HEADER');
    const descOffset = h.getBigUint64(28, true);
    const descSize = h.getBigUint64(36, true);
    if (h.getBigUint64(56, true) === GD_AT_END) {
      // streamOptimized: the real header is the footer at end − 1024
      details.grainDirectoryAtEnd = true;
      const end = tailOffset(src, 1024);
      const footer = await src.read(end, HEADER);
      if (footer.length === HEADER && bytesEqual(footer, 0, SPARSE_MAGIC)) {
        hb = footer;
        h = view(hb);
      } else {
        findings.push(finding('TRUNCATED', 'streamOptimized VMDK has no footer at its end; the image is truncated — upload it whole'));
      }
    }
    const flags = h.getUint32(8, true);
    capacity = h.getBigUint64(12, true);
    const grain = h.getBigUint64(20, true);
    const gdOffset = h.getBigUint64(56, true);
    details.version = version;
    details.flags = [
      ...(flags & 1 ? ['valid newline test'] : []),
      ...(flags & 2 ? ['redundant grain table'] : []),
      ...(flags & 4 ? ['zeroed-grain GTEs'] : []),
      ...(flags & 0x10000 ? ['compressed grains'] : []),
      ...(flags & 0x20000 ? ['markers'] : []),
    ];
    details.capacitySectors = Number(capacity);
    details.grainSizeSectors = Number(grain);
    details.compressAlgorithm = h.getUint16(77, true) === 1 ? 'deflate' : 'none';
    details.uncleanShutdown = hb[72] === 1;
    details.descriptorOffset = Number(descOffset);
    details.descriptorSize = Number(descSize);
    if (grain === 0n || (grain & (grain - 1n)) !== 0n || grain > 2048n) {
      throw new FormatError(`grain size ${grain} sectors is not a power of two up to 2048`, 'MALFORMED_HEADER');
    }
    if (capacity > BigInt(Number.MAX_SAFE_INTEGER) / 512n) throw new FormatError(`capacity ${capacity} sectors is out of range`, 'FIELD_OUT_OF_RANGE');
    if (src.size !== undefined && gdOffset !== GD_AT_END && gdOffset * 512n > BigInt(src.size)) {
      findings.push(finding('OFFSET_PAST_END', `grain directory at sector ${gdOffset} lies past the end of the ${src.size}-byte image`));
    }
    if (descOffset !== 0n) {
      const bytes = descSize * 512n;
      if (bytes > BigInt(ctx.limits.maxDescriptorBytes)) {
        findings.push(finding('OVER_LIMIT', `embedded descriptor of ${bytes} bytes is over the ${ctx.limits.maxDescriptorBytes}-byte limit`));
      } else if (src.size !== undefined && (descOffset * 512n + bytes) > BigInt(src.size)) {
        findings.push(finding('OFFSET_PAST_END', `embedded descriptor at sector ${descOffset} runs past the end of the image`));
      } else {
        const d = await readExact(src, Number(descOffset * 512n), Number(bytes), 'VMDK embedded descriptor');
        const nul = d.indexOf(0);
        descriptorText = latin1(nul < 0 ? d : d.subarray(0, nul));
      }
    }
  } else {
    const size = src.size ?? ctx.limits.maxDescriptorBytes + 1;
    if (size > ctx.limits.maxDescriptorBytes) {
      throw new FormatError(`text descriptor of ${size} bytes is over the ${ctx.limits.maxDescriptorBytes}-byte limit`, 'OVER_LIMIT');
    }
    descriptorText = latin1(await readExact(src, 0, size, 'VMDK descriptor'));
  }

  if (descriptorText !== undefined) {
    const p = parseDescriptor(descriptorText);
    if (p.extents.length > MAX_EXTENTS) findings.push(finding('OVER_LIMIT', `${p.extents.length} extent lines is over the limit of ${MAX_EXTENTS}`));
    details.extents = p.extents.slice(0, MAX_EXTENTS);
    details.ddb = p.ddb;
    details.malformedLines = p.malformed;
    if (p.keys.createType !== undefined) details.createType = p.keys.createType;
    if (p.keys.CID !== undefined) details.cid = p.keys.CID;
    if (p.keys.parentCID !== undefined) details.parentCid = p.keys.parentCID;
    if (p.keys.parentFileNameHint !== undefined) details.parentFileNameHint = p.keys.parentFileNameHint;
    if (p.keys.version !== undefined) details.descriptorVersion = p.keys.version;
    if (p.malformed.length) {
      findings.push(finding('MALFORMED_HEADER', `VMDK descriptor has lines that are neither key = value nor a known extent: ${JSON.stringify(p.malformed[0])}`));
    }
  }
  let virtualSize: bigint | undefined;
  if (details.container === 'descriptor') {
    if (details.extents.length === 0 && details.createType === undefined) throw new FormatError('text descriptor declares no createType and no extents', 'MALFORMED_HEADER');
    virtualSize = details.extents.reduce((n, e) => n + BigInt(e.sectors) * 512n, 0n);
  } else if (capacity !== undefined) {
    virtualSize = capacity * 512n;
  }
  return { subformat: details.createType, virtualSize, details, findings };
}

/** An extent "inside the image": the single SPARSE extent of a monolithic file, naming a bare file name. */
function extentProblem(e: VmdkExtent, d: VmdkDetails): string | undefined {
  if (e.type === 'ZERO') return undefined; // reads no file
  const file = e.file ?? '';
  if (file.startsWith('/') || /^[A-Za-z]:[\\/]/.test(file) || file.startsWith('\\')) return `absolute path ${JSON.stringify(file)}`;
  if (file.split(/[\\/]/).includes('..')) return `path ${JSON.stringify(file)} climbs out with ".."`;
  if (file.includes('/') || file.includes('\\')) return `path ${JSON.stringify(file)} names another directory`;
  if (d.container !== 'sparse' || e.type !== 'SPARSE') return `${e.type} extent ${JSON.stringify(file)} is a separate file`;
  return undefined;
}

const checks: SafetyRule<VmdkDetails>[] = [
  {
    code: 'VMDK_CREATE_TYPE',
    description: 'only monolithicSparse and streamOptimized keep the whole disk in one file',
    run: ({ details: d }) =>
      d.createType !== undefined && SAFE_CREATE_TYPES.includes(d.createType)
        ? []
        : [
            finding(
              'VMDK_CREATE_TYPE',
              `VMDK createType ${JSON.stringify(d.createType ?? '(none)')} is not monolithicSparse or streamOptimized; ` +
                `convert it to a single-file disk ("qemu-img convert -O vmdk -o subformat=streamOptimized IN OUT") and upload that`,
            ),
          ],
  },
  {
    code: 'VMDK_EXTENT_OUTSIDE',
    description: 'extents naming other files make the hypervisor read host files (CVE-2022-47951)',
    run: ({ details: d }) => {
      const out: Finding[] = [];
      const dataExtents = d.extents.filter((e) => e.type !== 'ZERO');
      if (d.container === 'sparse' && dataExtents.length > 1) {
        out.push(finding('VMDK_EXTENT_OUTSIDE', `VMDK descriptor declares ${dataExtents.length} data extents; a single-file VMDK has exactly one — upload a monolithic image`));
      }
      for (const e of d.extents) {
        const p = extentProblem(e, d);
        if (p) out.push(finding('VMDK_EXTENT_OUTSIDE', `VMDK extent refers to a file outside the image (${p}); images must be self-contained — convert to streamOptimized and upload that`));
      }
      if (d.container === 'descriptor' && d.extents.length === 0) {
        out.push(finding('VMDK_EXTENT_OUTSIDE', 'a stand-alone VMDK descriptor holds no data: its disk lives in other files; upload a single-file VMDK'));
      }
      return out;
    },
  },
  {
    code: 'BACKING_FILE',
    description: 'a parent (delta) disk makes the hypervisor read another file',
    run: ({ details: d }) =>
      d.parentCid !== undefined && d.parentCid.toLowerCase() !== 'ffffffff'
        ? [finding('BACKING_FILE', `VMDK is a delta disk of parent ${JSON.stringify(d.parentFileNameHint ?? d.parentCid)}; consolidate it into a standalone disk and upload that`)]
        : [],
  },
];

export const vmdkFormat = describeFormat<VmdkDetails>({
  name: 'vmdk',
  description: 'VMware VMDK: monolithicSparse, streamOptimized (others detected and refused)',
  async probe(src) {
    const b = await src.read(0, TEXT_PROBE);
    if (bytesEqual(b, 0, SPARSE_MAGIC) || bytesEqual(b, 0, COWD_MAGIC)) {
      if (b.length < 8) return false;
      const v = view(b).getUint32(4, true);
      return v >= 1 && v <= 3;
    }
    return looksLikeDescriptor(b);
  },
  inspect,
  checks,
});

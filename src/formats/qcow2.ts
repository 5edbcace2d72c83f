/**
 * qcow2 — QEMU copy-on-write v2 and v3.
 *
 * Spec: qemu docs/interop/qcow2.rst ("QCOW2 Image Format"); limits as qemu's block/qcow2.h.
 * All fields big-endian.
 *
 * | offset | size | field                      | use here |
 * |--------|------|----------------------------|----------|
 * | 0      | 4    | magic "QFI\xfb"            | probe |
 * | 4      | 4    | version (2 or 3)           | probe, subformat |
 * | 8      | 8    | backing_file_offset        | BACKING_FILE (name read, ≤ 1023 bytes as qemu) |
 * | 16     | 4    | backing_file_size          | |
 * | 20     | 4    | cluster_bits (9..21)       | clusterSize |
 * | 24     | 8    | size                       | virtualSize |
 * | 32     | 4    | crypt_method (0/1 AES/2 LUKS) | encryption |
 * | 36     | 4    | l1_size                    | entries ≤ limits.maxTableEntries; table inside the file |
 * | 40     | 8    | l1_table_offset            | cluster aligned, inside the file |
 * | 48     | 8    | refcount_table_offset      | cluster aligned, inside the file |
 * | 56     | 4    | refcount_table_clusters    | |
 * | 60     | 4    | nb_snapshots               | ≤ limits.maxSnapshots |
 * | 64     | 8    | snapshots_offset           | inside the file when there are snapshots |
 * | 72     | 8    | incompatible_features (v3) | bit 0 dirty, 1 corrupt, 2 external data file, 3 compression type, 4 extended L2 |
 * | 80     | 8    | compatible_features (v3)   | bit 0 lazy refcounts |
 * | 88     | 8    | autoclear_features (v3)    | bit 0 bitmaps, 1 raw external data |
 * | 96     | 4    | refcount_order (v3)        | refcountBits = 1 << order (order ≤ 6) |
 * | 100    | 4    | header_length (v3, ≥ 104)  | where header extensions start |
 * | 104    | 1    | compression_type (if header_length > 104) | 0 zlib, 1 zstd |
 *
 * Header extensions follow the header (v2: at 72) inside the first cluster: {type u32, length
 * u32, data padded to 8}; type 0 ends them. Known: 0xe2792aca backing format, 0x6803f857 feature
 * name table, 0x23852875 bitmaps, 0x0537be77 full disk encryption header, 0x44415441 external
 * data file name.
 *
 * Why: a backing file or an external data file makes the hypervisor read a *host* file chosen by
 * the uploader (CVE-2024-32498); unknown incompatible bits mean qemu itself would refuse the image.
 * Tables are never read here (O(header)); their extents are checked against the file size.
 */
import { checkTables, scanTable, sweepTables, qcow2L1Rule, qcow2L2Rule, qcow2RefcountRule, type TableToScan } from './block-map-rules.js';
import { FormatError, readExact, type ByteSource, view } from './byte-source.js';
import { finding, type Finding } from './findings.js';
import { describeFormat, type InspectContext, type SafetyRule } from './format.js';
import { QCOW2 } from './qcow2-layout.js';

const H = QCOW2.header;
const EXT = QCOW2.extension;
const MAX_BACKING_NAME = 1023;
const MAX_EXTENSIONS = 64;

/** feature names by bit number (QCOW2.incompatible, .compatible, .autoclear) */
const INCOMPATIBLE = ['dirty', 'corrupt', 'external data file', 'compression type', 'extended L2'] as const;
const COMPATIBLE = ['lazy refcounts'] as const;
const AUTOCLEAR = ['bitmaps', 'raw external data'] as const;
const KNOWN_INCOMPATIBLE_MASK = (1n << BigInt(INCOMPATIBLE.length)) - 1n;

export interface Qcow2Details {
  version: number;
  compat: '0.10' | '1.1';
  clusterSize: number;
  headerLength: number;
  incompatibleFeatures: string[];
  compatibleFeatures: string[];
  autoclearFeatures: string[];
  compressionType?: 'zlib' | 'zstd';
  refcountBits?: number;
  extendedL2: boolean;
  encryption: 'none' | 'aes' | 'luks';
  backingFile?: string;
  backingFormat?: string;
  dataFile?: string;
  dataFileRaw: boolean;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  snapshotCount: number;
  headerExtensions: string[];
  unknownIncompatibleBits: bigint;
}

function bit(bits: bigint, n: number): boolean {
  return ((bits >> BigInt(n)) & 1n) === 1n;
}

function featureNames(bits: bigint, names: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0n; i < 64n; i++) {
    if ((bits >> i) & 1n) out.push(names[Number(i)] ?? `bit ${i}`);
  }
  return out;
}

async function inspect(src: ByteSource, ctx: InspectContext) {
  const findings: Finding[] = [];
  const head = await readExact(src, 0, QCOW2.v2HeaderLength, 'qcow2 header');
  const h = view(head);
  const version = h.getUint32(H.version);
  const backingOffset = h.getBigUint64(H.backingFileOffset);
  const backingSize = h.getUint32(H.backingFileSize);
  const clusterBits = h.getUint32(H.clusterBits);
  const size = h.getBigUint64(H.size);
  const cryptMethod = h.getUint32(H.cryptMethod);
  const l1Size = h.getUint32(H.l1Size);
  const l1Offset = h.getBigUint64(H.l1TableOffset);
  const refcountOffset = h.getBigUint64(H.refcountTableOffset);
  const refcountClusters = h.getUint32(H.refcountTableClusters);
  const nbSnapshots = h.getUint32(H.nbSnapshots);
  const snapshotsOffset = h.getBigUint64(H.snapshotsOffset);

  if (clusterBits < QCOW2.minClusterBits || clusterBits > QCOW2.maxClusterBits) {
    throw new FormatError(`cluster_bits ${clusterBits} is outside ${QCOW2.minClusterBits}..${QCOW2.maxClusterBits}`, 'MALFORMED_HEADER');
  }
  const clusterSize = 1 << clusterBits;
  let incompatible = 0n;
  let compatible = 0n;
  let autoclear = 0n;
  let refcountBits: number | undefined = 16;
  let headerLength: number = QCOW2.v2HeaderLength;
  let compressionType: 'zlib' | 'zstd' | undefined;
  if (version === 3) {
    const v3 = view(await readExact(src, 0, QCOW2.v3MinHeaderLength, 'qcow2 v3 header'));
    incompatible = v3.getBigUint64(H.incompatibleFeatures);
    compatible = v3.getBigUint64(H.compatibleFeatures);
    autoclear = v3.getBigUint64(H.autoclearFeatures);
    const refcountOrder = v3.getUint32(H.refcountOrder);
    if (refcountOrder > QCOW2.maxRefcountOrder) throw new FormatError(`refcount_order ${refcountOrder} is over ${QCOW2.maxRefcountOrder}`, 'MALFORMED_HEADER');
    refcountBits = 1 << refcountOrder;
    headerLength = v3.getUint32(H.headerLength);
    if (headerLength < QCOW2.v3MinHeaderLength || headerLength % 8 !== 0 || headerLength > clusterSize) {
      throw new FormatError(
        `header_length ${headerLength} must be a multiple of 8 between ${QCOW2.v3MinHeaderLength} and the cluster size`,
        'MALFORMED_HEADER',
      );
    }
    if (headerLength > H.compressionType) {
      const b = await readExact(src, H.compressionType, 1, 'qcow2 compression type');
      const ct = b[0]!;
      if (ct > QCOW2.compression.zstd) throw new FormatError(`compression_type ${ct} is unknown (0 zlib, 1 zstd)`, 'MALFORMED_HEADER');
      compressionType = ct === QCOW2.compression.zstd ? 'zstd' : 'zlib';
    } else {
      compressionType = 'zlib';
    }
    if (!bit(incompatible, QCOW2.incompatible.compressionType) && compressionType !== 'zlib') {
      throw new FormatError('compression_type is zstd but the compression type incompatible bit is clear', 'MALFORMED_HEADER');
    }
  } else if (version !== 2) {
    throw new FormatError(`version ${version} is not 2 or 3`, 'MALFORMED_HEADER');
  }

  // header extensions, inside the first cluster
  let backingFormat: string | undefined;
  let dataFile: string | undefined;
  const extensions: string[] = [];
  let at = headerLength;
  for (let n = 0; ; n++) {
    if (n >= MAX_EXTENSIONS) {
      findings.push(finding('OVER_LIMIT', `more than ${MAX_EXTENSIONS} qcow2 header extensions; qemu would not write such an image`));
      break;
    }
    if (at + 8 > clusterSize) throw new FormatError(`header extension at ${at} runs past the first cluster`, 'MALFORMED_HEADER');
    const eh = view(await readExact(src, at, 8, 'qcow2 header extension'));
    const type = eh.getUint32(0);
    const len = eh.getUint32(4);
    if (type === EXT.end) break;
    if (at + 8 + len > clusterSize) {
      throw new FormatError(`header extension 0x${type.toString(16)} (${len} bytes at ${at}) runs past the first cluster`, 'MALFORMED_HEADER');
    }
    const data = len > 0 ? await readExact(src, at + 8, len, 'qcow2 header extension data') : new Uint8Array(0);
    switch (type) {
      case EXT.backingFormat:
        backingFormat = text(data);
        extensions.push('backing format');
        break;
      case EXT.externalDataFile:
        dataFile = text(data);
        extensions.push('external data file');
        break;
      case EXT.featureNameTable:
        extensions.push('feature names');
        break;
      case EXT.bitmaps:
        extensions.push('bitmaps');
        break;
      case EXT.fullDiskEncryptionHeader:
        extensions.push('full disk encryption header');
        break;
      default:
        extensions.push(`unknown 0x${type.toString(16).padStart(8, '0')}`);
    }
    at += 8 + Math.ceil(len / 8) * 8;
  }

  let backingFile: string | undefined;
  if (backingOffset !== 0n) {
    if (backingSize > MAX_BACKING_NAME) {
      findings.push(finding('OVER_LIMIT', `backing file name length ${backingSize} is over qemu's ${MAX_BACKING_NAME}-byte limit`));
    }
    if (backingOffset + BigInt(Math.min(backingSize, MAX_BACKING_NAME)) > BigInt(clusterSize)) {
      findings.push(finding('OFFSET_PAST_END', `backing file name at ${backingOffset} lies outside the header cluster`));
      backingFile = '(unreadable)';
    } else {
      backingFile = text(await readExact(src, Number(backingOffset), Math.min(backingSize, MAX_BACKING_NAME), 'qcow2 backing file name'));
    }
  }

  // tables: bounds only (never read them here)
  if (l1Size > ctx.limits.maxTableEntries) {
    findings.push(finding('OVER_LIMIT', `L1 table of ${l1Size} entries is over the limit of ${ctx.limits.maxTableEntries}`));
  }
  if (nbSnapshots > ctx.limits.maxSnapshots) {
    findings.push(finding('OVER_LIMIT', `${nbSnapshots} internal snapshots is over the limit of ${ctx.limits.maxSnapshots}`));
  }
  const mask = BigInt(clusterSize - 1);
  let tablesInside = true;
  const tables: [string, bigint, bigint, boolean][] = [
    ['L1 table', l1Offset, BigInt(l1Size) * 8n, l1Size > 0],
    ['refcount table', refcountOffset, BigInt(refcountClusters) * BigInt(clusterSize), true],
    ['snapshot table', snapshotsOffset, 1n, nbSnapshots > 0],
  ];
  for (const [what, offset, length, present] of tables) {
    if (!present) continue;
    if ((offset & mask) !== 0n) {
      tablesInside = false;
      findings.push(finding('MALFORMED_HEADER', `${what} offset ${offset} is not aligned to the ${clusterSize}-byte cluster size`));
    }
    if (src.size !== undefined && offset + length > BigInt(src.size)) {
      tablesInside = false;
      findings.push(
        finding('OFFSET_PAST_END', `${what} at ${offset} (${length} bytes) lies past the end of the ${src.size}-byte image; the image is truncated or crafted`),
      );
    }
  }

  const extendedL2 = bit(incompatible, QCOW2.incompatible.extendedL2);
  const externalData = dataFile !== undefined || bit(incompatible, QCOW2.incompatible.externalDataFile);
  if (tablesInside && l1Size <= ctx.limits.maxTableEntries && refcountClusters * clusterSize <= ctx.limits.maxTableScanBytes) {
    findings.push(
      ...(await qcow2TableFindings(src, ctx, {
        clusterSize,
        extendedL2,
        l1Offset: Number(l1Offset),
        l1Size,
        refcountOffset: Number(refcountOffset),
        refcountClusters,
        size,
        externalData,
      })),
    );
  }

  const details: Qcow2Details = {
    version,
    compat: version === 2 ? '0.10' : '1.1',
    clusterSize,
    headerLength,
    incompatibleFeatures: featureNames(incompatible, INCOMPATIBLE),
    compatibleFeatures: featureNames(compatible, COMPATIBLE),
    autoclearFeatures: featureNames(autoclear, AUTOCLEAR),
    extendedL2,
    encryption: cryptMethod === 0 ? 'none' : cryptMethod === 1 ? 'aes' : cryptMethod === 2 ? 'luks' : 'none',
    dataFileRaw: bit(autoclear, QCOW2.autoclear.rawExternalData),
    l1Size,
    l1TableOffset: Number(l1Offset),
    refcountTableOffset: Number(refcountOffset),
    refcountTableClusters: refcountClusters,
    snapshotCount: nbSnapshots,
    headerExtensions: extensions,
    unknownIncompatibleBits: incompatible & ~KNOWN_INCOMPATIBLE_MASK,
  };
  if (cryptMethod > 2) throw new FormatError(`crypt_method ${cryptMethod} is unknown (0 none, 1 AES, 2 LUKS)`, 'MALFORMED_HEADER');
  if (compressionType) details.compressionType = compressionType;
  if (version === 3) details.refcountBits = refcountBits;
  if (backingFile !== undefined) details.backingFile = backingFile;
  if (backingFormat !== undefined) details.backingFormat = backingFormat;
  if (dataFile !== undefined) details.dataFile = dataFile;
  return { subformat: version === 2 ? 'v2' : 'v3', virtualSize: size, details, findings };
}

interface Qcow2Tables {
  clusterSize: number;
  extendedL2: boolean;
  l1Offset: number;
  l1Size: number;
  refcountOffset: number;
  refcountClusters: number;
  /** virtual size */
  size: bigint;
  /** data clusters live in another file: their offsets are not this file's */
  externalData: boolean;
}

/**
 * Metadata consistency as qemu-img check sees it: the refcount table's blocks, the L1 table's L2
 * tables and every L2 entry's cluster lie inside the file (block-map-rules.ts, shared with the
 * reader). Reads the L1 table (the entries the virtual size needs); scans the others.
 */
async function qcow2TableFindings(src: ByteSource, ctx: InspectContext, t: Qcow2Tables): Promise<Finding[]> {
  const l2Entries = t.clusterSize / (t.extendedL2 ? QCOW2.entry.extendedL2Bytes : QCOW2.entry.bytes);
  const perL1 = BigInt(t.clusterSize) * BigInt(l2Entries);
  const needed = Number((t.size + perL1 - 1n) / perL1);
  const out: Finding[] = [];
  if (t.l1Size < needed) {
    out.push(
      finding(
        'TABLE_MALFORMED',
        `qcow2 L1 table has ${t.l1Size} entries but the ${t.size}-byte disk needs ${needed} (qemu refuses it); re-create the image with "qemu-img convert"`,
      ),
    );
  }
  const g = { clusterSize: t.clusterSize, extendedL2: t.extendedL2, l1Offset: t.l1Offset, l1Bytes: t.l1Size * 8 };
  const l1Entries = Math.min(needed, t.l1Size);
  const scans: TableToScan[] = [
    { offset: t.refcountOffset, length: t.refcountClusters * t.clusterSize, rule: qcow2RefcountRule(t.clusterSize, t.refcountOffset) },
  ];
  if (l1Entries > 0) {
    // a stream declares the refcount scan before it waits for the L1 table, which may lie after
    // the refcount table (qemu with 2 MiB clusters); checkTables finds the same scan again
    if (t.refcountOffset < t.l1Offset) await scanTable(src, scans[0]!.offset, scans[0]!.length, scans[0]!.rule);
    // and sweeps the clusters before the L1 table: after "qemu-img resize" the L1 table lies after
    // L2 tables it names, which a stream would otherwise meet before it knows they are tables
    if (!t.externalData) {
      const key = `qcow2-l2-sweep:${g.clusterSize}:${g.extendedL2}:${g.l1Offset}:${g.l1Bytes}`;
      sweepTables(src, { key, offset: t.clusterSize, length: t.l1Offset - t.clusterSize, unit: t.clusterSize, ruleAt: (o) => qcow2L2Rule(g, o) });
    }
    const l1 = view(await readExact(src, t.l1Offset, l1Entries * 8, 'qcow2 L1 table'));
    scans.push({ offset: t.l1Offset, length: l1Entries * 8, rule: qcow2L1Rule(g) });
    const l2Tables = new Set<number>();
    for (let i = 0; i < l1Entries; i++) {
      const l2 = Number(l1.getBigUint64(i * 8) & QCOW2.entry.offsetMask);
      // invalid L2 offsets are the L1 rule's finding; following them would only repeat it
      if (l2 !== 0 && l2 % t.clusterSize === 0 && l2 >= t.clusterSize) l2Tables.add(l2);
      // one past the budget is enough for checkTables to refuse; the list stays bounded
      if (l2Tables.size * t.clusterSize > ctx.limits.maxTableScanBytes) break;
    }
    if (!t.externalData) for (const l2 of l2Tables) scans.push({ offset: l2, length: t.clusterSize, rule: qcow2L2Rule(g, l2) });
  }
  out.push(...(await checkTables(src, scans, ctx.limits.maxTableScanBytes, 'qcow2')));
  return out;
}

function text(b: Uint8Array): string {
  return new TextDecoder('utf-8', { fatal: false }).decode(b).replace(/\0+$/, '');
}

const checks: SafetyRule<Qcow2Details>[] = [
  {
    code: 'BACKING_FILE',
    description: 'a backing file makes the hypervisor read another (host) file',
    run: ({ details: d }) =>
      d.backingFile === undefined
        ? []
        : [
            finding(
              'BACKING_FILE',
              `qcow2 image has a backing file (${JSON.stringify(d.backingFile)}${d.backingFormat ? `, format ${d.backingFormat}` : ''}); ` +
                `images must be self-contained — flatten it with "qemu-img convert -O qcow2 IN OUT" (or imago convert) and upload the result`,
            ),
          ],
  },
  {
    code: 'DATA_FILE',
    description: 'an external data file makes the hypervisor read a host file (CVE-2024-32498)',
    run: ({ details: d }) =>
      d.dataFile === undefined && !d.incompatibleFeatures.includes('external data file')
        ? []
        : [
            finding(
              'DATA_FILE',
              `qcow2 image references an external data file (${JSON.stringify(d.dataFile ?? '(unnamed)')}); images must be self-contained — ` +
                `convert it with "qemu-img convert -O qcow2 IN OUT" and upload the result`,
            ),
          ],
  },
  {
    code: 'UNKNOWN_FEATURES',
    description: 'incompatible feature bits we do not know: qemu would refuse the image',
    run: ({ details: d }) =>
      d.unknownIncompatibleBits === 0n
        ? []
        : [
            finding(
              'UNKNOWN_FEATURES',
              `qcow2 image sets unknown incompatible feature bits (0x${d.unknownIncompatibleBits.toString(16)}); recreate it with a current qemu-img`,
            ),
          ],
  },
  {
    code: 'CORRUPT_IMAGE',
    description: 'qemu marked the image corrupt',
    run: ({ details: d }) =>
      d.incompatibleFeatures.includes('corrupt')
        ? [finding('CORRUPT_IMAGE', 'qcow2 image is marked corrupt by qemu; repair it with "qemu-img check -r all" or convert it, then upload again')]
        : [],
  },
  {
    code: 'ENCRYPTED',
    description: 'encrypted payload: the service cannot read the guest data',
    run: ({ details: d }) =>
      d.encryption === 'none'
        ? []
        : [
            finding(
              'ENCRYPTED',
              d.encryption === 'aes'
                ? 'qcow2 image uses the legacy AES encryption, which qemu no longer supports for use; re-encrypt with LUKS'
                : 'qcow2 image is LUKS-encrypted; guests need the key to boot it',
              d.encryption === 'aes' ? 'warning' : 'info',
            ),
          ],
  },
];

export const qcow2Format = describeFormat<Qcow2Details>({
  name: 'qcow2',
  description: 'QEMU copy-on-write v2/v3',
  async probe(src) {
    const b = await src.read(0, 8);
    if (b.length < 8 || view(b).getUint32(H.magic) !== QCOW2.magic) return false;
    const version = view(b).getUint32(H.version);
    return version === 2 || version === 3;
  },
  inspect,
  checks,
});

/**
 * VMDK writer — hosted sparse extents with an embedded descriptor: streamOptimized (default) and
 * monolithicSparse (`-o subformat=monolithicSparse`).
 *
 * Spec: VMware "Virtual Disk Format 5.0" §"Hosted Sparse Extent Header", §"Stream-Optimized
 * Compressed Sparse Extents"; the layout qemu block/vmdk.c (`vmdk_init_extent`) creates for
 * monolithicSparse. Little-endian; offsets and sizes in 512-byte sectors.
 *
 * Header (sector 0; the reader's table in src/formats/vmdk.ts):
 * | offset | size | field | streamOptimized | monolithicSparse |
 * |--------|------|-------|-----------------|------------------|
 * | 0  | 4 | magic "KDMV" | | |
 * | 4  | 4 | version | 3 | 1 |
 * | 8  | 4 | flags | bit 0 NL test, 16 compressed, 17 markers | bit 0 NL test, 1 redundant GT |
 * | 12 | 8 | capacity (sectors) | ceil(size / 512) | same |
 * | 20 | 8 | grainSize | 128 (64 KiB) | 128 |
 * | 28 | 8 | descriptorOffset / 36 descriptorSize | 1 / 20 | 1 / 20 |
 * | 44 | 4 | numGTEsPerGT | 512 | 512 |
 * | 48 | 8 | rgdOffset | 0 | 21 |
 * | 56 | 8 | gdOffset | GD_AT_END in the head, the real one in the footer | after the RGD and RGTs |
 * | 64 | 8 | overHead | 128 | first grain, grain aligned |
 * | 73 | 4 | "\n \r\n" | | |
 * | 77 | 2 | compressAlgorithm | 1 deflate | 0 |
 *
 * streamOptimized, one forward pass (streamable): header, descriptor, then per non-zero grain a
 * grain marker {lba u64, size u32} + zlib data padded to a sector; after the grains of each grain
 * table's span (512 grains = 32 MiB) that had any, a GT marker {numSectors u64, size u32 = 0, type
 * u32 = 1} and the GT (entries: sector of each grain's marker); at the end a GD marker (type 2) and
 * the GD (a zero entry: a span with no grain), a footer marker (type 3) with a copy of the header
 * whose gdOffset is the real one, and an end-of-stream marker (a zero sector). Compression runs on
 * the worker pool; grains are written in guest order, so the file is deterministic.
 *
 * monolithicSparse (file only): qemu's layout — RGD at 21, its RGTs, GD, GTs, grains from the
 * first grain-aligned sector after. Only GTs with a grain are written (a never-written GT reads as
 * zeros in the `.part`, i.e. unallocated grains), both copies, each once its span is done.
 * Memory: one GT and the GD (4 bytes per 32 MiB of disk).
 */
import { basename } from 'node:path';
import { DiskError, type DiskReader, type DiskWriter, type OutputTarget, type WriteOptions, type WriteResult } from '../disk.js';
import { CompressPool, mapOrdered, type Codec } from './compress-pool.js';
import { alignUp, dataBlocks, type DataBlock } from './data-blocks.js';
import { type FileSink, type SequentialSink, withOutput } from './output-sink.js';
import { WriterOptions } from './write-options.js';

const SECTOR = 512;
const MAGIC = 0x564d444b; // "KDMV" little-endian
const GRAIN_SECTORS = 128;
const GRAIN = GRAIN_SECTORS * SECTOR;
const GTES_PER_GT = 512;
const GT_SECTORS = (GTES_PER_GT * 4) / SECTOR;
const GT_SPAN = GTES_PER_GT * GRAIN;
const DESCRIPTOR_OFFSET = 1;
const DESCRIPTOR_SECTORS = 20;
const STREAM_OVERHEAD = 128;
const GD_AT_END = 0xffffffffffffffffn;

const FLAG_NL_TEST = 1 << 0;
const FLAG_REDUNDANT_GT = 1 << 1;
const FLAG_COMPRESSED = 1 << 16;
const FLAG_MARKERS = 1 << 17;
const COMPRESSION_DEFLATE = 1;

const O_MAGIC = 0;
const O_VERSION = 4;
const O_FLAGS = 8;
const O_CAPACITY = 12;
const O_GRAIN_SIZE = 20;
const O_DESCRIPTOR_OFFSET = 28;
const O_DESCRIPTOR_SIZE = 36;
const O_NUM_GTES = 44;
const O_RGD_OFFSET = 48;
const O_GD_OFFSET = 56;
const O_OVERHEAD = 64;
const O_NL_CHARS = 73;
const O_COMPRESS_ALGORITHM = 77;

/** marker types (VMDK 5.0 §"Stream-Optimized Compressed Sparse Extents") */
const MARKER_EOS = 0;
const MARKER_GT = 1;
const MARKER_GD = 2;
const MARKER_FOOTER = 3;
const MARKER_HEADER_BYTES = 12;

/** qemu compresses VMDK grains with zlib `compress()`: zlib wrapper, default level. */
const CODEC: Codec = { kind: 'deflate', level: 6 };
const MAX_IN_FLIGHT = 16;
const SUBFORMATS = ['streamOptimized', 'monolithicSparse'] as const;
type Subformat = (typeof SUBFORMATS)[number];
const OPTIONS = ['subformat', 'adapter_type', 'hwversion'] as const;
const ADAPTERS = ['ide', 'lsilogic', 'buslogic', 'legacyESX'] as const;

interface Header {
  readonly version: number;
  readonly flags: number;
  readonly capacity: number;
  readonly rgdOffset: number;
  readonly gdOffset: bigint;
  readonly overhead: number;
  readonly compressed: boolean;
}

function headerSector(h: Header): Uint8Array {
  const b = new Uint8Array(SECTOR);
  const v = new DataView(b.buffer);
  v.setUint32(O_MAGIC, MAGIC, true);
  v.setUint32(O_VERSION, h.version, true);
  v.setUint32(O_FLAGS, h.flags, true);
  v.setBigUint64(O_CAPACITY, BigInt(h.capacity), true);
  v.setBigUint64(O_GRAIN_SIZE, BigInt(GRAIN_SECTORS), true);
  v.setBigUint64(O_DESCRIPTOR_OFFSET, BigInt(DESCRIPTOR_OFFSET), true);
  v.setBigUint64(O_DESCRIPTOR_SIZE, BigInt(DESCRIPTOR_SECTORS), true);
  v.setUint32(O_NUM_GTES, GTES_PER_GT, true);
  v.setBigUint64(O_RGD_OFFSET, BigInt(h.rgdOffset), true);
  v.setBigUint64(O_GD_OFFSET, h.gdOffset, true);
  v.setBigUint64(O_OVERHEAD, BigInt(h.overhead), true);
  b.set([0x0a, 0x20, 0x0d, 0x0a], O_NL_CHARS);
  v.setUint16(O_COMPRESS_ALGORITHM, h.compressed ? COMPRESSION_DEFLATE : 0, true);
  return b;
}

/** The embedded descriptor, as qemu writes it (geometry 16 heads × 63 sectors, cylinders capped at 16383). */
function descriptor(subformat: Subformat, capacity: number, fileName: string, adapter: string, hwVersion: string): Uint8Array {
  const cylinders = Math.min(16383, Math.floor(capacity / (16 * 63)));
  const cid = process.getBuiltinModule('node:crypto').randomInt(0, 0xffffffff).toString(16).padStart(8, '0');
  const text = [
    '# Disk DescriptorFile',
    'version=1',
    `CID=${cid}`,
    'parentCID=ffffffff',
    `createType="${subformat}"`,
    '',
    '# Extent description',
    `RW ${capacity} SPARSE "${fileName.replace(/"/g, '')}"`,
    '',
    '# The Disk Data Base',
    '#DDB',
    '',
    `ddb.virtualHWVersion = "${hwVersion}"`,
    `ddb.geometry.cylinders = "${cylinders}"`,
    'ddb.geometry.heads = "16"',
    'ddb.geometry.sectors = "63"',
    `ddb.adapterType = "${adapter}"`,
    '',
  ].join('\n');
  const bytes = new TextEncoder().encode(text);
  if (bytes.length > DESCRIPTOR_SECTORS * SECTOR) throw new DiskError('VMDK descriptor too long (file name too long?)', 'BAD_OPTION');
  const out = new Uint8Array(DESCRIPTOR_SECTORS * SECTOR);
  out.set(bytes);
  return out;
}

function metadataMarker(numSectors: number, type: number): Uint8Array {
  const b = new Uint8Array(SECTOR);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, BigInt(numSectors), true);
  v.setUint32(8, 0, true);
  v.setUint32(12, type, true);
  return b;
}

export interface VmdkStreamSettings {
  readonly fileName: string;
  readonly adapter: string;
  readonly hwVersion: string;
}

function settings(opts: WriteOptions, target: OutputTarget): VmdkStreamSettings & { subformat: Subformat } {
  const o = new WriterOptions('vmdk', opts.options, OPTIONS);
  return {
    subformat: o.string('subformat', SUBFORMATS, 'streamOptimized'),
    adapter: o.string('adapter_type', ADAPTERS, 'ide'),
    hwVersion: o.text('hwversion', '4'),
    fileName: target.kind === 'file' ? basename(target.path) : 'disk.vmdk',
  };
}

export const vmdkWriter: DiskWriter = {
  format: 'vmdk',
  streamable: true,
  async write(src: DiskReader, target: OutputTarget, opts: WriteOptions = {}): Promise<WriteResult> {
    const s = settings(opts, target);
    const streamable = s.subformat === 'streamOptimized';
    const bytesWritten = await withOutput(target, `vmdk ${s.subformat}`, streamable, opts, async (out) => {
      if (s.subformat === 'monolithicSparse') {
        if (out.kind !== 'file') throw new DiskError('unreachable: monolithicSparse to a stream', 'UNSUPPORTED');
        await writeMonolithicSparse(src, out.file, s, opts);
        return;
      }
      await writeStreamOptimized(src, out.kind === 'file' ? out.file.sequential(0) : out.stream, s, opts);
    });
    opts.onProgress?.({ done: src.virtualSize, total: src.virtualSize });
    return { bytesWritten };
  },
};

/** Writes a whole streamOptimized VMDK to `sink` in one forward pass (also used by the OVA writer). */
export async function writeStreamOptimized(src: DiskReader, sink: SequentialSink, s: VmdkStreamSettings, opts: WriteOptions): Promise<void> {
  const capacity = Math.ceil(src.virtualSize / SECTOR);
  const gtCount = Math.ceil(capacity / GRAIN_SECTORS / GTES_PER_GT);
  const gdSectors = Math.ceil((gtCount * 4) / SECTOR);
  const head: Header = {
    version: 3,
    flags: FLAG_NL_TEST | FLAG_COMPRESSED | FLAG_MARKERS,
    capacity,
    rgdOffset: 0,
    gdOffset: GD_AT_END,
    overhead: STREAM_OVERHEAD,
    compressed: true,
  };
  await sink.write(headerSector(head));
  await sink.write(descriptor('streamOptimized', capacity, s.fileName, s.adapter, s.hwVersion));
  await sink.writeZeros(STREAM_OVERHEAD * SECTOR - sink.position);

  const gd = new DataView(new ArrayBuffer(gdSectors * SECTOR));
  let gtIndex = -1;
  let gt: DataView | undefined;
  const flushGt = async (): Promise<void> => {
    if (!gt) return;
    await sink.write(metadataMarker(GT_SECTORS, MARKER_GT));
    gd.setUint32(gtIndex * 4, sink.position / SECTOR, true);
    await sink.write(new Uint8Array(gt.buffer));
    gt = undefined;
  };

  const pool = new CompressPool();
  try {
    const grains = mapOrdered(dataBlocks(src, GRAIN, opts), (b: DataBlock) => pool.compress(b.data, CODEC), MAX_IN_FLIGHT);
    for await (const [b, z] of grains) {
      const g = Math.floor(b.offset / GT_SPAN);
      if (g !== gtIndex) {
        await flushGt();
        gtIndex = g;
        gt = new DataView(new ArrayBuffer(GT_SECTORS * SECTOR));
      }
      gt!.setUint32(((b.offset % GT_SPAN) / GRAIN) * 4, sink.position / SECTOR, true);
      const grain = new Uint8Array(alignUp(MARKER_HEADER_BYTES + z.length, SECTOR));
      const v = new DataView(grain.buffer);
      v.setBigUint64(0, BigInt(b.offset / SECTOR), true);
      v.setUint32(8, z.length, true);
      grain.set(z, MARKER_HEADER_BYTES);
      await sink.write(grain);
    }
  } finally {
    await pool.close();
  }
  await flushGt();

  await sink.write(metadataMarker(gdSectors, MARKER_GD));
  const gdOffset = sink.position / SECTOR;
  await sink.write(new Uint8Array(gd.buffer));
  await sink.write(metadataMarker(1, MARKER_FOOTER));
  await sink.write(headerSector({ ...head, gdOffset: BigInt(gdOffset) }));
  await sink.write(metadataMarker(0, MARKER_EOS));
}

async function writeMonolithicSparse(src: DiskReader, file: FileSink, s: VmdkStreamSettings, opts: WriteOptions): Promise<void> {
  const capacity = Math.ceil(src.virtualSize / SECTOR);
  const gtCount = Math.ceil(capacity / GRAIN_SECTORS / GTES_PER_GT);
  const gdSectors = Math.ceil((gtCount * 4) / SECTOR);
  const rgdOffset = DESCRIPTOR_OFFSET + DESCRIPTOR_SECTORS;
  const gdOffset = rgdOffset + gdSectors + GT_SECTORS * gtCount;
  const grainOffset = alignUp(gdOffset + gdSectors + GT_SECTORS * gtCount, GRAIN_SECTORS);
  const head: Header = {
    version: 1,
    flags: FLAG_NL_TEST | FLAG_REDUNDANT_GT,
    capacity,
    rgdOffset,
    gdOffset: BigInt(gdOffset),
    overhead: grainOffset,
    compressed: false,
  };

  // Both directories point at every GT slot, as qemu preallocates them; unwritten GTs are zeros.
  const gd = new DataView(new ArrayBuffer(gdSectors * SECTOR));
  const rgd = new DataView(new ArrayBuffer(gdSectors * SECTOR));
  for (let i = 0; i < gtCount; i++) {
    gd.setUint32(i * 4, gdOffset + gdSectors + i * GT_SECTORS, true);
    rgd.setUint32(i * 4, rgdOffset + gdSectors + i * GT_SECTORS, true);
  }
  await file.truncate(grainOffset * SECTOR);

  let next = grainOffset;
  let gtIndex = -1;
  let gt: DataView | undefined;
  const flushGt = async (): Promise<void> => {
    if (!gt) return;
    await file.pwrite(new Uint8Array(gt.buffer), gd.getUint32(gtIndex * 4, true) * SECTOR);
    await file.pwrite(new Uint8Array(gt.buffer.slice(0)), rgd.getUint32(gtIndex * 4, true) * SECTOR);
    gt = undefined;
  };
  for await (const b of dataBlocks(src, GRAIN, opts)) {
    const g = Math.floor(b.offset / GT_SPAN);
    if (g !== gtIndex) {
      await flushGt();
      gtIndex = g;
      gt = new DataView(new ArrayBuffer(GT_SECTORS * SECTOR));
    }
    gt!.setUint32(((b.offset % GT_SPAN) / GRAIN) * 4, next, true);
    await file.pwrite(b.data, next * SECTOR);
    next += GRAIN_SECTORS;
  }
  await flushGt();
  await file.pwrite(new Uint8Array(rgd.buffer), rgdOffset * SECTOR);
  await file.pwrite(new Uint8Array(gd.buffer), gdOffset * SECTOR);
  await file.pwrite(headerSector(head), 0);
  await file.pwrite(descriptor('monolithicSparse', capacity, s.fileName, s.adapter, s.hwVersion), DESCRIPTOR_OFFSET * SECTOR);
  await file.truncate(next * SECTOR);
}

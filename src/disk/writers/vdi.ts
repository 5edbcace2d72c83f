/**
 * VDI writer — VirtualBox Disk Image 1.1: dynamic ("normal", default) or static (`-o static=on`).
 *
 * Spec: VirtualBox src/VBox/Storage/VDICore.h (`VDIPREHEADER`, `VDIHEADER1PLUS`); what qemu
 * accepts and checks: qemu block/vdi.c (`vdi_open`, `vdi_co_check`). Little-endian. The field
 * table is in src/formats/vdi.ts; what we write:
 *
 * | offset | field | value |
 * |--------|-------|-------|
 * | 0   | text | "<<< Oracle VM VirtualBox Disk Image >>>\n" |
 * | 64  | signature | 0xbeda107f |
 * | 68  | version | 0x00010001 (1.1) |
 * | 72  | header size | 0x180 (as qemu: from image type to the parent UUID) |
 * | 76  | image type | 1 normal (dynamic), 2 fixed (static) |
 * | 340 | block map offset | 512 |
 * | 344 | data offset | 1 MiB aligned after the block map (as VirtualBox) |
 * | 360 | sector size | 512 |
 * | 368 | disk size | virtual size rounded up to 512 (qemu reads whole sectors) |
 * | 376 | block size | 1 MiB (the only size qemu accepts) |
 * | 384 | blocks in image | ceil(disk size / 1 MiB) |
 * | 388 | blocks allocated | must equal the allocated map entries (`qemu-img check`) |
 * | 392, 408 | image / last snapshot UUID | random |
 *
 * Block map: u32 per block, the block's index in the data area, or 0xFFFFFFFF unallocated.
 * Dynamic (file only): blocks are allocated in guest order as data meets them; inside an
 * allocated block only non-zero 64 KiB units are written (the rest stays a file hole, reading
 * zeros). Static (streamable): every block allocated, map[i] = i, holes zeros. The map is held in
 * memory (4 bytes per MiB).
 */
import { DiskError, type DiskReader, type DiskWriter, type OutputTarget, type WriteOptions, type WriteResult } from '../disk.js';
import { alignUp, dataBlocks, writeIntoBlocks } from './data-blocks.js';
import { withOutput } from './output-sink.js';
import { WriterOptions } from './write-options.js';

// node:crypto is loaded on first use: every conversion imports every writer (issue 20, CLI start)
const randomBytes = (n: number): Buffer => process.getBuiltinModule('node:crypto').randomBytes(n);

const SECTOR = 512;
const MiB = 1024 * 1024;
const BLOCK_SIZE = MiB;
const UNIT = 64 * 1024;
const TEXT = '<<< Oracle VM VirtualBox Disk Image >>>\n';
const SIGNATURE = 0xbeda107f;
const VERSION_1_1 = 0x00010001;
const HEADER_SIZE_1_1 = 0x180;
const TYPE_NORMAL = 1;
const TYPE_FIXED = 2;
const UNALLOCATED = 0xffffffff;
const BMAP_OFFSET = 512;
/** qemu block/vdi.c VDI_BLOCKS_IN_IMAGE_MAX: 0x3fffffff blocks (≈ 1 PiB) */
const MAX_BLOCKS = 0x3fffffff;

const O_SIGNATURE = 64;
const O_VERSION = 68;
const O_HEADER_SIZE = 72;
const O_IMAGE_TYPE = 76;
const O_BMAP = 340;
const O_DATA = 344;
const O_SECTOR_SIZE = 360;
const O_DISK_SIZE = 368;
const O_BLOCK_SIZE = 376;
const O_BLOCKS_IN_IMAGE = 384;
const O_BLOCKS_ALLOCATED = 388;
const O_UUID_IMAGE = 392;
const O_UUID_LAST_SNAP = 408;

const OPTIONS = ['static'] as const;

function header(type: number, diskSize: number, blocks: number, allocated: number, dataOffset: number): Uint8Array {
  const b = new Uint8Array(SECTOR);
  const v = new DataView(b.buffer);
  for (let i = 0; i < TEXT.length; i++) b[i] = TEXT.charCodeAt(i);
  v.setUint32(O_SIGNATURE, SIGNATURE, true);
  v.setUint32(O_VERSION, VERSION_1_1, true);
  v.setUint32(O_HEADER_SIZE, HEADER_SIZE_1_1, true);
  v.setUint32(O_IMAGE_TYPE, type, true);
  v.setUint32(O_BMAP, BMAP_OFFSET, true);
  v.setUint32(O_DATA, dataOffset, true);
  v.setUint32(O_SECTOR_SIZE, SECTOR, true);
  v.setBigUint64(O_DISK_SIZE, BigInt(diskSize), true);
  v.setUint32(O_BLOCK_SIZE, BLOCK_SIZE, true);
  v.setUint32(O_BLOCKS_IN_IMAGE, blocks, true);
  v.setUint32(O_BLOCKS_ALLOCATED, allocated, true);
  b.set(randomBytes(16), O_UUID_IMAGE);
  b.set(randomBytes(16), O_UUID_LAST_SNAP);
  return b;
}

export const vdiWriter: DiskWriter = {
  format: 'vdi',
  /** static only; dynamic is refused for a stream target */
  streamable: true,
  async write(src: DiskReader, target: OutputTarget, opts: WriteOptions = {}): Promise<WriteResult> {
    const isStatic = new WriterOptions('vdi', opts.options, OPTIONS).bool('static', false);
    const diskSize = alignUp(src.virtualSize, SECTOR);
    const blocks = Math.ceil(diskSize / BLOCK_SIZE);
    if (blocks > MAX_BLOCKS) throw new DiskError(`VDI disks are at most ${MAX_BLOCKS} MiB`, 'UNSUPPORTED');
    const bmapBytes = alignUp(blocks * 4, SECTOR);
    const dataOffset = alignUp(BMAP_OFFSET + bmapBytes, MiB);
    const bmap = new Uint8Array(bmapBytes);
    const bv = new DataView(bmap.buffer);

    const bytesWritten = await withOutput(target, isStatic ? 'vdi static' : 'vdi dynamic', isStatic, opts, async (out) => {
      if (isStatic) {
        for (let i = 0; i < blocks; i++) bv.setUint32(i * 4, i, true);
        const end = dataOffset + blocks * BLOCK_SIZE;
        const units = dataBlocks(src, UNIT, opts);
        if (out.kind === 'stream') {
          const s = out.stream;
          await s.write(header(TYPE_FIXED, diskSize, blocks, blocks, dataOffset));
          await s.write(bmap);
          await s.writeZeros(dataOffset - s.position);
          for await (const u of units) {
            await s.writeZeros(dataOffset + u.offset - s.position);
            await s.write(u.data);
          }
          await s.writeZeros(end - s.position);
          return;
        }
        await out.file.truncate(end);
        for await (const u of units) await out.file.pwrite(u.data, dataOffset + u.offset);
        await out.file.pwrite(bmap, BMAP_OFFSET);
        await out.file.pwrite(header(TYPE_FIXED, diskSize, blocks, blocks, dataOffset), 0);
        return;
      }
      if (out.kind !== 'file') return;
      for (let i = 0; i < blocks; i++) bv.setUint32(i * 4, UNALLOCATED, true);
      let allocated = 0;
      await writeIntoBlocks(src, UNIT, BLOCK_SIZE, opts, out.file, (i) => {
        bv.setUint32(i * 4, allocated, true);
        return dataOffset + allocated++ * BLOCK_SIZE;
      });
      await out.file.pwrite(bmap, BMAP_OFFSET);
      await out.file.pwrite(header(TYPE_NORMAL, diskSize, blocks, allocated, dataOffset), 0);
      await out.file.truncate(dataOffset + allocated * BLOCK_SIZE);
    });
    opts.onProgress?.({ done: src.virtualSize, total: src.virtualSize });
    return { bytesWritten };
  },
};

/**
 * raw writer — the guest bytes, nothing else.
 *
 * File target: the `.part` file is extended to the full virtual size with ftruncate first (a hole
 * the filesystem does not store), then only non-zero data blocks are written at their offsets, so
 * holes, zero extents and all-zero data blocks all stay file holes (as `qemu-img convert -O raw`,
 * which also skips zero blocks). Stream target: zeros are emitted for everything not written, in
 * offset order.
 *
 * BLOCK is the zero-detection granularity: smaller finds more zeros, larger costs fewer writes
 * (the file sink coalesces contiguous blocks into one writev anyway).
 *
 * A file target from a source that says where its bytes are stored (raw, qcow2 and the other
 * block-mapped formats read from a local file) takes the kernel-copy path (`stored-copy.ts`):
 * each stored run is scanned for zeros at COPY_GRANULE — qemu-img convert's default `-S 4k` — and
 * its granules that hold data are copied file to file with copy_file_range; nothing passes
 * through Node's heap. Compressed clusters (`other`) are read and written as above.
 */
import type { DiskReader, DiskWriter, OutputTarget, WriteOptions, WriteResult } from '../disk.js';
import { dataBlocks, isAllZero } from './data-blocks.js';
import { type FileSink, withOutput } from './output-sink.js';
import { copyItems, inPlaceRuns, RunGatherer, storedCopy, type StoredCopy } from './stored-copy.js';

const BLOCK = 64 * 1024;
/** zero detection on the kernel-copy path, as qemu-img convert's default (-S 4k) */
const COPY_GRANULE = 4096;
/** bytes read at a time from `other` runs */
const READ_CHUNK = 4 * 1024 * 1024;

export const rawWriter: DiskWriter = {
  format: 'raw',
  streamable: true,
  async write(src: DiskReader, target: OutputTarget, opts: WriteOptions = {}): Promise<WriteResult> {
    const size = src.virtualSize;
    const bytesWritten = await withOutput(target, 'raw', true, opts, async (out) => {
      const blocks = dataBlocks(src, BLOCK, opts);
      if (out.kind === 'file') {
        await out.file.truncate(size);
        const copy = storedCopy(src, out.file, 1);
        if (copy) return writeByCopy(src, copy, out.file, opts);
        for await (const b of blocks) await out.file.pwrite(b.data.subarray(0, Math.min(BLOCK, size - b.offset)), b.offset);
        return;
      }
      const s = out.stream;
      for await (const b of blocks) {
        await s.writeZeros(b.offset - s.position);
        await s.write(b.data.subarray(0, Math.min(BLOCK, size - b.offset)));
      }
      await s.writeZeros(size - s.position);
    });
    opts.onProgress?.({ done: size, total: size });
    return { bytesWritten };
  },
};

async function writeByCopy(src: DiskReader, copy: StoredCopy, file: FileSink, opts: WriteOptions): Promise<void> {
  const runs = new RunGatherer(file, copy.layout.fd);
  for await (const item of copyItems(src, copy, COPY_GRANULE, 1, opts)) {
    if (item.kind === 'granules') {
      await runs.add(inPlaceRuns(item, COPY_GRANULE, 0));
      continue;
    }
    // not the file's bytes as they are (compressed): read, and write the blocks that hold data
    for (let pos = item.offset; pos < item.offset + item.length;) {
      const n = Math.min(READ_CHUNK, item.offset + item.length - pos);
      const bytes = await src.read(pos, n);
      for (let p = pos; p < pos + n;) {
        const e = Math.min(pos + n, (Math.floor(p / BLOCK) + 1) * BLOCK);
        const piece = bytes.subarray(p - pos, e - pos);
        if (!isAllZero(piece)) await file.pwrite(piece, p);
        p = e;
      }
      pos += n;
    }
  }
  await runs.flush();
}

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
 */
import type { DiskReader, DiskWriter, OutputTarget, WriteOptions, WriteResult } from '../disk.js';
import { dataBlocks } from './data-blocks.js';
import { withOutput } from './output-sink.js';

const BLOCK = 64 * 1024;

export const rawWriter: DiskWriter = {
  format: 'raw',
  streamable: true,
  async write(src: DiskReader, target: OutputTarget, opts: WriteOptions = {}): Promise<WriteResult> {
    const size = src.virtualSize;
    const bytesWritten = await withOutput(target, 'raw', true, opts, async (out) => {
      const blocks = dataBlocks(src, BLOCK, opts);
      if (out.kind === 'file') {
        await out.file.truncate(size);
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

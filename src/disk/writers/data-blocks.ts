/**
 * The one way writers read a source: only its `data` extents, in ascending order, cut into
 * aligned blocks of `blockSize`, with all-zero blocks dropped. `zero` and `hole` extents are never
 * read — that, and dropping zero blocks, is what keeps a 64 GiB disk holding 10 MiB a 10 MiB
 * output.
 *
 * Every block yielded is exactly `blockSize` long: a block that data only partly covers (an extent
 * edge inside it, or the end of the disk) is zero-filled around the data. Reads go in chunks of
 * READ_CHUNK bytes (or one block when larger), so memory is bounded by the chunk whatever the disk.
 */
import type { DiskReader, WriteProgress } from '../disk.js';

const READ_CHUNK = 4 * 1024 * 1024;
/** source reads in flight ahead of the chunk being handed out */
const READ_AHEAD = 2;

export interface DataBlock {
  /** guest offset, a multiple of blockSize */
  readonly offset: number;
  /** blockSize bytes, not all zero */
  readonly data: Uint8Array;
}

export interface DataBlockOptions {
  readonly signal?: AbortSignal;
  readonly onProgress?: (p: WriteProgress) => void;
  /** yield blocks that data touches even when all zero (a layout fixed from the extents needs them) */
  readonly keepZeroBlocks?: boolean;
}

let zeros = new Uint8Array(0);

/** True when every byte of `b` is 0 (memcmp against a shared zero buffer). */
export function isAllZero(b: Uint8Array): boolean {
  if (zeros.length < b.length) zeros = new Uint8Array(b.length);
  return Buffer.from(b.buffer, b.byteOffset, b.length).equals(Buffer.from(zeros.buffer, 0, b.length));
}

export async function* dataBlocks(src: DiskReader, blockSize: number, opts: DataBlockOptions = {}): AsyncGenerator<DataBlock> {
  const total = src.virtualSize;
  const chunk = Math.max(blockSize, Math.floor(READ_CHUNK / blockSize) * blockSize);
  /** a block that data covers only in part, still collecting pieces */
  let partial: { offset: number; data: Uint8Array } | undefined;
  const keep = (b: Uint8Array): boolean => opts.keepZeroBlocks === true || !isAllZero(b);

  // The reads to make: data extents cut into chunks (a `progress` entry for the others). READ_AHEAD
  // reads stay in flight while the blocks of the current one are handed out, so reading the
  // source overlaps with compressing and writing.
  type Job = { kind: 'read'; pos: number; end: number; bytes: Promise<Uint8Array> } | { kind: 'skip'; done: number };
  const extents = src.extents()[Symbol.asyncIterator]();
  let ext: { pos: number; end: number } | undefined;
  let exhausted = false;
  const nextJob = async (): Promise<Job | undefined> => {
    for (;;) {
      if (ext && ext.pos < ext.end) {
        const pos = ext.pos;
        const end = Math.min(ext.end, pos - (pos % blockSize) + chunk);
        ext.pos = end;
        const bytes = src.read(pos, end - pos);
        bytes.catch(() => undefined); // surfaces when its turn comes
        return { kind: 'read', pos, end, bytes };
      }
      if (exhausted) return undefined;
      const r = await extents.next();
      if (r.done) {
        exhausted = true;
        return undefined;
      }
      const e = r.value;
      if (e.kind === 'data') ext = { pos: e.offset, end: e.offset + e.length };
      else return { kind: 'skip', done: e.offset + e.length };
    }
  };
  const queue: Job[] = [];
  const fill = async () => {
    while (queue.filter((j) => j.kind === 'read').length < READ_AHEAD) {
      const j = await nextJob();
      if (!j) return;
      queue.push(j);
    }
  };
  try {
    await fill();
    while (queue.length > 0) {
      opts.signal?.throwIfAborted();
      const job = queue.shift()!;
      if (job.kind === 'skip') {
        opts.onProgress?.({ done: job.done, total });
        continue;
      }
      const bytes = await job.bytes;
      await fill();
      const { pos, end: chunkEnd } = job;
      let p = pos;
      while (p < chunkEnd) {
        const blockStart = p - (p % blockSize);
        const blockEnd = Math.min(blockStart + blockSize, chunkEnd);
        const piece = bytes.subarray(p - pos, blockEnd - pos);
        if (partial && partial.offset !== blockStart) {
          if (keep(partial.data)) yield partial;
          partial = undefined;
        }
        if (p === blockStart && blockEnd === blockStart + blockSize) {
          if (keep(piece)) yield { offset: blockStart, data: piece };
        } else {
          partial ??= { offset: blockStart, data: new Uint8Array(blockSize) };
          partial.data.set(piece, p - blockStart);
        }
        p = blockEnd;
      }
      opts.onProgress?.({ done: chunkEnd, total });
    }
    if (partial && keep(partial.data)) yield partial;
  } finally {
    await extents.return?.();
  }
}

/**
 * Writes `src`'s data blocks (`unit` bytes each) into the format's blocks of `blockSize` bytes, the
 * layout VDI, VHD and VHDX dynamic images share: a block gets its place in the file when data first
 * touches it (`allocate(block)`, once per block, ascending, returns where the block's data starts),
 * and each unit is written at its offset inside that block.
 */
export async function writeIntoBlocks(
  src: DiskReader,
  unit: number,
  blockSize: number,
  opts: DataBlockOptions,
  file: { pwrite(bytes: Uint8Array, position: number): Promise<void> },
  allocate: (block: number) => number | Promise<number>,
): Promise<void> {
  let block = -1;
  let dataAt = 0;
  for await (const u of dataBlocks(src, unit, opts)) {
    const i = Math.floor(u.offset / blockSize);
    if (i !== block) {
      block = i;
      dataAt = await allocate(i);
    }
    await file.pwrite(u.data, dataAt + (u.offset % blockSize));
  }
}

/** Rounds `n` up to a multiple of `to`. */
export function alignUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

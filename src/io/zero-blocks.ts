/**
 * Zero detection, shared by the sparse blob writer (zero blocks become holes) and the bomb rule of
 * bounded decompression (output that is nearly all zeros). Both look at whole blocks of
 * `ZERO_BLOCK_BYTES`, aligned on the stream position, so that a hole is always a filesystem block
 * and the check is one native memcmp per block (no byte loop in JS).
 */

/** The block size of zero detection: ext4's and XFS's block, the page size. */
export const ZERO_BLOCK_BYTES = 4096;

const ZEROS = Buffer.alloc(64 * 1024);

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** true when bytes [start, end) of `buf` are all 0: one native compare per 64 KiB, no copies. */
function zeroRange(buf: Buffer, start: number, end: number): boolean {
  for (let off = start; off < end; off += ZEROS.length) {
    const n = Math.min(ZEROS.length, end - off);
    if (ZEROS.compare(buf, off, off + n, 0, n) !== 0) return false;
  }
  return true;
}

/** true when every byte of `bytes` is 0 (any length). */
export function isAllZero(bytes: Uint8Array): boolean {
  return zeroRange(asBuffer(bytes), 0, bytes.length);
}

/** A run of `bytes`: [start, end) relative to the chunk, all zeros or not. */
export interface BlockRun {
  start: number;
  end: number;
  zero: boolean;
}

/**
 * Splits a chunk that sits at `position` in its stream into alternating runs of all-zero and data
 * blocks, block edges aligned on the stream position (the first and last block of the chunk may
 * be partial). Adjacent blocks of one kind are merged into one run.
 */
export function blockRuns(bytes: Uint8Array, position: number): BlockRun[] {
  const runs: BlockRun[] = [];
  if (bytes.length === 0) return runs;
  const buf = asBuffer(bytes);
  if (zeroRange(buf, 0, buf.length)) return [{ start: 0, end: buf.length, zero: true }];
  let start = 0;
  while (start < bytes.length) {
    const end = Math.min(bytes.length, start + ZERO_BLOCK_BYTES - ((position + start) % ZERO_BLOCK_BYTES));
    const zero = zeroRange(buf, start, end);
    const last = runs[runs.length - 1];
    if (last !== undefined && last.zero === zero) last.end = end;
    else runs.push({ start, end, zero });
    start = end;
  }
  return runs;
}

/** Bytes of `bytes` (at `position` in its stream) that lie in all-zero blocks. */
export function zeroBytesIn(bytes: Uint8Array, position: number): number {
  let n = 0;
  for (const r of blockRuns(bytes, position)) if (r.zero) n += r.end - r.start;
  return n;
}

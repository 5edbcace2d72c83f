/**
 * `compareDisks`: are two virtual disks the same guest bytes? As `qemu-img compare`: disks of
 * different sizes are equal when the common part is equal and the larger disk's extra area reads
 * zeros — unless `strict`, where a size difference, or data in one where the other has none, is a
 * difference (qemu's `-s`). Ranges that are zero/hole in both are skipped via the extents, so a
 * sparse 64 GiB pair compares in the time of its data.
 */
import type { DiskReader, Extent } from './disk.js';

export interface CompareOptions {
  strict?: boolean;
}

export interface CompareResult {
  identical: boolean;
  /** guest byte offset of the first difference */
  firstDifference?: number;
  /** present when the virtual sizes differ (in strict mode this alone makes the disks differ) */
  sizeMismatch?: { a: number; b: number };
}

/** Guest range over which extents are fetched at once. */
const MAP_WINDOW = 256 * 1024 * 1024;
/** Largest read while comparing data. */
const READ_BYTES = 4 * 1024 * 1024;

export async function compareDisks(a: DiskReader, b: DiskReader, opts: CompareOptions = {}): Promise<CompareResult> {
  const common = Math.min(a.virtualSize, b.virtualSize);
  const mismatch = a.virtualSize === b.virtualSize ? undefined : { a: a.virtualSize, b: b.virtualSize };
  const withSize = (r: CompareResult): CompareResult => (mismatch ? { ...r, sizeMismatch: mismatch } : r);
  if (mismatch && opts.strict) return withSize({ identical: false });
  for (let w = 0; w < common; w += MAP_WINDOW) {
    const n = Math.min(MAP_WINDOW, common - w);
    const ea = await collect(a, w, n);
    const eb = await collect(b, w, n);
    let i = 0;
    let j = 0;
    for (let pos = w; pos < w + n;) {
      while (end(ea[i]!) <= pos) i++;
      while (end(eb[j]!) <= pos) j++;
      const to = Math.min(end(ea[i]!), end(eb[j]!));
      const da = ea[i]!.kind === 'data';
      const db = eb[j]!.kind === 'data';
      if (opts.strict && da !== db) return withSize({ identical: false, firstDifference: pos });
      if (da || db) {
        const diff = await firstDiff(a, b, pos, to - pos);
        if (diff !== undefined) return withSize({ identical: false, firstDifference: diff });
      }
      pos = to;
    }
  }
  if (mismatch) {
    const larger = a.virtualSize > b.virtualSize ? a : b;
    for await (const e of larger.extents(common, larger.virtualSize - common)) {
      if (e.kind !== 'data') continue;
      for (let at = e.offset; at < e.offset + e.length; at += READ_BYTES) {
        const buf = await larger.read(at, Math.min(READ_BYTES, e.offset + e.length - at));
        const k = buf.findIndex((x) => x !== 0);
        if (k >= 0) return withSize({ identical: false, firstDifference: at + k });
      }
    }
  }
  return withSize({ identical: true });
}

async function collect(r: DiskReader, offset: number, length: number): Promise<Extent[]> {
  const out: Extent[] = [];
  for await (const e of r.extents(offset, length)) out.push(e);
  return out;
}

function end(e: Extent): number {
  return e.offset + e.length;
}

async function firstDiff(a: DiskReader, b: DiskReader, offset: number, length: number): Promise<number | undefined> {
  for (let at = offset; at < offset + length; at += READ_BYTES) {
    const n = Math.min(READ_BYTES, offset + length - at);
    const [x, y] = await Promise.all([a.read(at, n), b.read(at, n)]);
    if (Buffer.compare(Buffer.from(x.buffer, x.byteOffset, x.byteLength), Buffer.from(y.buffer, y.byteOffset, y.byteLength)) !== 0) {
      let k = 0;
      while (x[k] === y[k]) k++;
      return at + k;
    }
  }
  return undefined;
}

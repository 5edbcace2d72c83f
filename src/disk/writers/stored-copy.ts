/**
 * The kernel-copy path of the writers: when the source says where its guest bytes lie in its file
 * (`DiskReader.stored`), the copy engine is there (`src/io/copy-range.ts`, a native addon) and the
 * output is a file that takes copies (`FileSink.canCopy`), data moves file to file with
 * copy_file_range — never through Node's heap — and only the writer's own metadata is written
 * from here. What a writer gets is the source in guest order, as:
 *
 * - `granules`: a piece of a stored run, with one flag per granule (guest-aligned) saying whether
 *   it holds a byte that is not zero — the zero detection qemu-img does (`-S`), done by the engine
 *   on the thread pool. A writer copies the flagged granules and leaves the others out, as the
 *   read path drops all-zero blocks.
 * - `other`: bytes that are not the file's as they are (a compressed cluster): read them with
 *   `read()`.
 *
 * Ranges that read zeros are skipped (only reported as progress). The scan of the next batch
 * runs while the writer copies the current one, so the two threads of work overlap.
 */
import { copyEngine, type CopyEngine } from '../../io/copy-range.js';
import type { DiskReader, StoredLayout, StoredRun, WriteProgress } from '../disk.js';
import type { FileSink } from './output-sink.js';

/** stored bytes per scan call: large enough that a call's cost is nothing, small enough to overlap */
const BATCH_BYTES = 32 * 1024 * 1024;
/** runs per scan call at most (a source of tiny scattered runs) */
const BATCH_RUNS = 4096;

export type CopyItem =
  | {
      readonly kind: 'granules';
      /** guest offset of the piece */
      readonly offset: number;
      readonly length: number;
      /** where the piece's bytes are in the source file */
      readonly fileOffset: number;
      /** one per granule of the piece, cut at the multiples of the granule in guest space: 1 = not all zeros */
      readonly bits: Uint8Array;
    }
  | { readonly kind: 'other'; readonly offset: number; readonly length: number };

export interface StoredCopy {
  readonly engine: CopyEngine;
  readonly layout: StoredLayout;
}

/** The kernel-copy path from `src` to `out` when all it needs is there (runs aligned to `align`); undefined otherwise. */
export function storedCopy(src: DiskReader, out: FileSink, align: number): StoredCopy | undefined {
  const engine = copyEngine();
  const layout = src.stored;
  if (!engine || !layout || !out.canCopy || !layout.alignsTo(align)) return undefined;
  return { engine, layout };
}

export interface CopyItemOptions {
  readonly signal?: AbortSignal;
  readonly onProgress?: (p: WriteProgress) => void;
}

/** Granules a guest range [offset, offset + length) touches. */
export function granuleCount(offset: number, length: number, granule: number): number {
  return length <= 0 ? 0 : Math.floor((offset + length - 1) / granule) - Math.floor(offset / granule) + 1;
}

/** The source's runs in guest order as copy items (see above), stored runs aligned to `align` and scanned at `granule`. */
export async function* copyItems(
  src: DiskReader,
  { engine, layout }: StoredCopy,
  granule: number,
  align: number,
  opts: CopyItemOptions = {},
): AsyncGenerator<CopyItem> {
  const total = src.virtualSize;
  type Batch = { runs: StoredRun[]; bits: Promise<Uint8Array> | undefined };
  const runs = layout.runs(0, total, align)[Symbol.asyncIterator]();
  let pending: StoredRun | undefined;
  let exhausted = false;
  /** the next batch: runs in order up to BATCH_BYTES stored bytes, stored ones cut to fit; undefined at the end */
  const nextBatch = async (): Promise<Batch | undefined> => {
    const batch: StoredRun[] = [];
    let bytes = 0;
    while (bytes < BATCH_BYTES && batch.length < BATCH_RUNS) {
      if (!pending) {
        if (exhausted) break;
        const r = await runs.next();
        if (r.done) {
          exhausted = true;
          break;
        }
        pending = r.value;
      }
      const r = pending;
      if (r.kind !== 'stored' || bytes + r.length <= BATCH_BYTES) {
        batch.push(r);
        if (r.kind === 'stored') bytes += r.length;
        pending = undefined;
        continue;
      }
      // cut on a granule boundary (BATCH_BYTES is a multiple of every granule; the cut is aligned)
      const cut = Math.max(granule, Math.floor((r.offset + BATCH_BYTES - bytes) / granule) * granule - r.offset);
      if (cut >= r.length) {
        batch.push(r);
        pending = undefined;
        bytes += r.length;
        continue;
      }
      batch.push({ offset: r.offset, length: cut, kind: 'stored', fileOffset: r.fileOffset });
      pending = { offset: r.offset + cut, length: r.length - cut, kind: 'stored', fileOffset: r.fileOffset + cut };
      bytes += cut;
    }
    if (batch.length === 0) return undefined;
    const stored = batch.filter((r) => r.kind === 'stored');
    const bits =
      stored.length === 0
        ? undefined
        : engine.scan(
            layout.fd,
            stored.map((r) => [r.fileOffset, r.offset, r.length] as const),
            granule,
          );
    bits?.catch(() => undefined); // surfaces when its batch's turn comes
    return { runs: batch, bits };
  };
  let next: Batch | undefined;
  try {
    next = await nextBatch();
    while (next) {
      const batch = next;
      const bits = batch.bits ? await batch.bits : new Uint8Array(0);
      next = await nextBatch(); // its scan runs while this batch is copied
      let at = 0;
      for (const r of batch.runs) {
        opts.signal?.throwIfAborted();
        if (r.kind === 'stored') {
          const n = granuleCount(r.offset, r.length, granule);
          yield { kind: 'granules', offset: r.offset, length: r.length, fileOffset: r.fileOffset, bits: bits.subarray(at, at + n) };
          at += n;
        } else if (r.kind === 'other') {
          yield { kind: 'other', offset: r.offset, length: r.length };
        }
        opts.onProgress?.({ done: r.offset + r.length, total });
      }
    }
  } finally {
    // a scan still running reads the source's descriptor: it ends before the caller closes the source
    await next?.bits?.catch(() => undefined);
    await runs.return?.();
  }
}

/**
 * The copy runs [srcOffset, dstOffset, length] of the flagged granules of `item` when each lands
 * at the same place relative to `dstOffset` (in place: a raw output), neighbours merged.
 */
export function inPlaceRuns(item: Extract<CopyItem, { kind: 'granules' }>, granule: number, dstOffset: number): [number, number, number][] {
  const out: [number, number, number][] = [];
  const end = item.offset + item.length;
  let g = Math.floor(item.offset / granule) * granule;
  for (let i = 0; i < item.bits.length; i++, g += granule) {
    if (item.bits[i] === 0) continue;
    const from = Math.max(g, item.offset);
    const to = Math.min(g + granule, end);
    const last = out[out.length - 1];
    if (last && last[0] + last[2] === item.fileOffset + (from - item.offset)) last[2] += to - from;
    else out.push([item.fileOffset + (from - item.offset), dstOffset + from, to - from]);
  }
  return out;
}

/** copy runs gathered before one engine call */
const GATHER_BYTES = 16 * 1024 * 1024;
const GATHER_RUNS = 1024;

/** Gathers copy runs into fewer, larger engine calls (`FileSink.copyRuns`); `flush` sends what is left. */
export class RunGatherer {
  private runs: [number, number, number][] = [];
  private bytes = 0;

  constructor(
    private readonly file: FileSink,
    private readonly srcFd: number,
  ) {}

  async add(runs: readonly [number, number, number][]): Promise<void> {
    for (const r of runs) {
      const last = this.runs[this.runs.length - 1];
      if (last && last[0] + last[2] === r[0] && last[1] + last[2] === r[1]) last[2] += r[2];
      else this.runs.push([...r]);
      this.bytes += r[2];
    }
    if (this.bytes >= GATHER_BYTES || this.runs.length >= GATHER_RUNS) await this.flush();
  }

  async flush(): Promise<void> {
    const runs = this.runs;
    this.runs = [];
    this.bytes = 0;
    await this.file.copyRuns(this.srcFd, runs);
  }
}

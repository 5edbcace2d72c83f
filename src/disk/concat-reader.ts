/**
 * A disk made of parts end to end (a VMDK descriptor's extents): each part is a reader of its
 * own; `read` and `extents` split the asked range across them.
 */
import type { DiskFormat, DiskReader, Extent } from './disk.js';
import { checkGuestRange } from './block-map-reader.js';

export interface DiskPart {
  readonly reader: DiskReader;
  /** guest offset where the part starts */
  readonly offset: number;
  /** bytes of the part in the disk (at most reader.virtualSize) */
  readonly length: number;
}

export class ConcatReader implements DiskReader {
  readonly virtualSize: number;
  constructor(
    readonly format: DiskFormat,
    private readonly parts: readonly DiskPart[],
  ) {
    const last = parts[parts.length - 1];
    this.virtualSize = last ? last.offset + last.length : 0;
  }

  private *overlapping(offset: number, length: number): Iterable<{ part: DiskPart; from: number; n: number }> {
    const end = offset + length;
    for (const part of this.parts) {
      const pEnd = part.offset + part.length;
      if (pEnd <= offset || part.offset >= end) continue;
      const from = Math.max(offset, part.offset);
      yield { part, from, n: Math.min(end, pEnd) - from };
    }
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    checkGuestRange(this, offset, length);
    const out = new Uint8Array(length);
    for (const { part, from, n } of this.overlapping(offset, length)) {
      out.set(await part.reader.read(from - part.offset, n), from - offset);
    }
    return out;
  }

  async *extents(offset = 0, length = this.virtualSize - offset): AsyncIterable<Extent> {
    checkGuestRange(this, offset, length, Number.MAX_SAFE_INTEGER);
    for (const { part, from, n } of this.overlapping(offset, length)) {
      for await (const e of part.reader.extents(from - part.offset, n)) yield { ...e, offset: e.offset + part.offset };
    }
  }

  async close(): Promise<void> {
    for (const p of this.parts) await p.reader.close();
  }
}

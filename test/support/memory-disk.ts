/**
 * An in-memory sparse DiskReader for writer tests: a map of offset → bytes, everything else a
 * hole. Extents come from the map (so a writer that reads a hole is caught: `read` counts the
 * bytes it was asked for outside data), and `toRawFile` writes the expected raw image (sparse)
 * for `qemu-img compare`.
 */
import assert from 'node:assert/strict';
import { open } from 'node:fs/promises';
import type { DiskReader, Extent } from '../../src/disk/disk.js';
import { patternBytes } from './disk-oracle.js';

interface Chunk {
  readonly offset: number;
  readonly bytes: Uint8Array;
}

export class MemoryDisk implements DiskReader {
  readonly format = 'raw' as const;
  private readonly chunks: Chunk[] = [];
  /** bytes `read` was asked for that lie outside every data chunk: a writer must keep this at 0 */
  holeBytesRead = 0;
  /** total bytes read */
  bytesRead = 0;

  constructor(readonly virtualSize: number) {}

  /** Puts `bytes` at `offset` as a data extent (chunks must not overlap; they are kept sorted). */
  put(offset: number, bytes: Uint8Array): this {
    if (offset < 0 || offset + bytes.length > this.virtualSize) throw new RangeError(`chunk ${offset}+${bytes.length} outside the disk`);
    for (const c of this.chunks) {
      if (offset < c.offset + c.bytes.length && c.offset < offset + bytes.length) throw new RangeError(`chunk at ${offset} overlaps one at ${c.offset}`);
    }
    this.chunks.push({ offset, bytes });
    this.chunks.sort((a, b) => a.offset - b.offset);
    return this;
  }

  /** Deterministic pseudo-random bytes (xorshift32), so a failing test can be re-run as it was. */
  static random(length: number, seed: number): Uint8Array {
    return new Uint8Array(patternBytes(length, seed));
  }

  async *extents(offset = 0, length = this.virtualSize - offset): AsyncIterable<Extent> {
    const end = offset + length;
    let pos = offset;
    for (const c of this.chunks) {
      const cEnd = c.offset + c.bytes.length;
      if (cEnd <= pos) continue;
      if (c.offset >= end) break;
      if (c.offset > pos) {
        yield { offset: pos, length: c.offset - pos, kind: 'hole' };
        pos = c.offset;
      }
      const dEnd = Math.min(cEnd, end);
      yield { offset: pos, length: dEnd - pos, kind: 'data' };
      pos = dEnd;
    }
    if (pos < end) yield { offset: pos, length: end - pos, kind: 'hole' };
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    if (offset < 0 || offset + length > this.virtualSize) throw new RangeError(`read ${offset}+${length} outside the disk`);
    const out = new Uint8Array(length);
    let covered = 0;
    for (const c of this.chunks) {
      const from = Math.max(offset, c.offset);
      const to = Math.min(offset + length, c.offset + c.bytes.length);
      if (from >= to) continue;
      out.set(c.bytes.subarray(from - c.offset, to - c.offset), from - offset);
      covered += to - from;
    }
    this.bytesRead += length;
    this.holeBytesRead += length - covered;
    return out;
  }

  async close(): Promise<void> {}

  /** Writes the guest view as a sparse raw file (holes stay holes). */
  async toRawFile(path: string): Promise<void> {
    const fh = await open(path, 'w');
    try {
      await fh.truncate(this.virtualSize);
      for (const c of this.chunks) await fh.write(c.bytes, 0, c.bytes.length, c.offset);
    } finally {
      await fh.close();
    }
  }
}

const MiB = 1024 * 1024;

/**
 * The standard writer fixture: 40 MiB + 7 sectors (a multiple of no cluster, grain or block size)
 * with random blocks, adjacent extents, a data extent of zeros, a compressible run, a block
 * crossing a 2 MiB / 32 MiB boundary, and data in the very last bytes.
 */
export function sampleDisk(size = 40 * MiB + 7 * 512): MemoryDisk {
  const text = new TextEncoder().encode('imago writes images; '.repeat(20000));
  return new MemoryDisk(size)
    .put(0, MemoryDisk.random(100 * 1024 + 17, 1))
    .put(100 * 1024 + 17, MemoryDisk.random(3000, 2))
    .put(1 * MiB, new Uint8Array(256 * 1024))
    .put(2 * MiB - 4096, MemoryDisk.random(8192, 3))
    .put(5 * MiB + 512, text.subarray(0, 300 * 1024))
    .put(32 * MiB - 70000, MemoryDisk.random(140000, 4))
    .put(size - 5000, MemoryDisk.random(5000, 5));
}

/** `qemu-img compare` in strict mode off: identical content, size mismatch allowed when the tail reads zeros. */
export async function qemuCompare(expectedRaw: string, image: string, fmt: string): Promise<string> {
  const { sh } = await import('./qemu.js');
  return sh('qemu-img', ['compare', '-f', 'raw', '-F', fmt, expectedRaw, image]);
}

/** `qemu-img check` (throws on corruptions or leaks: exit codes 2 and 3). */
export async function qemuCheck(image: string, fmt: string): Promise<string> {
  const { sh } = await import('./qemu.js');
  return sh('qemu-img', ['check', '-f', fmt, image]);
}

/**
 * For images too large to `qemu-img compare` quickly (a 64 GiB disk takes a minute): qemu-io reads
 * back the first and last 16 bytes of every data chunk, and checks that the 64 KiB after each
 * chunk (when it is a hole) reads as zeros.
 */
export async function qemuSpotCheck(disk: MemoryDisk, image: string, fmt: string): Promise<void> {
  const { sh } = await import('./qemu.js');
  const cmds: string[] = [];
  const expected: string[] = [];
  for await (const ext of disk.extents()) {
    if (ext.kind === 'data') {
      for (const at of [ext.offset, ext.offset + ext.length - 16]) {
        cmds.push('-c', `read -v ${at} 16`);
        const hex = Array.from(await disk.read(at, 16), (b) => b.toString(16).padStart(2, '0')).join(' ');
        expected.push(`${at.toString(16).padStart(8, '0')}:  ${hex}`);
      }
    } else {
      cmds.push('-c', `read -P 0 ${ext.offset} ${Math.min(65536, ext.length)}`);
    }
  }
  const out = await sh('qemu-io', ['-f', fmt, '-r', ...cmds, image]);
  assert.ok(!out.includes('verification failed'), out);
  for (const line of expected) assert.ok(out.includes(line), `missing ${line}`);
}

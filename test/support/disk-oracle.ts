/**
 * Shared oracle for the disk reader tests: fixtures made by the real qemu-img from a patterned
 * raw disk, and the assertion that a reader agrees with qemu byte for byte (`qemu-img convert -O
 * raw`) and allocation-wise (`qemu-img map --output=json`). src/disk/qemu-oracle.test.ts checks
 * the oracle itself.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { cached, sh } from './qemu.js';
import type { DiskReader, Extent } from '../../src/disk/disk.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Deterministic bytes (xorshift32) so a cached fixture and a fresh one agree. */
export function patternBytes(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}

/** A size that is not a multiple of any cluster size: 5 MiB + 12345 bytes. */
export const PATTERN_SIZE = 5 * MiB + 12345;

/**
 * The patterned raw disk every format fixture is converted from: random data at 0, a 0xab run that
 * straddles cluster boundaries at unaligned offsets, a 1 MiB random block, an explicit zero run
 * inside data, and random bytes in the very last 3000 bytes of the disk. Everything else is a hole.
 */
export async function patternRaw(size = PATTERN_SIZE): Promise<string> {
  return cached(`disk-pattern-v1-${size}.raw`, async (tmp) => {
    const fh = await open(tmp, 'w');
    try {
      await fh.truncate(size);
      await fh.write(patternBytes(64 * KiB, 1), 0, 64 * KiB, 0);
      await fh.write(Buffer.alloc(64 * KiB + 100, 0xab), 0, 64 * KiB + 100, MiB + 1000);
      await fh.write(patternBytes(MiB, 2), 0, MiB, 2 * MiB);
      await fh.write(Buffer.alloc(128 * KiB), 0, 128 * KiB, 2 * MiB + 256 * KiB);
      await fh.write(patternBytes(3000, 3), 0, 3000, size - 3000);
    } finally {
      await fh.close();
    }
  });
}

/** `qemu-img convert -O fmt [-o opts] [extra...]` of the pattern disk (cached by name). */
export async function patternImage(name: string, fmt: string, options: string[] = [], extra: string[] = []): Promise<string> {
  const src = await patternRaw();
  return cached(name, async (tmp) => {
    const args = ['convert', '-q', '-f', 'raw', ...extra, '-O', fmt];
    for (const o of options) args.push('-o', o);
    await sh('qemu-img', [...args, src, tmp]);
  });
}

/** The guest bytes as qemu sees them. */
export async function qemuRawBytes(file: string, fmt: string): Promise<Buffer> {
  return cached(`${file.split('/').pop()}.${fmt}.oracle.raw`, async (tmp) => {
    await sh('qemu-img', ['convert', '-q', '-U', '-f', fmt, '-O', 'raw', file, tmp]);
  }).then((p) => readFileSync(p));
}

export interface QemuMapEntry {
  start: number;
  length: number;
  data: boolean;
  zero: boolean;
}

export async function qemuMap(file: string, fmt: string): Promise<QemuMapEntry[]> {
  return JSON.parse(await sh('qemu-img', ['map', '-U', '--output=json', '-f', fmt, file])) as QemuMapEntry[];
}

export async function allExtents(r: DiskReader, offset?: number, length?: number): Promise<Extent[]> {
  const out: Extent[] = [];
  for await (const e of r.extents(offset, length)) out.push(e);
  return out;
}

/** Extents are ascending, contiguous and cover [offset, offset+length) exactly. */
export function assertCovers(extents: readonly Extent[], offset: number, length: number): void {
  let at = offset;
  for (const e of extents) {
    assert.equal(e.offset, at, `extent at ${e.offset} should start at ${at}`);
    assert.ok(e.length > 0, `empty extent at ${e.offset}`);
    at += e.length;
  }
  assert.equal(at, offset + length, 'extents end at the end of the range');
}

/**
 * The reader agrees with qemu: same virtual size, same bytes (read in pieces of `chunk` so reads
 * cross block boundaries), extents cover the disk, every non-data extent reads zeros, and every
 * byte qemu calls data is in our data extents or reads zero.
 */
export async function assertMatchesQemu(r: DiskReader, file: string, fmt: string, chunk = 1000 * KiB + 7): Promise<void> {
  let expected = await qemuRawBytes(file, fmt);
  if (fmt === 'raw' && expected.length > r.virtualSize && expected.length - r.virtualSize < 512) {
    // qemu rounds a raw file up to whole sectors; we keep its exact size (the padding reads zeros)
    assert.ok(expected.subarray(r.virtualSize).every((x) => x === 0));
    expected = expected.subarray(0, r.virtualSize);
  }
  assert.equal(r.virtualSize, expected.length, 'virtual size equals qemu-img convert output size');
  for (let at = 0; at < expected.length; at += chunk) {
    const n = Math.min(chunk, expected.length - at);
    const got = await r.read(at, n);
    if (Buffer.compare(Buffer.from(got), expected.subarray(at, at + n)) !== 0) {
      let i = 0;
      while (got[i] === expected[at + i]) i++;
      assert.fail(`${fmt}: byte ${at + i} differs from qemu (ours ${got[i]}, qemu ${expected[at + i]})`);
    }
  }
  const ext = await allExtents(r);
  assertCovers(ext, 0, r.virtualSize);
  for (const e of ext) {
    if (e.kind === 'data') continue;
    const slice = expected.subarray(e.offset, e.offset + e.length);
    assert.ok(
      slice.every((x) => x === 0),
      `${fmt}: ${e.kind} extent at ${e.offset}+${e.length} reads non-zero in qemu`,
    );
  }
  const ours = ext.filter((e) => e.kind === 'data');
  for (const m of await qemuMap(file, fmt)) {
    if (!m.data || m.zero) continue;
    for (let at = m.start; at < m.start + m.length; at += 512) {
      const inData = ours.some((e) => at >= e.offset && at < e.offset + e.length);
      if (!inData)
        assert.ok(
          expected.subarray(at, Math.min(at + 512, m.start + m.length)).every((x) => x === 0),
          `${fmt}: qemu data at ${at} is outside our data extents`,
        );
    }
  }
}

/**
 * Bounded fuzzing of every reader: small qemu-made images whose headers and tables are mutated
 * (random bytes, all-ones, zeros, 64-bit values at and past the end of the file, unaligned
 * offsets, truncation). Each mutant must either read (open, extents, reads) or fail with a
 * DiskError — any other exception, or taking longer than CASE_TIMEOUT_MS, fails the test.
 * Images are held in memory (a DiskFile over a buffer), so a case costs no file I/O.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { cached, sh } from '../../test/support/qemu.js';
import { DiskError, type DiskReader } from './disk.js';
import type { DiskFile } from './disk-file.js';
import { openQcow2 } from './readers/qcow2.js';
import { openQed } from './readers/qed.js';
import { openVdi } from './readers/vdi.js';
import { openVhd } from './readers/vhd.js';
import { openVhdx } from './readers/vhdx.js';
import { openVmdk } from './readers/vmdk.js';
import { patternBytes } from '../../test/support/disk-oracle.js';
import { seededRandom } from '../../test/support/prng.js';

/** the suite runs 200 per image; a longer run: IMAGO_FUZZ_CASES=20000 IMAGO_FUZZ_SEED=7 (docs/FUZZING.md) */
const CASES_PER_IMAGE = Number(process.env.IMAGO_FUZZ_CASES ?? 200);
const SEED = Number(process.env.IMAGO_FUZZ_SEED ?? 0x5eed);
const CASE_TIMEOUT_MS = 2000;
/** bytes of extents walked and of data read per case (a mutant may claim a 64 TiB disk) */
const MAP_BYTES = 256 * 1024 * 1024;
const READ_BYTES = 4 * 1024 * 1024;

class MemoryFile implements DiskFile {
  readonly size: number;
  constructor(private readonly bytes: Uint8Array) {
    this.size = bytes.length;
  }
  async read(offset: number, length: number): Promise<Uint8Array> {
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) throw new RangeError(`bad read ${offset}+${length}`);
    return this.bytes.subarray(offset, Math.min(this.size, offset + length));
  }
}

/** 2 MiB of source: data at 0, a run at 1 MiB, a few bytes at the very end. */
async function source(): Promise<string> {
  return cached('disk-fuzz-source-v1.raw', async (tmp) => {
    const { writeFileSync } = await import('node:fs');
    const b = Buffer.alloc(2 * 1024 * 1024);
    patternBytes(96 * 1024, 7).copy(b, 0);
    b.fill(0xab, 1024 * 1024, 1024 * 1024 + 70000);
    patternBytes(1000, 8).copy(b, b.length - 1000);
    writeFileSync(tmp, b);
  });
}

const IMAGES: { name: string; fmt: string; opts: string[]; extra?: string[]; open: (f: DiskFile) => Promise<DiskReader> }[] = [
  { name: 'qcow2', fmt: 'qcow2', opts: ['cluster_size=4096'], open: (f) => openQcow2(f) },
  { name: 'qcow2-zlib', fmt: 'qcow2', opts: ['cluster_size=4096'], extra: ['-c'], open: (f) => openQcow2(f) },
  { name: 'qcow2-zstd', fmt: 'qcow2', opts: ['cluster_size=4096', 'compression_type=zstd'], extra: ['-c'], open: (f) => openQcow2(f) },
  { name: 'qcow2-extl2', fmt: 'qcow2', opts: ['extended_l2=on'], open: (f) => openQcow2(f) },
  { name: 'vmdk-sparse', fmt: 'vmdk', opts: ['subformat=monolithicSparse'], open: (f) => openVmdk(f) },
  { name: 'vmdk-stream', fmt: 'vmdk', opts: ['subformat=streamOptimized'], open: (f) => openVmdk(f) },
  { name: 'vdi', fmt: 'vdi', opts: [], open: (f) => openVdi(f) },
  { name: 'vhd', fmt: 'vpc', opts: ['subformat=dynamic'], open: (f) => openVhd(f) },
  { name: 'vhdx', fmt: 'vhdx', opts: [], open: (f) => openVhdx(f) },
  { name: 'qed', fmt: 'qed', opts: ['cluster_size=4096'], open: (f) => openQed(f) },
];

/** Offsets of non-zero bytes outside the guest data: where headers and tables live. */
function structureOffsets(img: Uint8Array): number[] {
  const out: number[] = [];
  for (let i = 0; i < img.length; i++) {
    if (img[i] === 0) continue;
    // skip long runs of non-zero bytes (payload): keep a byte only if a zero is near it
    const near = img.subarray(Math.max(0, i - 16), Math.min(img.length, i + 16));
    if (near.includes(0)) out.push(i);
  }
  return out;
}

function mutate(base: Uint8Array, hot: readonly number[], r: () => number): Uint8Array {
  const kind = Math.floor(r() * 6);
  if (kind === 5) return base.slice(0, Math.floor(r() * base.length)); // truncation
  const img = base.slice();
  const v = new DataView(img.buffer);
  const n = 1 + Math.floor(r() * 4);
  for (let k = 0; k < n; k++) {
    const at = r() < 0.4 ? Math.floor(r() * Math.min(1024, img.length)) : (hot[Math.floor(r() * hot.length)] ?? 0);
    switch (kind) {
      case 0:
        img[at] = Math.floor(r() * 256);
        break;
      case 1:
        img[at] = 0xff;
        break;
      case 2:
        img[at] = img[at]! ^ (1 << Math.floor(r() * 8));
        break;
      case 3:
      case 4: {
        const at8 = at & ~7;
        if (at8 + 8 > img.length) break;
        const values = [0n, BigInt(img.length), BigInt(img.length - 1), BigInt(img.length + 512), 0xffffffffffffffffn, 1n << 62n, 0x200n, 513n, 1n];
        const val = values[Math.floor(r() * values.length)]!;
        const le = r() < 0.5;
        if (kind === 3) v.setBigUint64(at8, val, le);
        else v.setUint32(at8 + (r() < 0.5 ? 0 : 4), Number(val & 0xffffffffn), le);
        break;
      }
    }
  }
  return img;
}

async function exercise(open: (f: DiskFile) => Promise<DiskReader>, img: Uint8Array): Promise<'ok' | 'refused'> {
  let reader: DiskReader;
  try {
    reader = await open(new MemoryFile(img));
  } catch (e) {
    if (e instanceof DiskError) return 'refused';
    throw e;
  }
  try {
    let read = 0;
    for await (const e of reader.extents(0, Math.min(reader.virtualSize, MAP_BYTES))) {
      if (e.kind !== 'data' || read >= READ_BYTES) continue;
      const n = Math.min(e.length, READ_BYTES - read, 1024 * 1024);
      const b = await reader.read(e.offset, n);
      assert.equal(b.length, n, 'a read inside the disk is never short');
      read += n;
    }
    if (reader.virtualSize > 0) await reader.read(reader.virtualSize - 1, 1);
    return 'ok';
  } catch (e) {
    if (e instanceof DiskError) return 'refused';
    throw e;
  } finally {
    await reader.close();
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    t = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms (hang)`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}

for (const [index, spec] of IMAGES.entries()) {
  test(`fuzz ${spec.name}: ${CASES_PER_IMAGE} mutants read or fail with DiskError`, async (t) => {
    const src = await source();
    const file = await cached(`disk-fuzz-${spec.name}-v1.img`, async (tmp) => {
      await sh('qemu-img', ['convert', '-q', '-f', 'raw', ...(spec.extra ?? []), '-O', spec.fmt, ...spec.opts.flatMap((o) => ['-o', o]), src, tmp]);
    });
    const base = new Uint8Array(readFileSync(file));
    assert.equal(await exercise(spec.open, base), 'ok', 'the unmutated image reads');
    const hot = structureOffsets(base);
    const r = seededRandom(SEED + index);
    const tally = { ok: 0, refused: 0 };
    for (let i = 0; i < CASES_PER_IMAGE; i++) {
      const img = mutate(base, hot, r);
      try {
        tally[await withTimeout(exercise(spec.open, img), CASE_TIMEOUT_MS, `${spec.name} case ${i}`)]++;
      } catch (e) {
        // keep the mutant so the failure can be replayed outside the fuzzer
        const keep = join(tmpdir(), `imago-fuzz-${spec.name}-seed${SEED}-case${i}.img`);
        writeFileSync(keep, img);
        assert.fail(`${spec.name} case ${i} (seed ${SEED}; mutant kept at ${keep}): ${(e as Error).stack ?? String(e)}`);
      }
    }
    assert.equal(tally.ok + tally.refused, CASES_PER_IMAGE);
    t.diagnostic(`${spec.name}: ${tally.ok} mutants read, ${tally.refused} refused`);
  });
}

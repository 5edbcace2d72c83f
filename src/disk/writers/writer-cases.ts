/**
 * The writer tests' shared setup: the sample disk, a scratch directory, and the disk written out
 * as raw (`expected`, what every output must compare equal to). Registers its own before/after
 * hooks in the calling test file; read `dir` and `expected` inside tests (they are set by then).
 * A test helper: `*-cases.ts` files are left out of the build (tsconfig.build.json).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { MemoryDisk, sampleDisk } from '../../../test/support/memory-disk.js';
import type { DiskReader, DiskWriter, WriteOptions } from '../disk.js';

export interface WriterFixture {
  readonly disk: MemoryDisk;
  /** scratch directory, removed after the file's tests */
  readonly dir: string;
  /** the sample disk as a raw file */
  readonly expected: string;
  /** writes `src` to `name` in `dir` and asserts the file stays small (under 12 MiB allocated); returns its path */
  writeSparse(writer: DiskWriter, src: DiskReader, name: string, opts?: WriteOptions): Promise<string>;
}

/** 64 GiB, sparse: ten 1 MiB random pieces (seeds seed..seed + 9) 6 GiB apart, each `stagger` × i bytes further. */
export function sparseBigDisk(seed: number, stagger = 0): MemoryDisk {
  const big = new MemoryDisk(64 * 1024 ** 3);
  for (let i = 0; i < 10; i++) big.put(i * 6 * 1024 ** 3 + stagger * i, MemoryDisk.random(1024 * 1024, seed + i));
  return big;
}

export function writerFixture(format: string): WriterFixture {
  const fx = {
    disk: sampleDisk(),
    dir: '',
    expected: '',
    async writeSparse(writer: DiskWriter, src: DiskReader, name: string, opts?: WriteOptions): Promise<string> {
      const out = join(fx.dir, name);
      await writer.write(src, { kind: 'file', path: out }, opts);
      const st = await stat(out);
      assert.ok(st.blocks * 512 < 12 * 1024 * 1024, `allocated ${st.blocks * 512}`);
      return out;
    },
  };
  before(async () => {
    fx.dir = await mkdtemp(join(tmpdir(), `imago-${format}-`));
    fx.expected = join(fx.dir, 'expected.raw');
    await fx.disk.toRawFile(fx.expected);
  });
  after(async () => {
    await rm(fx.dir, { recursive: true, force: true });
  });
  return fx;
}

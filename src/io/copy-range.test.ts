import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { open, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { copyEngine, loadCopyEngine } from './copy-range.js';

const KiB = 1024;
const engine = copyEngine();
const skip = !engine && 'the copy_range addon did not build';
let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'imago-copy-range-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** A 1 MiB file: zeros but for the bytes listed. */
async function sparse(name: string, bytes: [number, number][]): Promise<string> {
  const path = join(dir, name);
  const b = Buffer.alloc(1024 * KiB);
  for (const [at, v] of bytes) b[at] = v;
  await writeFile(path, b);
  return path;
}

test('the addon builds here (npm install ran node-gyp)', () => {
  assert.ok(engine, 'native/build/Release/copy_range.node is missing: npm install (node-gyp) did not build it');
});

test('a missing addon is undefined, so callers take the read-and-write path', () => {
  assert.equal(loadCopyEngine('./no-such-addon.node'), undefined);
});

test('scan: one flag per granule, cut at guest multiples of the granule; both the probe (≥ 16 KiB) and the piecewise reads', { skip }, async () => {
  // bytes at 4 KiB + 1 (the first 4 KiB of granule 0 are zeros: the probe must read on), at 130 KiB
  // (granule 2 of 64 KiB) and at the very last byte
  const path = await sparse('scan.bin', [
    [4 * KiB + 1, 7],
    [130 * KiB, 1],
    [1024 * KiB - 1, 9],
  ]);
  const fh = await open(path, 'r');
  try {
    const big = await engine!.scan(fh.fd, [[0, 0, 1024 * KiB]], 64 * KiB);
    assert.deepEqual([...big], [1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    const small = await engine!.scan(fh.fd, [[0, 0, 1024 * KiB]], 4 * KiB);
    assert.equal(small.length, 256);
    assert.deepEqual(
      [...small.keys()].filter((i) => small[i] === 1),
      [1, 32, 255],
    );
    // guest offsets that are not granule multiples: the first and last granules are partial; two ranges follow each other
    const cut = await engine!.scan(
      fh.fd,
      [
        [4 * KiB, 6 * KiB, 8 * KiB],
        [128 * KiB, 0, 4 * KiB],
      ],
      4 * KiB,
    );
    // range 1: guest [6K, 14K) = granules [4K,8K) [8K,12K) [12K,16K) ← file [4K, 12K): the byte at 4K+1 is in the first;
    // range 2: one granule, file [128K, 132K) holding the byte at 130K
    assert.deepEqual([...cut], [1, 0, 0, 1]);
    // past the end of the file reads zeros; an empty range has no granule
    const past = await engine!.scan(
      fh.fd,
      [
        [1024 * KiB - 1, 0, 64 * KiB],
        [2048 * KiB, 64 * KiB, 64 * KiB],
        [0, 0, 0],
      ],
      64 * KiB,
    );
    assert.deepEqual([...past], [1, 0]);
    // a granule longer than the 256 KiB read pieces, with its only byte near its end
    const late = await sparse('late.bin', [[1000 * KiB, 3]]);
    const lfh = await open(late, 'r');
    try {
      assert.deepEqual([...(await engine!.scan(lfh.fd, [[0, 0, 1024 * KiB]], 512 * KiB))], [0, 1]);
      assert.deepEqual([...(await engine!.scan(lfh.fd, [[0, 0, 1024 * KiB]], 1024 * KiB))], [1]);
    } finally {
      await lfh.close();
    }
  } finally {
    await fh.close();
  }
});

test('copy: runs land where asked, the rest stays zeros; bytes copied are counted; a source that ends early copies what it has', { skip }, async () => {
  const src = join(dir, 'src.bin');
  const data = randomBytes(512 * KiB);
  await writeFile(src, data);
  for (const writeback of [false, true]) {
    const dst = join(dir, `dst-${writeback}.bin`);
    const s = await open(src, 'r');
    const d = await open(dst, 'w+');
    try {
      await d.truncate(1024 * KiB);
      const n = await engine!.copy(
        s.fd,
        d.fd,
        [
          [0, 100 * KiB, 64 * KiB],
          [300 * KiB, 0, 12345],
          [500 * KiB, 900 * KiB, 100 * KiB], // only 12 KiB of it exist
        ],
        writeback,
      );
      assert.equal(n, 64 * KiB + 12345 + 12 * KiB);
    } finally {
      await s.close();
      await d.close();
    }
    const out = await readFile(dst);
    const want = Buffer.alloc(1024 * KiB);
    data.copy(want, 100 * KiB, 0, 64 * KiB);
    data.copy(want, 0, 300 * KiB, 300 * KiB + 12345);
    data.copy(want, 900 * KiB, 500 * KiB, 512 * KiB);
    assert.ok(out.equals(want), `writeback ${writeback}: the output holds the runs and zeros elsewhere`);
  }
});

test(
  'copy between filesystems (tmpfs → the temp dir: EXDEV) falls back to reads and writes, same bytes',
  { skip: skip || (!existsSync('/dev/shm') && 'no /dev/shm') },
  async () => {
    const shm = mkdtempSync('/dev/shm/imago-copy-range-');
    try {
      const src = join(shm, 'src.bin');
      const data = randomBytes(3 * 1024 * KiB + 5);
      await writeFile(src, data);
      const dst = join(dir, 'cross.bin');
      const s = await open(src, 'r');
      const d = await open(dst, 'w+');
      try {
        assert.equal(await engine!.copy(s.fd, d.fd, [[0, 7, data.length]], true), data.length);
      } finally {
        await s.close();
        await d.close();
      }
      assert.ok((await readFile(dst)).subarray(7).equals(data));
    } finally {
      rmSync(shm, { recursive: true, force: true });
    }
  },
);

test('a source that shrinks while a scan looks at its pages (SIGBUS) fails that scan with EIO and nothing else', { skip }, async () => {
  const path = join(dir, 'shrinking.bin');
  await writeFile(path, randomBytes(8 * 1024 * KiB));
  // another process cuts the file to nothing and back, over and over
  const cutter = spawn(
    'python3',
    ['-c', `import os,time\nend=time.time()+12\nwhile time.time()<end:\n  os.truncate(${JSON.stringify(path)},0); os.truncate(${JSON.stringify(path)},8<<20)`],
    {
      stdio: 'ignore',
    },
  );
  const fh = await open(path, 'r');
  let ok = 0;
  let eio = 0;
  try {
    for (const start = Date.now(); Date.now() - start < 10_000 && eio < 3;) {
      try {
        const bits = await engine!.scan(fh.fd, [[0, 0, 8 * 1024 * KiB]], 4 * KiB);
        assert.equal(bits.length, 2048);
        ok++;
      } catch (e) {
        assert.equal((e as NodeJS.ErrnoException).code, 'EIO', String(e));
        eio++;
      }
    }
  } finally {
    cutter.kill();
    await fh.close();
  }
  // still alive: the SIGBUS of a scan became that scan's error
  assert.ok(eio >= 1, `the scans met the shrinking file (${ok} whole, ${eio} EIO)`);
});

test('errors reject with the errno name; bad arguments throw at once', { skip }, async () => {
  await assert.rejects(engine!.scan(987654, [[0, 0, 4096]], 4096), (e: NodeJS.ErrnoException) => e.code === 'EBADF');
  const src = await sparse('err.bin', [[0, 1]]);
  const s = await open(src, 'r');
  try {
    // the output open read-only: the copy cannot write
    await assert.rejects(
      engine!.copy(s.fd, s.fd, [[0, 4096, 4096]], false),
      (e: NodeJS.ErrnoException) => typeof e.code === 'string' && /^E[A-Z]+$/.test(e.code),
    );
  } finally {
    await s.close();
  }
  assert.throws(() => engine!.scan(0, [[-1, 0, 1]], 4096), RangeError);
  assert.throws(() => engine!.scan(0, [[0, 0, 1]], 0), TypeError);
});

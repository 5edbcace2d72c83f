/**
 * The writers' kernel-copy path (`src/disk/writers/stored-copy.ts`, copy_file_range through the
 * copy_range addon) against the real qemu-img and against our own read-and-write path, which is
 * what runs when the addon is missing (or the source cannot say where its bytes are): the same
 * source is converted both ways, by reading through a reader that hides `stored`.
 *
 * The source is built to catch a wrong zero detection or a wrong placement: data runs at aligned
 * and unaligned offsets, stored zero runs inside data (qemu-img leaves them out), clusters whose
 * only non-zero byte is at their end (a scan that stops at its 4 KiB probe would drop them), runs
 * across qcow2 L2 slots (4 KiB clusters: one slot is 2 MiB) and a size that is no multiple of any
 * cluster, with data in its last bytes.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { convertFile } from '../src/disk/convert.js';
import type { DiskReader } from '../src/disk/disk.js';
import { writerFor } from '../src/disk/disk-formats.js';
import { openDisk } from '../src/disk/open-disk.js';
import { copyEngine } from '../src/io/copy-range.js';
import { dataRegions } from '../src/io/seek-data.js';
import { qemuMap, type QemuMapEntry } from './support/disk-oracle.js';
import { sh } from './support/qemu.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const SIZE = 24 * MiB + 12345;
const skip = !copyEngine() && 'the copy_range addon did not build: only the read-and-write path exists';

let work: string;
let source: string;
before(async () => {
  work = mkdtempSync(join(tmpdir(), 'imago-convert-copy-'));
  source = join(work, 'source.raw');
  await makeSource(source);
});
after(() => rmSync(work, { recursive: true, force: true }));

async function makeSource(path: string): Promise<void> {
  const fh = await open(path, 'w');
  try {
    await fh.truncate(SIZE);
    const put = (b: Buffer, at: number) => fh.write(b, 0, b.length, at);
    await put(randomBytes(64 * KiB), 0);
    await put(randomBytes(300 * KiB + 7), MiB + 1000); // unaligned both ends
    await put(randomBytes(5 * MiB), 3 * MiB - 8 * KiB); // across 2 MiB slots of 4 KiB clusters
    await put(Buffer.alloc(512 * KiB), 4 * MiB); // stored zeros inside that run
    await put(Buffer.alloc(MiB), 10 * MiB); // stored zeros alone
    for (let i = 0; i < 8; i++) await put(Buffer.from([1 + i]), 12 * MiB + i * 64 * KiB + 64 * KiB - 1 - i * 4096); // late bytes
    await put(Buffer.alloc(3 * MiB, 0x5a), 16 * MiB + 4096); // compressible data
    await put(randomBytes(3000), SIZE - 3000);
  } finally {
    await fh.close();
  }
}

/** `r` without its stored layout: what a writer sees when the addon is missing. */
function withoutStored(r: DiskReader): DiskReader {
  return {
    format: r.format,
    virtualSize: r.virtualSize,
    ...(r.clusterSize === undefined ? {} : { clusterSize: r.clusterSize }),
    extents: (offset, length) => r.extents(offset, length),
    read: (offset, length) => r.read(offset, length),
    close: () => r.close(),
  };
}

async function readBack(path: string, fmt: string, opts: Record<string, string>): Promise<string> {
  const fallback = `${path}.fallback`;
  const reader = withoutStored(await openDisk(path, { format: fmt }));
  try {
    await writerFor(fmt === 'raw' ? 'qcow2' : 'raw').write(reader, { kind: 'file', path: fallback }, { options: opts });
  } finally {
    await reader.close();
  }
  return fallback;
}

/** Guest ranges qemu-img map says hold data, merged. */
function dataRanges(map: readonly QemuMapEntry[]): [number, number][] {
  const out: [number, number][] = [];
  for (const e of map) {
    if (!e.data) continue;
    const last = out[out.length - 1];
    if (last && last[1] === e.start) last[1] += e.length;
    else out.push([e.start, e.start + e.length]);
  }
  return out;
}

/** The file's data regions as the filesystem reports them. */
async function regions(path: string): Promise<[number, number][] | undefined> {
  const fh = await open(path, 'r');
  try {
    return dataRegions(fh.fd, 0, (await fh.stat()).size);
  } finally {
    await fh.close();
  }
}

async function compare(a: string, fa: string, b: string, fb: string): Promise<void> {
  await sh('qemu-img', ['compare', '-q', '-f', fa, '-F', fb, a, b]);
}

for (const clusterSize of ['4K', '64K', '2M']) {
  test(
    `raw → qcow2 (cluster_size ${clusterSize}) by kernel copies: identical to the source, clean, the clusters qemu allocates, byte for byte the read-and-write path's file`,
    { skip },
    async () => {
      const opts = { cluster_size: clusterSize };
      const ours = join(work, `ours-${clusterSize}.qcow2`);
      const theirs = join(work, `qemu-${clusterSize}.qcow2`);
      await convertFile(source, ours, { outFormat: 'qcow2', options: opts });
      await sh('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', '-o', `cluster_size=${clusterSize}`, source, theirs]);
      await compare(source, 'raw', ours, 'qcow2');
      await sh('qemu-img', ['check', '-q', ours]);
      assert.deepEqual(dataRanges(await qemuMap(ours, 'qcow2')), dataRanges(await qemuMap(theirs, 'qcow2')), 'the same guest clusters allocated as qemu-img');
      const fallback = join(work, `fallback-${clusterSize}.qcow2`);
      const reader = withoutStored(await openDisk(source, { format: 'raw' }));
      try {
        await writerFor('qcow2').write(reader, { kind: 'file', path: fallback }, { options: opts });
      } finally {
        await reader.close();
      }
      assert.ok((await readFile(ours)).equals(await readFile(fallback)), 'the same file as without the addon');
    },
  );
}

test(
  'qcow2 → raw by kernel copies: identical, zero 4 KiB blocks left out as qemu-img (-S 4k) does, the same bytes as the read-and-write path',
  { skip },
  async () => {
    const qcow2 = join(work, 'source.qcow2');
    await sh('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', source, qcow2]);
    const ours = join(work, 'ours.raw');
    const theirs = join(work, 'qemu.raw');
    await convertFile(qcow2, ours, { outFormat: 'raw' });
    await sh('qemu-img', ['convert', '-q', '-f', 'qcow2', '-O', 'raw', qcow2, theirs]);
    await compare(source, 'raw', ours, 'raw');
    const bytes = await readFile(ours);
    // qcow2 rounds the virtual size up to whole sectors: the source, then zeros
    assert.ok(bytes.subarray(0, SIZE).equals(await readFile(source)) && bytes.subarray(SIZE).every((b) => b === 0), 'the guest bytes');
    // (st_blocks also counts the filesystem's extent tree, which depends on how the writes fell)
    assert.deepEqual(await regions(ours), await regions(theirs), 'the data regions (SEEK_DATA) qemu-img writes');
    const fallback = await readBack(qcow2, 'qcow2', {});
    assert.ok(bytes.equals(await readFile(fallback)), 'the same bytes as without the addon');
    const bytesIn = (r: [number, number][] | undefined) => (r ?? []).reduce((n, [a, b]) => n + b - a, 0);
    assert.ok(bytesIn(await regions(ours)) < bytesIn(await regions(fallback)), 'less allocated than the 64 KiB zero detection of the read path');
  },
);

test('the CLI takes the kernel-copy path (strace sees copy_file_range) for raw → qcow2 and qcow2 → raw, and not for -c', { skip }, async () => {
  const qcow2 = join(work, 'cli.qcow2');
  await sh('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', source, qcow2]);
  const bin = join(import.meta.dirname, '..', 'bin', 'imago.js');
  const copies = async (...args: string[]) => {
    const trace = join(work, 'cli.trace');
    await sh('strace', ['-f', '-qq', '-e', 'trace=copy_file_range', '-o', trace, process.execPath, bin, 'convert', ...args]);
    return (await readFile(trace, 'utf8')).split('\n').filter((l) => l.includes('copy_file_range(')).length;
  };
  assert.ok((await copies('-O', 'qcow2', source, join(work, 'cli-out.qcow2'))) > 0);
  assert.ok((await copies('-O', 'raw', qcow2, join(work, 'cli-out.raw'))) > 0);
  assert.equal(await copies('-c', '-O', 'qcow2', source, join(work, 'cli-out-c.qcow2')), 0);
  await compare(source, 'raw', join(work, 'cli-out.qcow2'), 'qcow2');
  await compare(source, 'raw', join(work, 'cli-out.raw'), 'raw');
});

test(
  'a source on another filesystem (tmpfs: copy_file_range says EXDEV) converts to the same image',
  { skip: skip || (!existsSync('/dev/shm') && 'no /dev/shm') },
  async () => {
    const shm = mkdtempSync('/dev/shm/imago-convert-copy-');
    try {
      const src = join(shm, 'source.raw');
      await sh('cp', ['--sparse=always', source, src]);
      const out = join(work, 'cross.qcow2');
      await convertFile(src, out, { outFormat: 'qcow2' });
      await compare(source, 'raw', out, 'qcow2');
      assert.ok((await readFile(out)).equals(await readFile(join(work, 'ours-64K.qcow2'))), 'the same file as from the same filesystem');
    } finally {
      rmSync(shm, { recursive: true, force: true });
    }
  },
);

test('an abort during the copies leaves neither the output nor its .part', { skip }, async () => {
  for (const [fmt, out] of [
    ['qcow2', join(work, 'aborted.qcow2')],
    ['raw', join(work, 'aborted.raw')],
  ] as const) {
    const ac = new AbortController();
    await assert.rejects(
      convertFile(source, out, { outFormat: fmt, signal: ac.signal, cache: 'writeback', onProgress: (p) => p.done > 0 && ac.abort() }),
      (e: Error) => e.name === 'AbortError',
    );
    assert.ok(!existsSync(out) && !existsSync(`${out}.part`), fmt);
  }
});

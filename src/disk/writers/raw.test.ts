import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, test } from 'node:test';
import { MemoryDisk, qemuCompare, sampleDisk } from '../../../test/support/memory-disk.js';
import { rawWriter } from './raw.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'imago-raw-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('raw file: identical to the source, holes stay holes, no hole is read', async () => {
  const disk = sampleDisk();
  const expected = join(dir, 'expected.raw');
  await disk.toRawFile(expected);
  const out = join(dir, 'out.raw');
  const progress: number[] = [];
  const r = await rawWriter.write(disk, { kind: 'file', path: out }, { onProgress: (p) => progress.push(p.done) });
  assert.equal(disk.holeBytesRead, 0);
  assert.equal((await stat(out)).size, disk.virtualSize);
  assert.deepEqual(await readFile(out), await readFile(expected));
  assert.ok(r.bytesWritten < 2 * 1024 * 1024, `wrote ${r.bytesWritten}`);
  assert.equal(progress.at(-1), disk.virtualSize);
  await qemuCompare(expected, out, 'raw');
  assert.deepEqual(
    (await readdir(dir)).filter((f) => f.endsWith('.part')),
    [],
  );
});

test('raw stream: zeros for holes, same bytes as the file', async () => {
  const disk = sampleDisk();
  const pass = new PassThrough();
  const chunks: Buffer[] = [];
  pass.on('data', (c: Buffer) => chunks.push(c));
  const r = await rawWriter.write(disk, { kind: 'stream', stream: pass });
  const expected = join(dir, 'expected2.raw');
  await disk.toRawFile(expected);
  assert.equal(r.bytesWritten, disk.virtualSize);
  assert.deepEqual(Buffer.concat(chunks), await readFile(expected));
});

test('raw: 64 GiB sparse with 10 MiB of data allocates about 10 MiB', async () => {
  const disk = new MemoryDisk(64 * 1024 ** 3);
  for (let i = 0; i < 10; i++) disk.put(i * 6 * 1024 ** 3 + 4096 * i, MemoryDisk.random(1024 * 1024, 10 + i));
  const out = join(dir, 'big.raw');
  await rawWriter.write(disk, { kind: 'file', path: out });
  const st = await stat(out);
  assert.equal(st.size, 64 * 1024 ** 3);
  assert.ok(st.blocks * 512 < 12 * 1024 * 1024, `allocated ${st.blocks * 512}`);
  await rm(out);
});

test('raw: an abort deletes the .part and leaves no output', async () => {
  const disk = sampleDisk();
  const ac = new AbortController();
  const out = join(dir, 'aborted.raw');
  await assert.rejects(
    rawWriter.write(
      disk,
      { kind: 'file', path: out },
      {
        signal: ac.signal,
        onProgress: (p) => {
          if (p.done > 1024 * 1024) ac.abort();
        },
      },
    ),
  );
  assert.deepEqual(
    (await readdir(dir)).filter((f) => f.startsWith('aborted')),
    [],
  );
});

import assert from 'node:assert/strict';
import { createHash, randomBytes, randomFillSync } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { blobStoreConformance } from './blob-store.conformance.js';
import { alignedStart, directIoSupported } from '../io/direct-io.js';
import { FsBlobStore } from './fs-blob-store.js';

blobStoreConformance('fs', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'imago-blobs-'));
  return { store: new FsBlobStore(dir), cleanup: async () => rmSync(dir, { recursive: true, force: true }) };
});

test('fs layout: blobs/sha256/<2 hex>/<hex>; junk in the fan-out is not a blob', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'imago-blobs-'));
  try {
    const store = new FsBlobStore(dir);
    const s = await store.startUpload();
    await s.write(Buffer.from('hello'));
    const { digest } = await s.commit();
    const hex = digest.slice(7);
    assert.ok(existsSync(join(dir, 'blobs', 'sha256', hex.slice(0, 2), hex)));
    writeFileSync(join(dir, 'blobs', 'sha256', hex.slice(0, 2), `${hex}.tmp`), 'partial');
    mkdirSync(join(dir, 'blobs', 'sha256', 'zz'));
    const listed: string[] = [];
    for await (const b of store.list()) listed.push(b.digest);
    assert.deepEqual(listed, [digest]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a staging file left by a crash is swept and never listed as a blob', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'imago-blobs-'));
  try {
    const store = new FsBlobStore(dir);
    const s = await store.startUpload();
    await s.write(randomBytes(100_000)); // and the process "dies": no commit, no abort
    mkdirSync(join(dir, 'uploads', 'not-a-session'), { recursive: true }); // no startedat file
    const listed: string[] = [];
    for await (const b of store.list()) listed.push(b.digest);
    assert.deepEqual(listed, []);
    assert.equal(await store.sweepStaging(new Date(Date.now() + 1000)), 2);
    assert.ok(!existsSync(join(dir, 'uploads', s.id)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('probe fails with a message naming the root when it is not a usable directory', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'imago-blobs-'));
  try {
    const file = join(dir, 'a-file');
    writeFileSync(file, 'not a directory');
    await assert.rejects(new FsBlobStore(file).probe(), (e: Error) => e.message.includes(file) && /not usable/.test(e.message));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('memory stays bounded while writing 512 MiB', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'imago-blobs-'));
  try {
    const store = new FsBlobStore(dir);
    const s = await store.startUpload();
    const chunk = randomBytes(1 << 20);
    const before = process.memoryUsage().rss;
    let peak = before;
    for (let i = 0; i < 512; i++) {
      chunk[0] = i & 0xff;
      await s.write(chunk);
      peak = Math.max(peak, process.memoryUsage().rss);
    }
    const info = await s.commit();
    assert.equal(info.sizeBytes, 512 << 20);
    assert.ok(peak - before < 100 << 20, `rss grew ${(peak - before) >> 20} MiB`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('blobs and staging files are sparse: 8 MiB of data in a 256 MiB blob takes ~8 MiB of disk', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'imago-blobs-'));
  try {
    const store = new FsBlobStore(dir);
    const s = await store.startUpload();
    const zeros = new Uint8Array(1 << 20);
    const data = randomBytes(1 << 20);
    for (let i = 0; i < 256; i++) await s.write(i % 32 === 5 ? data : zeros); // 8 data MiB, zeros at both ends
    const staged = statSync(join(dir, 'uploads', s.id, 'data'));
    assert.ok(staged.blocks * 512 <= 9 << 20, `staging allocates ${staged.blocks * 512} bytes`);
    const info = await s.commit();
    assert.equal(info.sizeBytes, 256 << 20);
    const st = statSync(await store.localPath(info.digest));
    assert.equal(st.size, 256 << 20);
    assert.ok(st.blocks * 512 >= 8 << 20 && st.blocks * 512 <= 9 << 20, `blob allocates ${st.blocks * 512} bytes for 8 MiB of data`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a staging file is flushed in the background as it grows (the commit fsync is short); the blob is intact', async () => {
  const root = mkdtempSync(join(tmpdir(), 'imago-fs-flush-'));
  try {
    const store = new FsBlobStore(root);
    const s = await store.startUpload();
    const chunk = randomBytes(1 << 20);
    const sha = createHash('sha256');
    for (let i = 0; i < 130; i++) {
      chunk.writeUInt32LE(i, 0);
      sha.update(chunk);
      await s.write(chunk);
    }
    const flushed = () => (s as unknown as { bytesFlushed: number }).bytesFlushed;
    for (let i = 0; i < 500 && flushed() < 64 << 20; i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(flushed() >= 64 << 20, `flushed ${flushed()} bytes of ${130 << 20} before the commit`);
    const blob = await s.commit();
    assert.equal(blob.digest, `sha256:${sha.digest('hex')}`);
    assert.equal(blob.sizeBytes, 130 << 20);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test(
  'page-aligned runs go to the device with O_DIRECT, the rest through the page cache; the blob reads back identical',
  { skip: !directIoSupported && 'the direct_io addon did not build' },
  async () => {
    const root = mkdtempSync(join(tmpdir(), 'imago-direct-'));
    try {
      const store = new FsBlobStore(root);
      const shared = new SharedArrayBuffer(4 * 1024 * 1024 + 4096);
      const aligned = Buffer.from(shared, alignedStart(shared), 4 * 1024 * 1024);
      randomFillSync(aligned);
      aligned.fill(0, 8192, 16384); // two zero pages: a hole, and the runs around it stay aligned
      const tail = randomBytes(1000);
      const expected = Buffer.concat([aligned, aligned.subarray(16384, 16384 + 12345), tail]);
      const s = await store.startUpload();
      await s.write(aligned);
      await s.write(aligned.subarray(16384, 16384 + 12345)); // ends mid-page: its last page goes through the cache
      await s.write(tail); // not aligned in memory or on file
      const direct = (s as unknown as { bytesDirect: number }).bytesDirect;
      const blob = await s.commit();
      assert.equal(blob.sizeBytes, expected.length);
      const back = Buffer.concat(await (await store.read(blob.digest)).toArray());
      assert.ok(back.equals(expected), 'read back different bytes');
      // tmpfs and some others refuse O_DIRECT: then everything went through the cache, still correct
      if (direct > 0) assert.equal(direct, 4 * 1024 * 1024 - 8192 + 12288, `${direct} bytes written direct`);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  },
);

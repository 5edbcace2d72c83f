/**
 * The BlobStore conformance suite: every adapter runs it (distribution's `testsuites` idea).
 * Real bytes, real digests (node:crypto as the reference), odd chunk sizes, races.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { BlobNotFound, DigestMismatch, type BlobStore, type Digest } from './blob-store.js';

async function put(store: BlobStore, bytes: Uint8Array, chunk = 65536, expected?: Digest) {
  const s = await store.startUpload();
  for (let i = 0; i < bytes.length; i += chunk) await s.write(bytes.subarray(i, i + chunk));
  return s.commit(expected);
}

async function readAll(stream: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const c of stream) parts.push(c);
  return Buffer.concat(parts);
}

const digestOf = (b: Uint8Array): Digest => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function listAll(store: BlobStore): Promise<Digest[]> {
  const out: Digest[] = [];
  for await (const b of store.list()) out.push(b.digest);
  return out.sort();
}

export function blobStoreConformance(name: string, make: () => Promise<{ store: BlobStore; cleanup(): Promise<void> }>): void {
  describe(`BlobStore conformance: ${name}`, () => {
    const withStore = (fn: (store: BlobStore) => Promise<void>) => async () => {
      const { store, cleanup } = await make();
      try {
        await fn(store);
      } finally {
        await cleanup();
      }
    };

    test(
      'round-trips 0 bytes, 1 byte and 10 MiB written in odd chunk sizes; digests are sha256',
      withStore(async (store) => {
        for (const [bytes, chunk] of [
          [new Uint8Array(0), 1],
          [new Uint8Array([42]), 1],
          [randomBytes(10 << 20), 333_333],
        ] as const) {
          const info = await put(store, bytes, chunk);
          assert.equal(info.digest, digestOf(bytes));
          assert.equal(info.sizeBytes, bytes.length);
          assert.deepEqual(await readAll(await store.read(info.digest)), Buffer.from(bytes));
          assert.equal((await store.stat(info.digest))?.sizeBytes, bytes.length);
        }
      }),
    );

    test(
      'runs of zeros (leading, inner, trailing, unaligned, whole chunks) read back exactly and count in the size',
      withStore(async (store) => {
        const KiB = 1024;
        const bytes = Buffer.alloc(3 * 1024 * KiB + 777);
        randomBytes(5000).copy(bytes, 20 * KiB + 3); // data after 20 KiB of leading zeros, unaligned
        randomBytes(1).copy(bytes, 1024 * KiB + 4095); // one byte at the end of a 4 KiB block
        randomBytes(10 * KiB).copy(bytes, 2 * 1024 * KiB + 100); // inner data; then ~1 MiB of trailing zeros
        for (const chunk of [4096, 65536, 333_333, 1]) {
          if (chunk === 1) {
            const small = bytes.subarray(1024 * KiB + 4000, 1024 * KiB + 4200); // byte-wise around a block edge
            const info = await put(store, small, 1);
            assert.deepEqual(await readAll(await store.read(info.digest)), Buffer.from(small));
            continue;
          }
          const info = await put(store, bytes, chunk);
          assert.equal(info.digest, digestOf(bytes));
          assert.equal(info.sizeBytes, bytes.length);
          assert.equal((await store.stat(info.digest))?.sizeBytes, bytes.length);
          assert.deepEqual(await readAll(await store.read(info.digest)), bytes);
          const tail = await readAll(await store.read(info.digest, { start: bytes.length - 5000, end: bytes.length - 1 }));
          assert.deepEqual(tail, Buffer.alloc(5000));
        }
        const zeros = await put(store, new Uint8Array(5 * 1024 * KiB + 1), 1024 * KiB);
        assert.equal(zeros.sizeBytes, 5 * 1024 * KiB + 1);
        assert.deepEqual(await readAll(await store.read(zeros.digest)), Buffer.alloc(5 * 1024 * KiB + 1));
      }),
    );

    test(
      'an expected digest that does not match keeps nothing',
      withStore(async (store) => {
        const bytes = randomBytes(1000);
        const wrong = digestOf(randomBytes(10));
        await assert.rejects(put(store, bytes, 100, wrong), DigestMismatch);
        assert.deepEqual(await listAll(store), []);
        const staged: string[] = [];
        for await (const s of store.listStaging()) staged.push(s.id);
        assert.deepEqual(staged, []);
      }),
    );

    test(
      'identical bytes are stored once, also when committed concurrently',
      withStore(async (store) => {
        const bytes = randomBytes(2 << 20);
        const [a, b] = await Promise.all([put(store, bytes, 4096), put(store, bytes, 65536)]);
        const c = await put(store, bytes);
        assert.equal(a.digest, b.digest);
        assert.equal(b.digest, c.digest);
        assert.deepEqual(await listAll(store), [a.digest]);
      }),
    );

    test(
      'range reads: first byte, last byte, middle, whole; out of range refused',
      withStore(async (store) => {
        const bytes = randomBytes(100_000);
        const { digest } = await put(store, bytes);
        for (const [start, end] of [
          [0, 0],
          [99_999, 99_999],
          [1234, 56_789],
          [0, 99_999],
        ] as const) {
          assert.deepEqual(await readAll(await store.read(digest, { start, end })), bytes.subarray(start, end + 1));
        }
        await assert.rejects(store.read(digest, { start: 0, end: 100_000 }), RangeError);
        await assert.rejects(store.read(digest, { start: 10, end: 5 }), RangeError);
      }),
    );

    test(
      'missing blobs: read → BlobNotFound, stat → undefined, delete twice → true then false',
      withStore(async (store) => {
        const missing = digestOf(randomBytes(8));
        await assert.rejects(store.read(missing), BlobNotFound);
        assert.equal(await store.stat(missing), undefined);
        const { digest } = await put(store, randomBytes(10));
        assert.equal(await store.delete(digest), true);
        assert.equal(await store.delete(digest), false);
        assert.deepEqual(await listAll(store), []);
      }),
    );

    test(
      'abort removes staging; sweepStaging removes only entries older than the cutoff',
      withStore(async (store) => {
        const a = await store.startUpload();
        await a.write(randomBytes(1000));
        await a.abort();
        await a.abort();
        const old = await store.startUpload();
        await old.write(randomBytes(10));
        await new Promise((r) => setTimeout(r, 20));
        const cutoff = new Date();
        await new Promise((r) => setTimeout(r, 20));
        const young = await store.startUpload();
        const ids: string[] = [];
        for await (const s of store.listStaging()) ids.push(s.id);
        assert.deepEqual(ids.sort(), [old.id, young.id].sort());
        assert.equal(await store.sweepStaging(cutoff), 1);
        const left: string[] = [];
        for await (const s of store.listStaging()) left.push(s.id);
        assert.deepEqual(left, [young.id]);
        await young.abort();
      }),
    );

    test(
      'probe passes on a healthy backend',
      withStore(async (store) => {
        await store.probe();
      }),
    );
  });
}

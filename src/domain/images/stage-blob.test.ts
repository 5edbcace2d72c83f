import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { FsBlobStore } from '../../store/fs-blob-store.js';
import { stageBlob } from './stage-blob.js';

async function* chunksOf(bytes: Buffer, size: number, failAfter?: number): AsyncIterable<Uint8Array> {
  for (let off = 0; off < bytes.length; off += size) {
    if (failAfter !== undefined && off >= failAfter) throw new Error('the source broke');
    yield bytes.subarray(off, off + size);
  }
}

async function staging(store: FsBlobStore): Promise<number> {
  let n = 0;
  for await (const _ of store.listStaging()) n++;
  return n;
}

async function withStore(fn: (store: FsBlobStore) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'imago-stage-'));
  try {
    await fn(new FsBlobStore(dir));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const hex = (algo: string, b: Buffer) => createHash(algo).update(b).digest('hex');

test('stageBlob commits content-addressed, with sha512 and md5 of the same bytes; onChunk sees every byte once, in slot-sized chunks', () =>
  withStore(async (store) => {
    const bytes = randomBytes(40 * 65536 + 17);
    const seen: Buffer[] = [];
    // copies: the chunk's memory is filled again once onChunk settled
    const r = await stageBlob(store, chunksOf(bytes, 65536), { md5: true, onChunk: (c) => void seen.push(Buffer.from(c)) });
    assert.equal(r.blob.digest, `sha256:${hex('sha256', bytes)}`);
    assert.equal(r.blob.sizeBytes, bytes.length);
    assert.equal(r.sha512, hex('sha512', bytes));
    assert.equal(r.md5, hex('md5', bytes));
    // whole slots (256 KiB or 1 MiB), then the rest
    const slot = seen[0]!.length;
    assert.ok(slot === 262144 || slot === 1048576, `chunk of ${slot} bytes`);
    assert.ok(seen.slice(0, -1).every((c) => c.length === slot) && seen.at(-1)!.length === bytes.length % slot);
    assert.ok(Buffer.concat(seen).equals(bytes), 'onChunk saw the stream, in order');
    assert.equal(await staging(store), 0);
  }));

test('stageBlob reuses its few slots: a stream far larger than them stages whole', () =>
  withStore(async (store) => {
    const bytes = randomBytes(24 * 1024 * 1024 + 5);
    const buffers = new Set<ArrayBufferLike>();
    const offsets = new Set<number>();
    const r = await stageBlob(store, chunksOf(bytes, 100_000), {
      md5: false,
      onChunk: (c) => {
        buffers.add(c.buffer);
        offsets.add(c.byteOffset);
      },
    });
    assert.equal(r.blob.digest, `sha256:${hex('sha256', bytes)}`);
    assert.equal(buffers.size, 1, 'all chunks lie in one shared buffer');
    assert.ok(offsets.size <= 8, `${offsets.size} distinct slots for ${bytes.length} bytes`);
  }));

test('stageBlob: no md5 unless asked for', () =>
  withStore(async (store) => {
    const r = await stageBlob(store, chunksOf(Buffer.from('abc'), 2), { md5: false });
    assert.equal(r.md5, undefined);
    assert.equal(r.sha512, hex('sha512', Buffer.from('abc')));
  }));

test('stageBlob: sha512 false (an OCI blob) hashes sha256 only, still verified and content-addressed', () =>
  withStore(async (store) => {
    const bytes = randomBytes(3 * 1024 * 1024 + 3);
    const r = await stageBlob(store, chunksOf(bytes, 65536), { md5: false, sha512: false, expect: `sha256:${hex('sha256', bytes)}` });
    assert.equal(r.sha512, undefined);
    assert.equal(r.blob.digest, `sha256:${hex('sha256', bytes)}`);
    await assert.rejects(
      stageBlob(store, chunksOf(bytes, 65536), { md5: false, sha512: false, expect: `sha256:${hex('sha256', Buffer.from('other'))}` }),
      /DIGEST_MISMATCH|hash to/,
    );
  }));

test('stageBlob: keep → false stages nothing and stores nothing', () =>
  withStore(async (store) => {
    const r = await stageBlob(store, chunksOf(randomBytes(100_000), 4096), { md5: false, keep: async (failure) => (assert.equal(failure, undefined), false) });
    assert.equal(r, undefined);
    assert.equal(await staging(store), 0);
    for await (const _ of store.list()) assert.fail('nothing is stored');
  }));

test('stageBlob: a failing source is thrown (or handed to keep) and nothing is kept', () =>
  withStore(async (store) => {
    await assert.rejects(stageBlob(store, chunksOf(randomBytes(100_000), 4096, 50_000), { md5: false }), /the source broke/);
    let told: unknown;
    await assert.rejects(
      stageBlob(store, chunksOf(randomBytes(100_000), 4096, 50_000), {
        md5: false,
        keep: async (failure) => {
          told = failure?.error;
          throw new Error('refused');
        },
      }),
      /refused/,
    );
    assert.match(String(told), /the source broke/);
    const thrown = stageBlob(store, chunksOf(randomBytes(100_000), 4096), {
      md5: false,
      onChunk: () => {
        throw new Error('too big');
      },
    });
    await assert.rejects(thrown, /too big/);
    assert.equal(await staging(store), 0);
    for await (const _ of store.list()) assert.fail('nothing is stored');
  }));

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

test('stageBlob commits content-addressed, with sha512 and md5 of the same bytes; every chunk is seen and handed back', () =>
  withStore(async (store) => {
    const bytes = randomBytes(3 * 65536 + 17);
    const seen: number[] = [];
    let staged = 0;
    const r = await stageBlob(store, chunksOf(bytes, 65536), { md5: true, onChunk: (c) => void seen.push(c.length), onStaged: () => staged++ });
    assert.equal(r.blob.digest, `sha256:${hex('sha256', bytes)}`);
    assert.equal(r.blob.sizeBytes, bytes.length);
    assert.equal(r.sha512, hex('sha512', bytes));
    assert.equal(r.md5, hex('md5', bytes));
    assert.deepEqual(seen, [65536, 65536, 65536, 17]);
    assert.ok(staged >= 2, 'chunks are handed back once staged');
    assert.equal(await staging(store), 0);
  }));

test('stageBlob: no md5 unless asked for', () =>
  withStore(async (store) => {
    const r = await stageBlob(store, chunksOf(Buffer.from('abc'), 2), { md5: false });
    assert.equal(r.md5, undefined);
    assert.equal(r.sha512, hex('sha512', Buffer.from('abc')));
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

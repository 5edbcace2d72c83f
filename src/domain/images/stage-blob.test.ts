import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { UploadOptions } from '../../store/blob-store.js';
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

test('stageBlob keeps no source chunk while it waits for a slot: the rest waits in its own memory, and the bytes stage whole', () =>
  withStore(async (store) => {
    // A chunk held across a long wait outlives two scavenges and is promoted; under a hundred
    // concurrent uploads those dead chunks filled the old generation's budget (issue 20 item 6).
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    // staging writes wait at the gate, so slots are not given back and stageBlob must wait for one
    const gated = new Proxy(store, {
      get(target, p) {
        if (p !== 'startUpload') return Reflect.get(target, p, target) as unknown;
        return async (o?: UploadOptions) => {
          const session = await target.startUpload(o);
          return new Proxy(session, {
            get(s, q) {
              if (q === 'write') return async (c: Uint8Array) => (await gate, s.write(c));
              const v = Reflect.get(s, q, s) as unknown;
              return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(s) : v;
            },
          });
        };
      },
    });
    const CHUNK = 48 * 1024; // slot boundaries (256 KiB, 1 MiB) fall inside chunks
    const whole = createHash('sha256');
    const handed: WeakRef<Buffer>[] = [];
    let total = 0;
    // an iterator that keeps nothing it handed out (an async generator's frame would)
    const source: AsyncIterableIterator<Uint8Array> = {
      [Symbol.asyncIterator]() {
        return this;
      },
      next: async () => {
        if (total >= 16 * 1024 * 1024) return { done: true, value: undefined };
        const chunk = randomBytes(CHUNK);
        whole.update(chunk);
        total += chunk.length;
        handed.push(new WeakRef(chunk));
        return { done: false, value: chunk };
      },
    };
    const staged = stageBlob(gated, source, { md5: false });
    // stageBlob stops asking for chunks once every slot it may take is full
    let asked = -1;
    while (asked !== handed.length) {
      asked = handed.length;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(handed.length < (16 * 1024 * 1024) / CHUNK, `stageBlob waits for a slot (it took ${handed.length} chunks)`);
    const last = handed.length - 1;
    assert.ok((last * CHUNK) % (256 * 1024) !== 0, 'the last chunk taken straddles a slot boundary: part of it is still to be staged');
    gc();
    await new Promise((r) => setImmediate(r));
    gc();
    assert.equal(handed[last]!.deref(), undefined, 'the chunk whose rest waits for a slot is not held');
    open();
    const r = await staged;
    assert.equal(r.blob.sizeBytes, total);
    assert.equal(r.blob.digest, `sha256:${whole.digest('hex')}`, 'the spilled rest was staged in order');
  }));

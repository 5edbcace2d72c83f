import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { GrowingFile } from './growing-file.js';

const dir = mkdtempSync(join(tmpdir(), 'imago-growing-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** `data` in chunks of the given sizes (cycled), then `fail` thrown if given. */
async function* parts(data: Buffer, sizes: number[], fail?: Error): AsyncGenerator<Uint8Array> {
  let off = 0;
  for (let i = 0; off < data.length; i++) {
    const n = Math.min(sizes[i % sizes.length]!, data.length - off);
    yield data.subarray(off, off + n);
    off += n;
  }
  if (fail) throw fail;
}

const tooLong = (n: number) => new Error(`too long: ${n}`);

test('appends: several parts of odd chunk sizes make the file, in order, and a follower reads it all', async () => {
  const path = join(dir, 'a');
  const f = await GrowingFile.create(path);
  const data = randomBytes(3 * 1024 * 1024 + 12345);
  const follower = (async () => {
    const out: Buffer[] = [];
    for await (const c of f.follow(data.length, new AbortController().signal)) out.push(Buffer.from(c));
    return Buffer.concat(out);
  })();
  const cut = 1024 * 1024 + 777;
  assert.equal(await f.append(parts(data.subarray(0, cut), [65536, 1000, 7]), { max: data.length, tooLong }), cut);
  assert.equal(f.length, cut);
  assert.equal(await f.append(parts(data.subarray(cut), [300_000, 65536]), { max: data.length, tooLong }), data.length);
  assert.ok((await follower).equals(data), 'the follower read the bytes in order');
  await f.close();
  assert.ok(readFileSync(path).equals(data));
});

test('a part that fails mid-way keeps every byte received before the failure', async () => {
  const path = join(dir, 'b');
  const f = await GrowingFile.create(path);
  const data = randomBytes(1024 * 1024 + 5000);
  await assert.rejects(f.append(parts(data, [4096], new Error('client gone')), { max: 10 * data.length, tooLong }), /client gone/);
  assert.equal(f.length, data.length);
  await f.close();
  assert.ok(readFileSync(path).equals(data));
  assert.equal(await GrowingFile.lengthOf(path), data.length);
});

test('more than `max` is refused with what fitted kept; `check` stops a part before its next chunk', async () => {
  const f = await GrowingFile.create(join(dir, 'c'));
  const data = randomBytes(200_000);
  await assert.rejects(f.append(parts(data, [65536]), { max: 150_000, tooLong }), /too long: 196608/);
  assert.equal(f.length, 131072, 'the two chunks that fitted');
  let n = 0;
  await assert.rejects(
    f.append(parts(data, [1000]), {
      max: 1e9,
      tooLong,
      check: () => {
        if (++n > 3) throw new Error('ingest failed');
      },
    }),
    /ingest failed/,
  );
  assert.equal(f.length, 131072 + 3000);
  await f.close();
});

import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { exactLength } from './exact-length.js';

const mismatch = (n: number) => new Error(`got ${n} bytes`);

async function drain(r: Readable): Promise<{ bytes: number; error?: Error }> {
  let bytes = 0;
  try {
    for await (const c of r) bytes += (c as Buffer).length;
    return { bytes };
  } catch (e) {
    return { bytes, error: e as Error };
  }
}

test('exactLength passes a stream of the expected length through unchanged', async () => {
  assert.deepEqual(await drain(exactLength(Readable.from([Buffer.alloc(3), Buffer.alloc(5)]), 8, mismatch)), { bytes: 8 });
});

test('exactLength errors a stream that ends short or runs long, instead of ending it', async () => {
  const short = await drain(exactLength(Readable.from([Buffer.alloc(3)]), 8, mismatch));
  assert.equal(short.error?.message, 'got 3 bytes');
  const long = await drain(exactLength(Readable.from([Buffer.alloc(6), Buffer.alloc(6)]), 8, mismatch));
  assert.equal(long.error?.message, 'got 12 bytes');
});

test('exactLength: a source error errors the result; with no consumer listening it is not uncaught', async () => {
  const failing = new Readable({
    read() {
      this.destroy(new Error('EIO: i/o error, read'));
    },
  });
  const r = exactLength(failing, 8, mismatch);
  assert.equal((await drain(r)).error?.message, 'EIO: i/o error, read');
  // nobody reads or listens here: the error must stay inside this stream
  const unread = exactLength(
    new Readable({
      read() {
        this.destroy(new Error('gone'));
      },
    }),
    8,
    mismatch,
  );
  unread.resume();
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(unread.destroyed, true);
});

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { ParallelHasher } from './parallel-hasher.js';

test('digests equal node:crypto for every algorithm, across odd chunk sizes', async () => {
  const data = randomBytes(3 * 1024 * 1024 + 17);
  const h = new ParallelHasher([['sha256'], ['sha512', 'md5']]);
  for (let off = 0, n = 1; off < data.length; off += n, n = (n * 7 + 3) % 300_000 || 1) {
    await h.update(data.subarray(off, Math.min(data.length, off + n)));
  }
  const d = await h.digest();
  for (const a of ['sha256', 'sha512', 'md5'] as const) assert.equal(d[a], createHash(a).update(data).digest('hex'), a);
});

test('an empty stream has the empty digests', async () => {
  const h = new ParallelHasher([['sha256']]);
  assert.equal((await h.digest()).sha256, createHash('sha256').digest('hex'));
});

test('in-flight bytes are bounded: memory stays flat over 256 MiB', async () => {
  const h = new ParallelHasher([['sha256'], ['sha512']], 8, 1024 * 1024);
  const chunk = randomBytes(1024 * 1024);
  const ref = createHash('sha256');
  const before = process.memoryUsage().rss;
  let peak = before;
  for (let i = 0; i < 256; i++) {
    chunk[0] = i;
    ref.update(chunk);
    await h.update(chunk);
    peak = Math.max(peak, process.memoryUsage().rss);
  }
  assert.equal((await h.digest()).sha256, ref.digest('hex'));
  assert.ok(peak - before < 96 * 1024 * 1024, `rss grew ${(peak - before) >> 20} MiB`);
});

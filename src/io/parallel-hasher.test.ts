import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { test } from 'node:test';
import { EXTRA_SLOT_BUDGET_BYTES, LARGE, ParallelHasher, slotArenaBytes, SMALL, wakesByPipe } from './parallel-hasher.js';

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
  const h = new ParallelHasher([['sha256'], ['sha512']], { slots: 8, slotBytes: 1024 * 1024 });
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

test('concurrent hashers share one pool of worker threads and keep their streams apart', async () => {
  const threads = () => readdirSync('/proc/self/task').length;
  // warm the pool so the count below measures what 12 more hashers add
  await new ParallelHasher([['sha256'], ['sha512']]).digest();
  const before = threads();
  const streams = Array.from({ length: 12 }, (_, i) => randomBytes(512 * 1024 + i * 4099));
  const hashers = streams.map(() => new ParallelHasher([['sha256'], ['sha512']]));
  const during = threads();
  await Promise.all(
    streams.map(async (data, i) => {
      for (let off = 0; off < data.length; off += 65_536) await hashers[i]!.update(data.subarray(off, off + 65_536));
    }),
  );
  const digests = await Promise.all(hashers.map((h) => h.digest()));
  digests.forEach((d, i) => {
    assert.equal(d.sha256, createHash('sha256').update(streams[i]!).digest('hex'), `stream ${i} sha256`);
    assert.equal(d.sha512, createHash('sha512').update(streams[i]!).digest('hex'), `stream ${i} sha512`);
  });
  assert.equal(during - before, 0, `12 hashers started ${during - before} threads of their own`);
});

test('a closed hasher gives its lanes back and refuses more bytes', async () => {
  const h = new ParallelHasher([['sha256']]);
  await h.update(randomBytes(1000));
  await h.close();
  await assert.rejects(h.update(randomBytes(10)), /after digest\/close/);
  const again = new ParallelHasher([['sha256']]);
  assert.equal((await again.digest()).sha256, createHash('sha256').digest('hex'));
});

test('the first few concurrent streams get large slots, any more small ones; a finished stream gives its large slots back', async () => {
  const first = Array.from({ length: 4 }, () => new ParallelHasher([['sha256']]));
  assert.deepEqual(
    first.map((h) => h.slotBytes),
    [LARGE.slotBytes, LARGE.slotBytes, LARGE.slotBytes, LARGE.slotBytes],
  );
  const fifth = new ParallelHasher([['sha256']]);
  assert.equal(fifth.slotBytes, SMALL.slotBytes);
  await first[0]!.digest();
  const next = new ParallelHasher([['sha256']]);
  assert.equal(next.slotBytes, LARGE.slotBytes);
  await Promise.all([...first.slice(1), fifth, next].map((h) => h.close()));
});

test('a lone stream grows to all its slots; many at once share one budget beyond their first slot', async () => {
  const data = randomBytes(8 * 1024 * 1024);
  const lone = new ParallelHasher([['sha256'], ['sha512']]);
  await lone.update(data);
  assert.equal(lone.slotsUsed, LARGE.slots);
  await lone.digest();

  const many = Array.from({ length: 60 }, () => new ParallelHasher([['sha256'], ['sha512']]));
  await Promise.all(many.map((h) => h.update(data)));
  const extra = many.reduce((sum, h) => sum + (h.slotsUsed - 1) * h.slotBytes, 0);
  assert.ok(extra <= EXTRA_SLOT_BUDGET_BYTES, `${extra >> 20} MiB of slots beyond the first ones`);
  assert.ok(
    many.every((h) => h.slotsUsed >= 1),
    'every stream has its own first slot',
  );
  const digests = await Promise.all(many.map((h) => h.digest()));
  const want = createHash('sha512').update(data).digest('hex');
  assert.ok(digests.every((d) => d.sha512 === want));
  // the budget came back: a new lone stream grows fully again
  const again = new ParallelHasher([['sha256']]);
  await again.update(data);
  assert.equal(again.slotsUsed, LARGE.slots);
  await again.digest();
});

test('ended streams give their slot memory back: 100 streams one after another do not pile up their buffers', async () => {
  const data = randomBytes(4 * 1024 * 1024);
  const rss = () => process.memoryUsage().rss;
  const before = rss();
  let peak = before;
  for (let i = 0; i < 100; i++) {
    const h = new ParallelHasher([['sha256'], ['sha512']]);
    await h.update(data);
    await (i % 2 ? h.digest() : h.close());
    peak = Math.max(peak, rss());
  }
  // each stream touched 4 MiB of slots: kept, they would be 400 MiB
  assert.ok(peak - before < 128 * 1024 * 1024, `rss grew ${(peak - before) >> 20} MiB over 100 streams`);
});

test('100 streams at once borrow their slots from one arena, and the arena shrinks back once they end', async () => {
  const MiB = 1024 * 1024;
  const data = randomBytes(3 * MiB + 5);
  const hashers = Array.from({ length: 100 }, () => new ParallelHasher([['sha256'], ['sha512']]));
  await Promise.all(hashers.map((h) => h.update(data)));
  const during = slotArenaBytes();
  const held = hashers.reduce((sum, h) => sum + h.slotsUsed * h.slotBytes, 0);
  // a buffer per stream would be 100 × (its shape's whole size); the arena holds what the streams
  // borrowed, rounded up to whole 8 MiB segments (at most one partly used or idle per slot size)
  assert.ok(held <= 100 * SMALL.slotBytes + 4 * LARGE.slots * LARGE.slotBytes + EXTRA_SLOT_BUDGET_BYTES, `streams hold ${held / MiB} MiB`);
  assert.ok(during >= held, `arena ${during / MiB} MiB < ${held / MiB} MiB borrowed`);
  assert.ok(during <= held + 4 * (8 * MiB + 4096), `arena ${during / MiB} MiB for ${held / MiB} MiB borrowed`);
  const want = { sha256: createHash('sha256').update(data).digest('hex'), sha512: createHash('sha512').update(data).digest('hex') };
  const digests = await Promise.all(hashers.map((h, i) => (i % 3 ? h.digest() : h.close().then(() => want))));
  assert.ok(digests.every((d) => d.sha256 === want.sha256 && d.sha512 === want.sha512));
  assert.ok(slotArenaBytes() <= 2 * (8 * MiB + 4096), `arena kept ${slotArenaBytes() / MiB} MiB after every stream ended`);
  // the segments given back were dropped by the workers too: new streams hash correctly on new ones
  const again = await Promise.all(
    Array.from({ length: 40 }, async () => {
      const h = new ParallelHasher([['sha256'], ['sha512']]);
      await h.update(data);
      return h.digest();
    }),
  );
  assert.ok(again.every((d) => d.sha256 === want.sha256 && d.sha512 === want.sha512));
});

test('the hashing threads wake the event loop through the wake pipe (native/wake-pipe.c is built), and every slot comes back', async () => {
  assert.equal(wakesByPipe, true, 'the native addon wake_pipe did not build: npm install (node-gyp) and native/wake-pipe.c');
  // many small slots one after another: each is hashed and handed back through the ring before the next is filled
  const h = new ParallelHasher([['sha256'], ['sha512']], { slots: 1, slotBytes: 4096 });
  const data = randomBytes(4096 * 500 + 3);
  await h.update(data);
  assert.equal((await h.digest()).sha512, createHash('sha512').update(data).digest('hex'));
});

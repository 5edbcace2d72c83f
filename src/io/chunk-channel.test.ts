import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ChunkChannel } from './chunk-channel.js';

const settled = async (p: Promise<unknown>) => {
  let done = false;
  void p.then(() => (done = true));
  await new Promise((r) => setImmediate(r));
  return done;
};

test('a write is a copy; the producer waits once the queue holds maxQueuedBytes, and goes on when the consumer reads', async () => {
  const ch = new ChunkChannel(8);
  const buf = new Uint8Array([1, 2, 3, 4]);
  assert.ok(await settled(ch.write(buf)), 'room left: resolves at once');
  buf.fill(9); // the producer refills its buffer: the queued chunk is unchanged
  const full = ch.write(buf);
  assert.equal(await settled(full), false, '8 bytes queued: the producer waits');
  assert.deepEqual([...(await ch.next()).value!], [1, 2, 3, 4]);
  assert.ok(await settled(full), 'the consumer read: room again');
  assert.deepEqual([...(await ch.next()).value!], [9, 9, 9, 9]);
  ch.end();
  assert.equal((await ch.next()).done, true);
});

test('a consumer that waits gets the next chunk; the end after queued chunks; a failure rejects the read', async () => {
  const ch = new ChunkChannel(1024);
  const read = ch.next();
  await ch.write(new Uint8Array([7]));
  assert.deepEqual([...(await read).value!], [7]);
  await ch.write(new Uint8Array([8]));
  ch.end();
  assert.deepEqual([...(await ch.next()).value!], [8]);
  assert.equal((await ch.next()).done, true);

  const failing = new ChunkChannel(1024);
  const waiting = failing.next();
  failing.fail(new Error('client gone'));
  await assert.rejects(waiting, /client gone/);
});

test('a consumer that stops (return) releases a waiting producer, and later writes are dropped: memory stays bounded', async () => {
  const ch = new ChunkChannel(4);
  const blocked = ch.write(new Uint8Array(4));
  assert.equal(await settled(blocked), false);
  await ch.return();
  assert.ok(await settled(blocked));
  assert.ok(ch.detached);
  for (let i = 0; i < 1000; i++) await ch.write(new Uint8Array(1024));
  assert.equal((await ch.next()).done, true, 'nothing was queued after the consumer left');
});

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { blockRuns, isAllZero, zeroBytesIn, ZERO_BLOCK_BYTES } from './zero-blocks.js';

test('isAllZero: any length, a single non-zero byte anywhere is seen', () => {
  for (const n of [0, 1, 4095, 4096, 65536, 65537, 200_000]) {
    const b = new Uint8Array(n);
    assert.equal(isAllZero(b), true, `${n} zeros`);
    for (const at of [0, n >> 1, n - 1]) {
      if (n === 0) continue;
      b[at] = 1;
      assert.equal(isAllZero(b), false, `${n} bytes, 1 at ${at}`);
      b[at] = 0;
    }
  }
  const view = new Uint8Array(new Uint8Array([1, 0, 0, 0, 1]).buffer, 1, 3); // a view, not a Buffer
  assert.equal(isAllZero(view), true);
});

test('blockRuns: blocks aligned on the stream position, merged by kind, covering the chunk exactly', () => {
  const b = Buffer.alloc(5 * ZERO_BLOCK_BYTES);
  b[2 * ZERO_BLOCK_BYTES + 7] = 9; // the third block from position 0
  assert.deepEqual(blockRuns(b, 0), [
    { start: 0, end: 2 * ZERO_BLOCK_BYTES, zero: true },
    { start: 2 * ZERO_BLOCK_BYTES, end: 3 * ZERO_BLOCK_BYTES, zero: false },
    { start: 3 * ZERO_BLOCK_BYTES, end: 5 * ZERO_BLOCK_BYTES, zero: true },
  ]);
  // the same bytes at position 100: block edges move to 4096 - 100 + k * 4096
  const runs = blockRuns(b, 100);
  assert.deepEqual(runs[1], { start: 2 * ZERO_BLOCK_BYTES - 100, end: 3 * ZERO_BLOCK_BYTES - 100, zero: false });
  assert.equal(runs[0]!.start, 0);
  assert.equal(runs[runs.length - 1]!.end, b.length);
  for (let i = 1; i < runs.length; i++) assert.equal(runs[i]!.start, runs[i - 1]!.end);
  assert.deepEqual(blockRuns(new Uint8Array(0), 0), []);
});

test('zeroBytesIn counts the bytes in all-zero blocks only', () => {
  const b = Buffer.alloc(1 << 20);
  assert.equal(zeroBytesIn(b, 0), 1 << 20);
  randomBytes(ZERO_BLOCK_BYTES).copy(b, 0);
  assert.equal(zeroBytesIn(b, 0), (1 << 20) - ZERO_BLOCK_BYTES);
  assert.equal(zeroBytesIn(randomBytes(1 << 20), 0), 0);
});

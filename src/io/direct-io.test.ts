import assert from 'node:assert/strict';
import { test } from 'node:test';
import { alignedStart, directIoSupported, directPrefix, PAGE_BYTES, pageOffset } from './direct-io.js';

test(
  'alignedStart finds the page boundary in a SharedArrayBuffer; directPrefix counts whole aligned pages',
  { skip: !directIoSupported && 'the direct_io addon did not build' },
  () => {
    const shared = new SharedArrayBuffer(64 * 1024);
    const start = alignedStart(shared);
    assert.ok(start >= 0 && start < PAGE_BYTES);
    const aligned = new Uint8Array(shared, start, 32 * 1024);
    assert.equal(pageOffset(aligned), 0);
    assert.equal(pageOffset(aligned.subarray(100)), 100);
    assert.equal(directPrefix(aligned, 0), 32 * 1024);
    assert.equal(directPrefix(aligned.subarray(0, 3 * PAGE_BYTES + 5), 8192), 3 * PAGE_BYTES, 'whole pages only');
    assert.equal(directPrefix(aligned, 100), 0, 'file offset not on a page');
    assert.equal(directPrefix(aligned.subarray(512), 0), 0, 'memory not on a page');
    assert.equal(directPrefix(aligned.subarray(0, 100), 0), 0, 'less than a page');
  },
);

test('pageOffset refuses what is not a typed array', { skip: !directIoSupported }, () => {
  assert.throws(() => pageOffset({} as Uint8Array), /expected a TypedArray/);
});

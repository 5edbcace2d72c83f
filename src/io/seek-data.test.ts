import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync, ftruncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { dataRegions, seekSupported } from './seek-data.js';

const MiB = 1024 * 1024;

test('SEEK_DATA addon: built by npm install, finds the data of a sparse file without reading it', () => {
  assert.ok(seekSupported(), 'native/build/Release/seek_data.node is missing: npm install (node-gyp) did not build it');
  const dir = mkdtempSync(join(tmpdir(), 'imago-seek-'));
  const path = join(dir, 'sparse.raw');
  const fd = openSync(path, 'w+');
  try {
    ftruncateSync(fd, 64 * MiB);
    writeSync(fd, Buffer.alloc(MiB, 1), 0, MiB, 8 * MiB);
    writeSync(fd, Buffer.alloc(4096, 2), 0, 4096, 64 * MiB - 4096);
    const regions = dataRegions(fd, 0, 64 * MiB);
    assert.ok(regions, 'this filesystem answers SEEK_DATA');
    assert.deepEqual(regions, [
      [8 * MiB, 9 * MiB],
      [64 * MiB - 4096, 64 * MiB],
    ]);
    assert.deepEqual(dataRegions(fd, 0, 8 * MiB), []);
    assert.deepEqual(dataRegions(fd, 8 * MiB + 100, 8 * MiB + 200), [[8 * MiB + 100, 8 * MiB + 200]]);
  } finally {
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  }
});

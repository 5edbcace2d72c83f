import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FileSource } from '../../io/file-source.js';
import { allExtents, assertMatchesQemu, patternRaw, PATTERN_SIZE } from '../../../test/support/disk-oracle.js';
import { HOLE_GRANULE, openRaw } from './raw.js';

test('raw: reads the file and maps all-zero granules as holes', async () => {
  const file = await patternRaw();
  const r = openRaw(await FileSource.open(file));
  try {
    assert.equal(r.virtualSize, PATTERN_SIZE);
    await assertMatchesQemu(r, file, 'raw');
    const ext = await allExtents(r);
    // 3 MiB..5 MiB is never written: holes, at granule boundaries
    const hole = ext.find((e) => e.kind === 'hole' && e.offset <= 4 * 1024 * 1024 && e.offset + e.length >= 5 * 1024 * 1024);
    assert.ok(hole, 'the unwritten tail is a hole');
    for (const e of ext) if (e.offset + e.length < r.virtualSize) assert.equal((e.offset + e.length) % HOLE_GRANULE, 0);
    // a range inside one granule is clipped to the asked range
    const part = await allExtents(r, 1000, 5000);
    assert.deepEqual(part, [{ offset: 1000, length: 5000, kind: 'data' }]);
  } finally {
    await r.close();
  }
});

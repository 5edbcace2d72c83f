/** Checks the shared disk oracle (test/support/disk-oracle.ts) itself. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { patternBytes, PATTERN_SIZE, patternRaw } from '../../test/support/disk-oracle.js';

const KiB = 1024;
const MiB = 1024 * KiB;

test('oracle: the pattern disk has the documented layout', async () => {
  const raw = readFileSync(await patternRaw());
  assert.equal(raw.length, PATTERN_SIZE);
  assert.equal(raw[MiB + 1000], 0xab);
  assert.deepEqual(raw.subarray(PATTERN_SIZE - 3000), patternBytes(3000, 3));
  assert.ok(raw.subarray(4 * MiB, 5 * MiB).every((x) => x === 0));
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FileSource } from '../../io/file-source.js';
import { allExtents, assertMatchesQemu, patternImage } from '../../../test/support/disk-oracle.js';
import { openQed } from './qed.js';

const cases: [string, string[]][] = [['64K', []], ['4K', ['cluster_size=4096']]];

for (const [label, opts] of cases) {
  test(`qed ${label}: reads and maps as qemu does`, async () => {
    const file = await patternImage(`disk-qed-${label}-v1.qed`, 'qed', opts);
    const r = await openQed(await FileSource.open(file));
    try {
      assert.equal(r.format, 'qed');
      await assertMatchesQemu(r, file, 'qed');
      const ext = await allExtents(r);
      assert.ok(ext.some((e) => e.kind === 'data'));
    } finally {
      await r.close();
    }
  });
}

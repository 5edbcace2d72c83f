import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FileSource } from '../../io/file-source.js';
import { allExtents, assertMatchesQemu, patternImage } from '../../../test/support/disk-oracle.js';
import { openVdi } from './vdi.js';

const cases: [string, string[]][] = [['dynamic', []], ['static', ['static=on']]];

for (const [label, opts] of cases) {
  test(`vdi ${label}: reads and maps as qemu does`, async () => {
    const file = await patternImage(`disk-vdi-${label}-v1.vdi`, 'vdi', opts);
    const r = await openVdi(await FileSource.open(file));
    try {
      assert.equal(r.format, 'vdi');
      await assertMatchesQemu(r, file, 'vdi');
      const ext = await allExtents(r);
      assert.ok(ext.some((e) => e.kind === 'data'));
    } finally {
      await r.close();
    }
  });
}

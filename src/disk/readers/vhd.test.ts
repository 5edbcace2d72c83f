import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FileSource } from '../../io/file-source.js';
import { allExtents, assertMatchesQemu, patternImage } from '../../../test/support/disk-oracle.js';
import { openVhd } from './vhd.js';

const cases: [string, string[]][] = [['dynamic', ['subformat=dynamic']], ['fixed', ['subformat=fixed']], ['dynamic-force-size', ['subformat=dynamic', 'force_size=on']]];

for (const [label, opts] of cases) {
  test(`vhd ${label}: reads and maps as qemu does`, async () => {
    const file = await patternImage(`disk-vhd-${label}-v1.vhd`, 'vpc', opts);
    const r = await openVhd(await FileSource.open(file));
    try {
      assert.equal(r.format, 'vhd');
      await assertMatchesQemu(r, file, 'vpc');
      const ext = await allExtents(r);
      assert.ok(ext.some((e) => e.kind === 'data'));
    } finally {
      await r.close();
    }
  });
}

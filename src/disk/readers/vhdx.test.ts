import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FileSource } from '../../io/file-source.js';
import { allExtents, assertMatchesQemu, patternImage } from '../../../test/support/disk-oracle.js';
import { openVhdx } from './vhdx.js';

const cases: [string, string[]][] = [['dynamic', ['subformat=dynamic']], ['fixed', ['subformat=fixed']], ['block-8M', ['block_size=8388608']], ['log-1M', ['log_size=1048576']]];

for (const [label, opts] of cases) {
  test(`vhdx ${label}: reads and maps as qemu does`, async () => {
    const file = await patternImage(`disk-vhdx-${label}-v1.vhdx`, 'vhdx', opts);
    const r = await openVhdx(await FileSource.open(file));
    try {
      assert.equal(r.format, 'vhdx');
      await assertMatchesQemu(r, file, 'vhdx');
      const ext = await allExtents(r);
      assert.ok(ext.some((e) => e.kind === 'data'));
    } finally {
      await r.close();
    }
  });
}

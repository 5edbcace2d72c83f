import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { cached, sh } from '../../test/support/qemu.js';
import { DiskError } from './disk.js';
import { openDisk } from './open-disk.js';
import { assertMatchesQemu, patternImage, patternRaw } from '../../test/support/disk-oracle.js';
import { makeOva } from './readers/ova.test.js';

const fixtures: [string, () => Promise<string>, string][] = [
  ['raw', () => patternRaw(), 'raw'],
  ['qcow2', () => patternImage('disk-qcow2-v3-64K-v1.qcow2', 'qcow2', ['compat=1.1']), 'qcow2'],
  ['vmdk', () => patternImage('disk-vmdk-streamOptimized-v1.vmdk', 'vmdk', ['subformat=streamOptimized']), 'vmdk'],
  ['vdi', () => patternImage('disk-vdi-dynamic-v1.vdi', 'vdi'), 'vdi'],
  ['vhd', () => patternImage('disk-vhd-dynamic-v1.vhd', 'vpc', ['subformat=dynamic']), 'vpc'],
  ['vhdx', () => patternImage('disk-vhdx-dynamic-v1.vhdx', 'vhdx', ['subformat=dynamic']), 'vhdx'],
];

for (const [fmt, make, qfmt] of fixtures) {
  test(`openDisk detects and reads ${fmt}`, async () => {
    const file = await make();
    const r = await openDisk(file, { format: qfmt });
    try {
      assert.equal(r.format, fmt);
      await assertMatchesQemu(r, file, qfmt);
    } finally {
      await r.close();
    }
  });
}

test('openDisk reads an OVA through its VMDK', async () => {
  const { ova } = await makeOva();
  const r = await openDisk(ova);
  assert.equal(r.format, 'ova');
  await r.close();
});

test('openDisk refuses a declared format that is not the detected one', async () => {
  const file = await patternImage('disk-qcow2-v3-64K-v1.qcow2', 'qcow2', ['compat=1.1']);
  await assert.rejects(
    openDisk(file, { format: 'raw' }),
    (e) => e instanceof DiskError && e.code === 'UNSAFE_IMAGE' && /declared as raw but its bytes are qcow2/.test(e.message),
  );
  await assert.rejects(openDisk(file, { format: 'floppy' }), (e) => e instanceof DiskError && e.code === 'BAD_OPTION');
});

test('openDisk refuses an unsafe image naming the findings (backing file)', async () => {
  const base = await cached('disk-qcow2-base-v1.qcow2', async (tmp) => sh('qemu-img', ['create', '-q', '-f', 'qcow2', tmp, '1M']).then(() => undefined));
  const overlay = await cached('disk-qcow2-overlay-v1.qcow2', async (tmp) =>
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', base, tmp]).then(() => undefined),
  );
  await assert.rejects(openDisk(overlay), (e) => e instanceof DiskError && e.code === 'UNSAFE_IMAGE' && /BACKING_FILE/.test(e.message));
});

test('openDisk: a flat VMDK needs allowExtentDir; QED needs allowDeprecatedFormats', async () => {
  const dir = await cached('disk-vmdk-monolithicFlat-v1', async () => {
    throw new Error('made by vmdk.test.ts');
  }).catch(async () => {
    const d = await cached('disk-vmdk-monolithicFlat-open-v1', async (tmp) => {
      const { mkdirSync } = await import('node:fs');
      mkdirSync(tmp, { recursive: true });
      await sh('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=monolithicFlat', await patternRaw(), join(tmp, 'disk.vmdk')]);
    });
    return d;
  });
  const flat = join(dir, 'disk.vmdk');
  await assert.rejects(openDisk(flat), (e) => e instanceof DiskError && e.code === 'UNSAFE_IMAGE');
  const r = await openDisk(flat, { allowExtentDir: dirname(flat) });
  await assertMatchesQemu(r, flat, 'vmdk');
  await r.close();
  const qed = await patternImage('disk-qed-64K-v1.qed', 'qed');
  await assert.rejects(openDisk(qed), (e) => e instanceof DiskError && /UNSUPPORTED_FORMAT/.test(e.message));
  const q = await openDisk(qed, { allowDeprecatedFormats: true });
  await assertMatchesQemu(q, qed, 'qed');
  await q.close();
});

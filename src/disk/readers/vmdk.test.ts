import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { cached, sh } from '../../../test/support/qemu.js';
import { FileSource } from '../../io/file-source.js';
import { DiskError } from '../disk.js';
import { allExtents, assertMatchesQemu, patternImage, patternRaw } from '../../../test/support/disk-oracle.js';
import { openVmdk } from './vmdk.js';

for (const sub of ['monolithicSparse', 'streamOptimized']) {
  test(`vmdk ${sub}: reads and maps as qemu does`, async () => {
    const file = await patternImage(`disk-vmdk-${sub}-v1.vmdk`, 'vmdk', [`subformat=${sub}`]);
    const r = await openVmdk(await FileSource.open(file));
    try {
      assert.equal(r.format, 'vmdk');
      await assertMatchesQemu(r, file, 'vmdk');
      assert.ok(
        (await allExtents(r)).some((e) => e.kind === 'hole'),
        'unwritten grains are holes',
      );
    } finally {
      await r.close();
    }
  });
}

test('vmdk zeroed grains (zeroed_grain=on) read zero', async () => {
  const file = await cached('disk-vmdk-zeroed-v1.vmdk', async (tmp) => {
    await sh('qemu-img', ['create', '-q', '-f', 'vmdk', '-o', 'zeroed_grain=on', tmp, '2M']);
    await sh('qemu-io', ['-f', 'vmdk', '-c', 'write -P 0xab 0 1M', '-c', 'write -z 64k 128k', tmp]);
  });
  const r = await openVmdk(await FileSource.open(file));
  try {
    await assertMatchesQemu(r, file, 'vmdk');
  } finally {
    await r.close();
  }
});

for (const sub of ['monolithicFlat', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat']) {
  test(`vmdk ${sub}: refused by default, read from allowExtentDir`, async () => {
    const file = await cached(`disk-vmdk-${sub}-v1`, async (tmp) => {
      mkdirSync(tmp, { recursive: true });
      await sh('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'vmdk', '-o', `subformat=${sub}`, await patternRaw(), join(tmp, 'disk.vmdk')]);
    }).then((dir) => join(dir, 'disk.vmdk'));
    await assert.rejects(openVmdk(await FileSource.open(file)), (e) => e instanceof DiskError && e.code === 'UNSAFE_IMAGE' && /allowExtentDir/.test(e.message));
    const r = await openVmdk(await FileSource.open(file), { allowExtentDir: dirname(file) });
    try {
      await assertMatchesQemu(r, file, 'vmdk');
    } finally {
      await r.close();
    }
  });
}

test('vmdk descriptor naming a path outside the directory is refused', async () => {
  const file = await cached('disk-vmdk-escape-v1.vmdk', async (tmp) => {
    const { writeFileSync } = await import('node:fs');
    writeFileSync(tmp, '# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 2048 FLAT "../../etc/passwd" 0\n');
  });
  await assert.rejects(
    openVmdk(await FileSource.open(file), { allowExtentDir: dirname(file) }),
    (e) => e instanceof DiskError && /plain file name/.test(e.message),
  );
});

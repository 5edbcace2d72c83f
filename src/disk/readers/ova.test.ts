import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { cached, sh } from '../../../test/support/qemu.js';
import { FileSource } from '../../io/file-source.js';
import { DiskError } from '../disk.js';
import { patternImage, qemuRawBytes } from '../../../test/support/disk-oracle.js';
import { openOva } from './ova.js';

const OVF = `<?xml version="1.0"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
  <References><File ovf:id="file1" ovf:href="disk1.vmdk"/></References>
  <DiskSection><Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="5255225" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/></DiskSection>
</Envelope>
`;

export async function makeOva(): Promise<{ ova: string; vmdk: string }> {
  const vmdk = await patternImage('disk-vmdk-streamOptimized-v1.vmdk', 'vmdk', ['subformat=streamOptimized']);
  const ova = await cached('disk-ova-v1.ova', async (tmp) => {
    const dir = `${tmp}.d`;
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'vm.ovf'), OVF);
    copyFileSync(vmdk, join(dir, 'disk1.vmdk'));
    await sh('tar', ['--format=ustar', '-cf', tmp, '-C', dir, 'vm.ovf', 'disk1.vmdk']);
  });
  return { ova, vmdk };
}

test('ova: reads the VMDK inside the tar in place', async () => {
  const { ova, vmdk } = await makeOva();
  const expected = await qemuRawBytes(vmdk, 'vmdk');
  const r = await openOva(await FileSource.open(ova));
  try {
    assert.equal(r.format, 'ova');
    assert.equal(r.virtualSize, expected.length);
    assert.deepEqual(Buffer.from(await r.read(0, r.virtualSize)), expected);
  } finally {
    await r.close();
  }
});

test('ova without a disk is refused', async () => {
  const ova = await cached('disk-ova-nodisk-v1.ova', async (tmp) => {
    const dir = `${tmp}.d`;
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'vm.ovf'), OVF);
    await sh('tar', ['--format=ustar', '-cf', tmp, '-C', dir, 'vm.ovf']);
  });
  await assert.rejects(openOva(await FileSource.open(ova)), (e) => e instanceof DiskError && /no VMDK disk/.test(e.message));
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { finding } from '../../formats/findings.js';
import { withoutExternalDetails, withoutExternalName } from './external-names.js';

test('names of files outside the image are withheld; our advice and names inside the image stay', () => {
  const extent = withoutExternalName(
    finding(
      'VMDK_EXTENT_OUTSIDE',
      'VMDK extent refers to a file outside the image (absolute path "/tmp/u/ext.raw"); convert ("qemu-img convert -O vmdk -o subformat=streamOptimized")',
    ),
  );
  assert.doesNotMatch(extent.message, /\/tmp\/u|ext\.raw/);
  assert.match(extent.message, /a file outside the image; its name is not shown/);
  assert.match(extent.message, /"qemu-img convert -O vmdk -o subformat=streamOptimized"/);
  const bare = withoutExternalName(finding('BACKING_FILE', 'qcow2 image has a backing file ("base.raw", format raw); flatten it'));
  assert.doesNotMatch(bare.message, /base\.raw/);
  const windows = withoutExternalName(finding('OVA_MALFORMED', 'the OVF references "C:\\\\Users\\\\u\\\\disk.vmdk", which is not a file in the OVA'));
  assert.doesNotMatch(windows.message, /Users/);
  const member = finding('OVA_DIGEST_MISMATCH', 'SHA256 of "disk1.vmdk" in the OVA is 00, the manifest says 11');
  assert.equal(withoutExternalName(member), member);
});

test('inspection details keep the shape but not the external names', () => {
  const d = withoutExternalDetails({
    container: 'descriptor',
    extents: [{ type: 'FLAT', file: '/home/u/ext.raw', sectors: 2048 }],
    backingFile: '/home/u/base.raw',
    backingFormat: 'raw',
    parentLocator: { type: 'b04aefb7', entries: { relative_path: '..\\base.vhdx', absolute_win32_path: 'C:\\u\\base.vhdx' } },
    ova: { disks: [{ file: 'disk1.vmdk' }] },
  });
  assert.deepEqual(d, {
    container: 'descriptor',
    extents: [{ type: 'FLAT', file: '[not shown]', sectors: 2048 }],
    backingFile: '[not shown]',
    backingFormat: 'raw',
    parentLocator: { type: '[not shown]', entries: { relative_path: '[not shown]', absolute_win32_path: '[not shown]' } },
    ova: { disks: [{ file: 'disk1.vmdk' }] },
  });
});

/**
 * The oracle: for every image qemu-img can create, our format and virtual size equal
 * `qemu-img info --output=json`'s — read at random from the file (O(header)) and streamed through
 * the stream inspector, which must agree with each other too.
 */
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import { test } from 'node:test';
import { inspectFile } from '../src/inspect/inspect-file.js';
import { inspectStream } from '../src/inspect/inspect-stream.js';
import { patternedRaw, qemuConvert, qemuCreate, qemuInfo } from './support/qemu.js';

interface Case {
  name: string;
  qemuFormat: string;
  ours: string;
  subformat?: string;
  size: string;
  options?: string[];
  /** made by converting a patterned raw (real data in the image) instead of create */
  fromData?: boolean;
  compress?: boolean;
  /** images qemu-img makes that we must refuse (none of the plain ones) */
  refused?: boolean;
}

const CASES: Case[] = [
  { name: 'raw', qemuFormat: 'raw', ours: 'raw', size: '64M' },
  { name: 'qcow2-v2', qemuFormat: 'qcow2', ours: 'qcow2', size: '1G', options: ['compat=0.10'] },
  { name: 'qcow2-v3', qemuFormat: 'qcow2', ours: 'qcow2', size: '1G', options: ['compat=1.1'] },
  { name: 'qcow2-512', qemuFormat: 'qcow2', ours: 'qcow2', size: '100M', options: ['cluster_size=512'] },
  { name: 'qcow2-2m', qemuFormat: 'qcow2', ours: 'qcow2', size: '3G', options: ['cluster_size=2M'] },
  { name: 'qcow2-lazy', qemuFormat: 'qcow2', ours: 'qcow2', size: '1G', options: ['lazy_refcounts=on'] },
  { name: 'qcow2-l2ext', qemuFormat: 'qcow2', ours: 'qcow2', size: '1G', options: ['extended_l2=on,cluster_size=128k'] },
  { name: 'qcow2-zstd', qemuFormat: 'qcow2', ours: 'qcow2', size: '1G', options: ['compression_type=zstd'] },
  { name: 'qcow2-16t', qemuFormat: 'qcow2', ours: 'qcow2', size: '16T' },
  { name: 'qcow2-odd', qemuFormat: 'qcow2', ours: 'qcow2', size: '1000001K' },
  { name: 'qcow2-data', qemuFormat: 'qcow2', ours: 'qcow2', size: '8M', fromData: true },
  { name: 'qcow2-compressed', qemuFormat: 'qcow2', ours: 'qcow2', size: '8M', fromData: true, compress: true },
  { name: 'qcow', qemuFormat: 'qcow', ours: 'qcow', size: '1G' },
  { name: 'qed', qemuFormat: 'qed', ours: 'qed', size: '1G', refused: true },
  { name: 'vmdk-sparse', qemuFormat: 'vmdk', ours: 'vmdk', subformat: 'monolithicSparse', size: '1G' },
  { name: 'vmdk-stream', qemuFormat: 'vmdk', ours: 'vmdk', subformat: 'streamOptimized', size: '1G', options: ['subformat=streamOptimized'] },
  {
    name: 'vmdk-stream-data',
    qemuFormat: 'vmdk',
    ours: 'vmdk',
    subformat: 'streamOptimized',
    size: '8M',
    options: ['subformat=streamOptimized'],
    fromData: true,
  },
  { name: 'vmdk-1t', qemuFormat: 'vmdk', ours: 'vmdk', subformat: 'monolithicSparse', size: '1T' },
  { name: 'vdi-dynamic', qemuFormat: 'vdi', ours: 'vdi', size: '1G' },
  { name: 'vdi-static', qemuFormat: 'vdi', ours: 'vdi', size: '16M', options: ['static=on'] },
  { name: 'vhd-dynamic', qemuFormat: 'vpc', ours: 'vhd', subformat: 'dynamic', size: '1G' },
  { name: 'vhd-force-size', qemuFormat: 'vpc', ours: 'vhd', subformat: 'dynamic', size: '1000M', options: ['force_size=on'] },
  { name: 'vhd-fixed', qemuFormat: 'vpc', ours: 'vhd', subformat: 'fixed', size: '64M', options: ['subformat=fixed'] },
  { name: 'vhdx-dynamic', qemuFormat: 'vhdx', ours: 'vhdx', size: '1G' },
  { name: 'vhdx-fixed', qemuFormat: 'vhdx', ours: 'vhdx', size: '16M', options: ['subformat=fixed'] },
  { name: 'vhdx-1t', qemuFormat: 'vhdx', ours: 'vhdx', size: '1T' },
  { name: 'parallels', qemuFormat: 'parallels', ours: 'parallels', size: '1G' },
];

for (const c of CASES) {
  test(`qemu-img ${c.name}: format and virtual size agree, file and stream agree`, async () => {
    const file = c.fromData
      ? await qemuConvert(`oracle-${c.name}.img`, await patternedRaw('oracle-source-8m.raw', 8 << 20), c.qemuFormat, c.options ?? [], c.compress ? ['-c'] : [])
      : await qemuCreate(`oracle-${c.name}.img`, c.qemuFormat, c.size, c.options ?? []);
    // qemu's own probe does not see a fixed VHD (footer only at the end): name the format for it
    const info = await qemuInfo(file, c.qemuFormat);
    const r = await inspectFile(file);
    assert.equal(r.format, c.ours, JSON.stringify(r.findings));
    assert.equal(r.virtualSize, BigInt(info['virtual-size']));
    if (c.subformat) assert.equal(r.subformat, c.subformat);
    assert.equal(r.verdict, c.refused ? 'refused' : 'safe', JSON.stringify(r.findings));
    const s = await inspectStream(createReadStream(file, { highWaterMark: 65536 }));
    assert.equal(s.format, r.format);
    assert.equal(s.subformat, r.subformat);
    assert.equal(s.virtualSize, r.virtualSize);
    assert.deepEqual(s.findings.map((f) => f.code).sort(), r.findings.map((f) => f.code).sort());
    assert.equal(s.verdict, r.verdict);
  });
}

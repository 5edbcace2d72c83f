import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { qemuCheck, qemuCompare } from '../../../test/support/memory-disk.js';
import { sh } from '../../../test/support/qemu.js';
import { BufferSource } from '../../formats/byte-source.js';
import { inspectSource } from '../../formats/inspect-source.js';
import type { DiskError } from '../disk.js';
import { ovaWriter } from './ova.js';
import { writerFor } from '../disk-formats.js';
import { writerFixture } from './writer-cases.js';

const fx = writerFixture('ova');
const { disk } = fx;

test('ova: ovf first, streamOptimized vmdk, SHA256 manifest; tar and qemu agree; our inspector accepts it', async () => {
  const out = join(fx.dir, 'appliance.ova');
  await ovaWriter.write(disk, { kind: 'file', path: out }, { options: { cpus: '2', memory_mb: '2048' } });
  assert.deepEqual((await sh('tar', ['tf', out])).trim().split('\n'), ['appliance.ovf', 'appliance-disk1.vmdk', 'appliance.mf']);
  const x = join(fx.dir, 'x');
  await sh('mkdir', ['-p', x]);
  await sh('tar', ['xf', out, '-C', x]);
  const vmdk = join(x, 'appliance-disk1.vmdk');
  await qemuCompare(fx.expected, vmdk, 'vmdk');
  await qemuCheck(vmdk, 'vmdk');
  const mf = await readFile(join(x, 'appliance.mf'), 'utf8');
  for (const f of ['appliance.ovf', 'appliance-disk1.vmdk']) {
    const digest = createHash('sha256')
      .update(await readFile(join(x, f)))
      .digest('hex');
    assert.ok(mf.includes(`SHA256(${f})= ${digest}\n`), mf);
  }
  const ovf = await readFile(join(x, 'appliance.ovf'), 'utf8');
  assert.match(ovf, new RegExp(`ovf:size="${(await readFile(vmdk)).length}"`));
  assert.match(ovf, new RegExp(`ovf:capacity="${disk.virtualSize}"`));
  assert.match(ovf, /<rasd:VirtualQuantity>2048<\/rasd:VirtualQuantity>/);
  const r = await inspectSource(new BufferSource(await readFile(out)));
  assert.deepEqual([r.format, r.verdict], ['ova', 'safe'], JSON.stringify(r.findings));
  assert.equal(r.virtualSize, BigInt(disk.virtualSize));
  assert.deepEqual(
    (await readdir(fx.dir)).filter((f) => f.includes('.part')),
    [],
  );
});

test('ova: a stream target is refused; registry maps every format', async () => {
  await assert.rejects(ovaWriter.write(disk, { kind: 'stream', stream: createWriteStream(join(fx.dir, 's')) }), (e: DiskError) => e.code === 'UNSUPPORTED');
  for (const f of ['raw', 'qcow2', 'vmdk', 'vdi', 'vhd', 'vhdx', 'ova'] as const) assert.equal(writerFor(f).format, f);
  assert.throws(
    () => writerFor('qed'),
    (e: DiskError) => e.code === 'UNSUPPORTED',
  );
});

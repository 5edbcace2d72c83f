import assert from 'node:assert/strict';
import { createWriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { qemuCheck, qemuCompare, qemuSpotCheck } from '../../../test/support/memory-disk.js';
import { qemuInfo } from '../../../test/support/qemu.js';
import { BufferSource } from '../../formats/byte-source.js';
import { inspectSource } from '../../formats/inspect-source.js';
import type { DiskError } from '../disk.js';
import { vdiWriter } from './vdi.js';
import { sparseBigDisk, writerFixture } from './writer-cases.js';

const fx = writerFixture('vdi');
const { disk } = fx;

for (const isStatic of [false, true]) {
  const name = isStatic ? 'static' : 'dynamic';
  test(`vdi ${name}: identical, check clean, our inspector accepts it`, async () => {
    const out = join(fx.dir, `${name}.vdi`);
    const options: Record<string, string> = isStatic ? { static: 'on' } : {};
    await vdiWriter.write(disk, { kind: 'file', path: out }, { options });
    await qemuCompare(fx.expected, out, 'vdi');
    await qemuCheck(out, 'vdi');
    assert.equal((await qemuInfo(out, 'vdi'))['virtual-size'], disk.virtualSize);
    const r = await inspectSource(new BufferSource(await readFile(out)));
    assert.deepEqual([r.format, r.virtualSize, r.verdict], ['vdi', BigInt(disk.virtualSize), 'safe'], JSON.stringify(r.findings));
    if (isStatic) {
      const s = join(fx.dir, 'static-stream.vdi');
      await vdiWriter.write(disk, { kind: 'stream', stream: createWriteStream(s) }, { options });
      await qemuCompare(fx.expected, s, 'vdi');
      await qemuCheck(s, 'vdi');
    } else {
      await assert.rejects(vdiWriter.write(disk, { kind: 'stream', stream: createWriteStream(join(fx.dir, 'x')) }), (e: DiskError) => e.code === 'UNSUPPORTED');
    }
  });
}

test('vdi dynamic: 64 GiB sparse with 10 MiB data stays small', async () => {
  const big = sparseBigDisk(50);
  const out = await fx.writeSparse(vdiWriter, big, 'big.vdi');
  await qemuSpotCheck(big, out, 'vdi');
  await qemuCheck(out, 'vdi');
});

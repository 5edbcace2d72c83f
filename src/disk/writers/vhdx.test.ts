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
import { vhdxWriter } from './vhdx.js';
import { sparseBigDisk, writerFixture } from './writer-cases.js';

const fx = writerFixture('vhdx');
const { disk } = fx;

for (const block_size of [undefined, '1M', '32M']) {
  test(`vhdx block_size ${block_size ?? 'default'}: identical, check clean, our inspector accepts it`, async () => {
    const out = join(fx.dir, `d-${block_size}.vhdx`);
    await vhdxWriter.write(disk, { kind: 'file', path: out }, { options: block_size ? { block_size } : {} });
    await qemuCompare(fx.expected, out, 'vhdx');
    await qemuCheck(out, 'vhdx');
    assert.equal((await qemuInfo(out, 'vhdx'))['virtual-size'], disk.virtualSize);
    const r = await inspectSource(new BufferSource(await readFile(out)));
    assert.deepEqual([r.format, r.virtualSize, r.verdict], ['vhdx', BigInt(disk.virtualSize), 'safe'], JSON.stringify(r.findings));
  });
}

test('vhdx: a stream target is refused; bad block size refused', async () => {
  await assert.rejects(vhdxWriter.write(disk, { kind: 'stream', stream: createWriteStream(join(fx.dir, 'x')) }), (e: DiskError) => e.code === 'UNSUPPORTED');
  await assert.rejects(
    vhdxWriter.write(disk, { kind: 'file', path: join(fx.dir, 'y') }, { options: { block_size: '3M' } }),
    (e: DiskError) => e.code === 'BAD_OPTION',
  );
});

test('vhdx: 64 GiB sparse with 10 MiB data (1 MiB blocks) stays small; several chunk-ratio groups', async () => {
  const big = sparseBigDisk(60);
  const out = await fx.writeSparse(vhdxWriter, big, 'big.vhdx', { options: { block_size: '1M' } });
  await qemuCheck(out, 'vhdx');
  await qemuSpotCheck(big, out, 'vhdx');
});

import assert from 'node:assert/strict';
import { createWriteStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { MemoryDisk, qemuCheck, qemuCompare, qemuSpotCheck, sampleDisk } from '../../../test/support/memory-disk.js';
import { qemuInfo } from '../../../test/support/qemu.js';
import type { DiskError } from '../disk.js';
import { qcow2Writer } from './qcow2.js';
import { sparseBigDisk, writerFixture } from './writer-cases.js';

const fx = writerFixture('qcow2');
const { disk } = fx;

async function verify(out: string, size = disk.virtualSize): Promise<Record<string, unknown>> {
  await qemuCompare(fx.expected, out, 'qcow2');
  await qemuCheck(out, 'qcow2');
  const info = await qemuInfo(out, 'qcow2');
  assert.equal(info['virtual-size'], size);
  return info['format-specific']?.data ?? {};
}

for (const [name, options] of [
  ['default 64 KiB clusters', {}],
  ['4 KiB clusters (20 L2 tables)', { cluster_size: '4K' }],
  ['512-byte clusters', { cluster_size: '512' }],
  ['2 MiB clusters', { cluster_size: '2M' }],
] as const) {
  test(`qcow2 ${name}: qemu-img compare identical, check clean`, async () => {
    const out = join(fx.dir, `plain-${Object.values(options).join('')}.qcow2`);
    const before = disk.holeBytesRead;
    await qcow2Writer.write(disk, { kind: 'file', path: out }, { options });
    assert.equal(disk.holeBytesRead, before, 'read a hole');
    const data = await verify(out);
    assert.equal(data['compat'], '1.1');
    assert.equal(data['refcount-bits'], 16);
  });
}

for (const [cluster_size, compression_type] of [
  ['64K', 'zlib'],
  ['4K', 'zlib'],
  ['64K', 'zstd'],
  ['4K', 'zstd'],
] as const) {
  test(`qcow2 -c ${compression_type} (${cluster_size}): compressed, identical, check clean, deterministic`, async () => {
    const a = join(fx.dir, `c-${cluster_size}-${compression_type}-a.qcow2`);
    const b = join(fx.dir, `c-${cluster_size}-${compression_type}-b.qcow2`);
    await qcow2Writer.write(disk, { kind: 'file', path: a }, { compress: true, options: { cluster_size, compression_type } });
    await qcow2Writer.write(disk, { kind: 'file', path: b }, { compress: true, options: { cluster_size, compression_type } });
    const data = await verify(a);
    assert.equal(data['compression-type'], compression_type);
    const { sh } = await import('../../../test/support/qemu.js');
    await sh('cmp', [a, b]);
    const plain = join(fx.dir, `c-${cluster_size}-plain.qcow2`);
    await qcow2Writer.write(disk, { kind: 'file', path: plain }, { options: { cluster_size } });
    assert.ok((await stat(a)).size < (await stat(plain)).size, 'compressed is smaller');
    // qemu's own convert of our compressed image reads back the same bytes
    const back = join(fx.dir, `c-${cluster_size}-${compression_type}-back.raw`);
    await sh('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', a, back]);
    await sh('cmp', [fx.expected, back]);
  });
}

test('qcow2 stream: sequential layout, identical, check clean', async () => {
  const out = join(fx.dir, 'stream.qcow2');
  const ws = createWriteStream(out);
  const r = await qcow2Writer.write(disk, { kind: 'stream', stream: ws }, { options: { cluster_size: '4K' } });
  assert.equal(r.bytesWritten, (await stat(out)).size);
  await verify(out);
});

test('qcow2 stream refuses -c; unknown option or compression type refused', async () => {
  await assert.rejects(
    qcow2Writer.write(disk, { kind: 'stream', stream: createWriteStream(join(fx.dir, 'x')) }, { compress: true }),
    (e: DiskError) => e.code === 'UNSUPPORTED',
  );
  await assert.rejects(
    qcow2Writer.write(disk, { kind: 'file', path: join(fx.dir, 'z.qcow2') }, { compress: true, options: { compression_type: 'lz4' } }),
    (e: DiskError) => e.code === 'BAD_OPTION',
  );
  await assert.rejects(
    qcow2Writer.write(disk, { kind: 'file', path: join(fx.dir, 'z.qcow2') }, { options: { clustersize: '4K' } }),
    (e: DiskError) => e.code === 'BAD_OPTION',
  );
  await assert.rejects(
    qcow2Writer.write(disk, { kind: 'file', path: join(fx.dir, 'z.qcow2') }, { options: { cluster_size: '3000' } }),
    (e: DiskError) => e.code === 'BAD_OPTION',
  );
  assert.deepEqual(
    (await readdir(fx.dir)).filter((f) => f.startsWith('z.qcow2')),
    [],
  );
});

test('qcow2: 64 GiB sparse source with 10 MiB of data → about 10 MiB allocated', async () => {
  const big = sparseBigDisk(20, 512);
  big.put(64 * 1024 ** 3 - 4096, MemoryDisk.random(4096, 99));
  const out = await fx.writeSparse(qcow2Writer, big, 'big.qcow2');
  await qemuSpotCheck(big, out, 'qcow2');
  await qemuCheck(out, 'qcow2');
  assert.equal((await qemuInfo(out, 'qcow2'))['virtual-size'], 64 * 1024 ** 3);
  const { sh } = await import('../../../test/support/qemu.js');
  const map = JSON.parse(await sh('qemu-img', ['map', '--output=json', '-f', 'qcow2', out])) as { data: boolean; length: number }[];
  assert.equal(
    map.filter((m) => m.data).reduce((n, m) => n + m.length, 0),
    (16 + 9 * 17 + 1) * 65536,
    'only the clusters data touches are allocated',
  );
});

test('qcow2 -c: a source that fails mid-way leaves no .part and no worker behind', async () => {
  const failing = sampleDisk();
  let reads = 0;
  const read = failing.read.bind(failing);
  failing.read = async (o, l) => {
    if (++reads === 3) throw new Error('disk went away');
    return read(o, l);
  };
  const out = join(fx.dir, 'failing.qcow2');
  await assert.rejects(qcow2Writer.write(failing, { kind: 'file', path: out }, { compress: true }), /disk went away/);
  assert.deepEqual(
    (await readdir(fx.dir)).filter((f) => f.startsWith('failing')),
    [],
  );
});

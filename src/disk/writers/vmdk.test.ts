import assert from 'node:assert/strict';
import { createWriteStream } from 'node:fs';
import { readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { MemoryDisk, qemuCheck, qemuCompare, qemuSpotCheck } from '../../../test/support/memory-disk.js';
import { qemuInfo, sh } from '../../../test/support/qemu.js';
import { BufferSource } from '../../formats/byte-source.js';
import { inspectSource } from '../../formats/inspect-source.js';
import { vmdkWriter } from './vmdk.js';
import { writerFixture } from './writer-cases.js';

const fx = writerFixture('vmdk');
const { disk } = fx;

async function verify(out: string, subformat: string): Promise<void> {
  await qemuCompare(fx.expected, out, 'vmdk');
  await qemuCheck(out, 'vmdk');
  const info = await qemuInfo(out, 'vmdk');
  assert.equal(info['virtual-size'], disk.virtualSize);
  assert.equal((info['format-specific']?.data as { 'create-type': string })['create-type'], subformat);
}

test('vmdk streamOptimized (default) to a file: identical, check clean, deterministic grains', async () => {
  const out = join(fx.dir, 'so.vmdk');
  await vmdkWriter.write(disk, { kind: 'file', path: out });
  await verify(out, 'streamOptimized');
  // our own inspector accepts it (footer with the real GD, markers)
  const bytes = await readFile(out);
  const r = await inspectSource(new BufferSource(bytes));
  assert.deepEqual(
    [r.format, r.subformat, r.virtualSize, r.verdict],
    ['vmdk', 'streamOptimized', BigInt(disk.virtualSize), 'safe'],
    JSON.stringify(r.findings),
  );
  const back = join(fx.dir, 'so-back.raw');
  await sh('qemu-img', ['convert', '-f', 'vmdk', '-O', 'raw', out, back]);
  await sh('cmp', [fx.expected, back]);
});

test('vmdk streamOptimized to a stream equals the file', async () => {
  const a = join(fx.dir, 'so-file.vmdk');
  const b = join(fx.dir, 'so-stream.vmdk');
  await vmdkWriter.write(disk, { kind: 'file', path: a });
  await vmdkWriter.write(disk, { kind: 'stream', stream: createWriteStream(b) });
  await verify(b, 'streamOptimized');
  // identical but for the random CID in the descriptor (sector 1)
  const [x, y] = [await readFile(a), await readFile(b)];
  assert.equal(x.length, y.length);
  assert.deepEqual(x.subarray(1024), y.subarray(1024));
});

test('vmdk monolithicSparse: identical, check clean', async () => {
  const out = join(fx.dir, 'ms.vmdk');
  await vmdkWriter.write(disk, { kind: 'file', path: out }, { options: { subformat: 'monolithicSparse' } });
  await verify(out, 'monolithicSparse');
  await assert.rejects(
    vmdkWriter.write(disk, { kind: 'stream', stream: createWriteStream(join(fx.dir, 'x')) }, { options: { subformat: 'monolithicSparse' } }),
  );
});

test('vmdk: 64 GiB sparse with 10 MiB data → small file, both subformats', async () => {
  const big = new MemoryDisk(64 * 1024 ** 3);
  for (let i = 0; i < 10; i++) big.put(i * 6 * 1024 ** 3, MemoryDisk.random(1024 * 1024, 30 + i));
  for (const subformat of ['streamOptimized', 'monolithicSparse']) {
    const out = join(fx.dir, `big-${subformat}.vmdk`);
    await vmdkWriter.write(big, { kind: 'file', path: out }, { options: { subformat } });
    const st = await stat(out);
    assert.ok(st.blocks * 512 < 12 * 1024 * 1024, `${subformat}: allocated ${st.blocks * 512}`);
    await qemuCheck(out, 'vmdk');
    await qemuSpotCheck(big, out, 'vmdk');
    assert.equal((await qemuInfo(out, 'vmdk'))['virtual-size'], 64 * 1024 ** 3);
    await rm(out);
  }
});

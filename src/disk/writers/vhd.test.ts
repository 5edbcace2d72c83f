import assert from 'node:assert/strict';
import { createWriteStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { qemuCompare, qemuSpotCheck } from '../../../test/support/memory-disk.js';
import { qemuInfo, sh } from '../../../test/support/qemu.js';
import { BufferSource } from '../../formats/byte-source.js';
import { inspectSource } from '../../formats/inspect-source.js';
import type { DiskError } from '../disk.js';
import { vhdSizing, vhdWriter } from './vhd.js';
import { sparseBigDisk, writerFixture } from './writer-cases.js';

const fx = writerFixture('vhd');
const { disk } = fx;

/** what `qemu-img create -f vpc` makes for the same size: the oracle for sizing and geometry */
async function qemuSize(size: number, options: string[]): Promise<number> {
  const f = join(fx.dir, `q-${size}-${options.join('')}.vhd`);
  await sh('qemu-img', ['create', '-q', '-f', 'vpc', ...options.flatMap((o) => ['-o', o]), f, String(size)]);
  return (await qemuInfo(f, 'vpc'))['virtual-size'];
}

for (const [name, options, streamable] of [
  ['dynamic', {}, false],
  ['fixed', { subformat: 'fixed' }, true],
  ['dynamic force_size', { force_size: 'on' }, false],
  ['fixed force_size', { subformat: 'fixed', force_size: 'on' }, true],
] as const) {
  test(`vhd ${name}: identical, virtual size as qemu-img create makes it`, async () => {
    const out = join(fx.dir, `${name.replace(' ', '-')}.vhd`);
    await vhdWriter.write(disk, { kind: 'file', path: out }, { options });
    await qemuCompare(fx.expected, out, 'vpc');
    const info = await qemuInfo(out, 'vpc');
    const qemuOptions = Object.entries(options).map(([k, v]) => `${k}=${v}`);
    assert.equal(info['virtual-size'], await qemuSize(disk.virtualSize, qemuOptions));
    const r = await inspectSource(new BufferSource(await readFile(out)));
    assert.deepEqual([r.format, r.virtualSize, r.verdict], ['vhd', BigInt(info['virtual-size']), 'safe'], JSON.stringify(r.findings));
    if (streamable) {
      const s = join(fx.dir, `${name.replace(' ', '-')}-stream.vhd`);
      await vhdWriter.write(disk, { kind: 'stream', stream: createWriteStream(s) }, { options });
      await qemuCompare(fx.expected, s, 'vpc');
      assert.equal((await stat(s)).size, (await stat(out)).size);
    } else {
      await assert.rejects(
        vhdWriter.write(disk, { kind: 'stream', stream: createWriteStream(join(fx.dir, 'x')) }, { options }),
        (e: DiskError) => e.code === 'UNSUPPORTED',
      );
    }
  });
}

test('vhd geometry and size match qemu for awkward sizes', async () => {
  for (const size of [1024 * 512, 10 * 1024 ** 2 + 512, 127 * 1024 ** 3 + 12345 * 512, 300 * 1024 ** 3]) {
    assert.equal(vhdSizing(size, false).size, await qemuSize(size, []), `size ${size}`);
  }
});

test('vhd azure=on: fixed, size rounded up to whole MiB, exact', async () => {
  const out = join(fx.dir, 'azure.vhd');
  await vhdWriter.write(disk, { kind: 'file', path: out }, { options: { azure: 'on' } });
  const info = await qemuInfo(out, 'vpc');
  assert.equal(info['virtual-size'], 41 * 1024 * 1024);
  assert.equal((await stat(out)).size, 41 * 1024 * 1024 + 512);
  await qemuCompare(fx.expected, out, 'vpc');
  await assert.rejects(
    vhdWriter.write(disk, { kind: 'file', path: out }, { options: { azure: 'on', subformat: 'dynamic' } }),
    (e: DiskError) => e.code === 'BAD_OPTION',
  );
});

test('vhd dynamic: 64 GiB sparse with 10 MiB data stays small', async () => {
  const big = sparseBigDisk(40);
  const out = await fx.writeSparse(vhdWriter, big, 'big.vhd');
  await qemuSpotCheck(big, out, 'vpc');
  assert.ok((await qemuInfo(out, 'vpc'))['virtual-size'] >= 64 * 1024 ** 3);
});

import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { cached, sh } from '../../test/support/qemu.js';
import { FileSource } from '../io/file-source.js';
import { compareDisks } from './compare.js';
import type { DiskReader } from './disk.js';
import { patternImage, patternRaw } from '../../test/support/disk-oracle.js';
import { openQcow2 } from './readers/qcow2.js';
import { openRaw } from './readers/raw.js';
import { openVmdk } from './readers/vmdk.js';

const run = promisify(execFile);

/** qemu-img compare: exit 0 identical, 1 different (stdout names the offset). */
async function qemuCompare(a: string, fa: string, b: string, fb: string, strict = false): Promise<{ identical: boolean; offset?: number }> {
  try {
    await run('qemu-img', ['compare', '-U', ...(strict ? ['-s'] : []), '-f', fa, '-F', fb, a, b]);
    return { identical: true };
  } catch (e) {
    const out = String((e as { stdout?: string }).stdout ?? '');
    const m = /offset (\d+)/.exec(out);
    return m ? { identical: false, offset: Number(m[1]) } : { identical: false };
  }
}

async function both<T>(a: Promise<DiskReader>, b: Promise<DiskReader>, fn: (a: DiskReader, b: DiskReader) => Promise<T>): Promise<T> {
  const [x, y] = await Promise.all([a, b]);
  try {
    return await fn(x, y);
  } finally {
    await x.close();
    await y.close();
  }
}

test('compare: the same disk in qcow2 and vmdk is identical, as qemu-img compare says', async () => {
  const q = await patternImage('disk-qcow2-v3-64K-v1.qcow2', 'qcow2', ['compat=1.1']);
  const v = await patternImage('disk-vmdk-streamOptimized-v1.vmdk', 'vmdk', ['subformat=streamOptimized']);
  const res = await both(openQcow2(await FileSource.open(q)), openVmdk(await FileSource.open(v)), compareDisks);
  assert.deepEqual(res, { identical: true });
  assert.deepEqual(await qemuCompare(q, 'qcow2', v, 'vmdk'), { identical: true });
});

test('compare: one changed byte is found at the offset qemu-img compare reports', async () => {
  const q = await patternImage('disk-qcow2-v3-64K-v1.qcow2', 'qcow2', ['compat=1.1']);
  const changed = await cached('disk-compare-changed-v1.qcow2', async (tmp) => {
    copyFileSync(q, tmp);
    await sh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x77 4456448 512', tmp]); // 4.25 MiB: a hole in the original
  });
  const res = await both(openQcow2(await FileSource.open(q)), openQcow2(await FileSource.open(changed)), compareDisks);
  const qemu = await qemuCompare(q, 'qcow2', changed, 'qcow2');
  assert.equal(res.identical, false);
  assert.equal(res.firstDifference, 4456448);
  assert.equal(qemu.offset, res.firstDifference);
});

test('compare: a larger disk equals a smaller one when its extra area reads zeros (strict: not)', async () => {
  const small = await patternImage('disk-qcow2-v3-64K-v1.qcow2', 'qcow2', ['compat=1.1']);
  const grown = await cached('disk-compare-grown-v1.qcow2', async (tmp) => {
    copyFileSync(small, tmp);
    await sh('qemu-img', ['resize', '-q', '-f', 'qcow2', tmp, '16M']);
  });
  const dirty = await cached('disk-compare-grown-dirty-v1.qcow2', async (tmp) => {
    copyFileSync(grown, tmp);
    await sh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x01 12M 4k', tmp]);
  });
  const loose = await both(openQcow2(await FileSource.open(small)), openQcow2(await FileSource.open(grown)), compareDisks);
  assert.equal(loose.identical, true);
  assert.deepEqual(loose.sizeMismatch, { a: 5255680, b: 16 * 1024 * 1024 });
  assert.equal((await qemuCompare(small, 'qcow2', grown, 'qcow2')).identical, true);
  const strict = await both(openQcow2(await FileSource.open(small)), openQcow2(await FileSource.open(grown)), (a, b) => compareDisks(a, b, { strict: true }));
  assert.equal(strict.identical, false);
  assert.equal((await qemuCompare(small, 'qcow2', grown, 'qcow2', true)).identical, false);
  const extra = await both(openQcow2(await FileSource.open(small)), openQcow2(await FileSource.open(dirty)), compareDisks);
  assert.equal(extra.identical, false);
  assert.equal(extra.firstDifference, 12 * 1024 * 1024);
  assert.equal((await qemuCompare(small, 'qcow2', dirty, 'qcow2')).offset, 12 * 1024 * 1024);
});

test('compare: raw against qcow2 of the same bytes, and a 64 GiB sparse pair in well under a second', async () => {
  const raw = await patternRaw();
  const q = await patternImage('disk-qcow2-v3-64K-v1.qcow2', 'qcow2', ['compat=1.1']);
  const res = await both(Promise.resolve(openRaw(await FileSource.open(raw))), openQcow2(await FileSource.open(q)), compareDisks);
  assert.equal(res.identical, true, 'the 455 bytes qemu pads a raw file with read zeros');
  const big = await cached('disk-qcow2-64g-sparse-v2.qcow2', async (tmp) => {
    await sh('qemu-img', ['create', '-q', '-f', 'qcow2', tmp, '64G']);
    await sh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 4M', '-c', 'write -P 0x5b 20G 4M', '-c', 'write -P 0x5c 65534M 2M', tmp]);
  });
  const t0 = performance.now();
  const same = await both(openQcow2(await FileSource.open(big)), openQcow2(await FileSource.open(big)), compareDisks);
  const ms = performance.now() - t0;
  assert.equal(same.identical, true);
  assert.ok(ms < 3000, `comparing two 64 GiB sparse disks took ${ms.toFixed(0)} ms`);
});

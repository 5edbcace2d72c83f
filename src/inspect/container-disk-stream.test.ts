/**
 * A containerDisk layer as a stream of its disk, on real layers: ../shared/peers/
 * make-containerdisk.sh builds them (gzip, zstd, none) around a qcow2 made by qemu-img; the disk
 * that comes out is the disk that went in, byte for byte. Hostile layers fail the stream, the
 * decoders stop when the consumer stops, and a layer that is not a containerDisk says so.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { makeContainerDisk } from '../../test/support/containerdisk.js';
import { patternedRaw, qemuConvert } from '../../test/support/qemu.js';
import { ContainerDiskError } from '../formats/container-disk.js';
import { DecompressionLimitError } from '../io/decompress.js';
import { openContainerDiskLayer } from './container-disk-stream.js';

const work = mkdtempSync(join(tmpdir(), 'imago-cdstream-'));
after(() => rmSync(work, { recursive: true, force: true }));

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

async function drain(body: NodeJS.ReadableStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of body as AsyncIterable<Buffer>) parts.push(c);
  return Buffer.concat(parts);
}

test('make-containerdisk.sh layers (gzip, zstd, none) give back the qcow2 byte for byte, named and sized by the tar header', async () => {
  const disk = await qemuConvert('cd-stream.qcow2', await patternedRaw('cd-stream.raw', 24 << 20), 'qcow2');
  const want = readFileSync(disk);
  for (const compression of ['gzip', 'zstd', 'none'] as const) {
    const built = makeContainerDisk(disk, join(work, `oci-${compression}`), compression);
    const s = await openContainerDiskLayer(createReadStream(built.layerPath));
    assert.equal(s.fileName, 'disk.qcow2');
    assert.equal(s.path, 'disk/disk.qcow2');
    assert.equal(s.size, want.length);
    assert.deepEqual(s.compression, compression === 'none' ? [] : [compression]);
    assert.equal(sha(await drain(s.body)), sha(want), compression);
  }
});

test('a second disk after the first fails the stream (TWO_DISKS) instead of ending it', async () => {
  const dir = join(work, 'two');
  execFileSync('mkdir', ['-p', join(dir, 'disk')]);
  execFileSync('dd', ['if=/dev/urandom', `of=${join(dir, 'disk', 'a.img')}`, 'bs=64k', 'count=8', 'status=none']);
  execFileSync('dd', ['if=/dev/urandom', `of=${join(dir, 'disk', 'b.img')}`, 'bs=64k', 'count=1', 'status=none']);
  const layer = gzipSync(execFileSync('tar', ['-C', dir, '-cf', '-', 'disk/a.img', 'disk/b.img']));
  const s = await openContainerDiskLayer(Readable.from([layer]));
  assert.equal(s.fileName, 'a.img');
  await assert.rejects(drain(s.body), (e: unknown) => e instanceof ContainerDiskError && e.code === 'TWO_DISKS');
});

test('a layer that is not a containerDisk (no disk/, or not a tar) is told apart: isContainerDisk false', async () => {
  const dir = join(work, 'plain');
  execFileSync('mkdir', ['-p', join(dir, 'etc')]);
  execFileSync('cp', ['/etc/hostname', join(dir, 'etc', 'hostname')]);
  const plain = gzipSync(execFileSync('tar', ['-C', dir, '-cf', '-', 'etc']));
  await assert.rejects(
    openContainerDiskLayer(Readable.from([plain])),
    (e: unknown) => e instanceof ContainerDiskError && e.code === 'NOT_A_CONTAINER_DISK' && !e.isContainerDisk,
  );
  await assert.rejects(
    openContainerDiskLayer(Readable.from([gzipSync(randomBytes(10000))])),
    (e: unknown) => e instanceof ContainerDiskError && !e.isContainerDisk,
  );
});

test('a gzip bomb in the layer is stopped by the one bounded decoder (DecompressionLimitError through the body)', async () => {
  // a disk of 64 MiB of zeros, gzipped: ~64 KiB of layer that expands 1000:1
  const dir = join(work, 'bomb');
  execFileSync('mkdir', ['-p', join(dir, 'disk')]);
  execFileSync('truncate', ['-s', '64M', join(dir, 'disk', 'zeros.raw')]);
  const layer = gzipSync(execFileSync('tar', ['-C', dir, '-cf', '-', 'disk'], { maxBuffer: 128 << 20 }));
  const s = await openContainerDiskLayer(Readable.from([layer]), { limits: { ratioFloorBytes: 1 << 20, zeroBombRatio: 100 } });
  await assert.rejects(drain(s.body), (e: unknown) => e instanceof DecompressionLimitError);
});

test('a consumer that stops early stops the zstd decoder (no child left, no hang)', async () => {
  const disk = await patternedRaw('cd-stream-stop.raw', 32 << 20);
  const built = makeContainerDisk(disk, join(work, 'oci-stop'), 'zstd');
  const s = await openContainerDiskLayer(createReadStream(built.layerPath));
  for await (const _ of s.body) break;
  assert.ok(s.body.destroyed);
});

/**
 * containerDisk layers through the real pipeline: pushed layers (made by ../shared/peers/
 * make-containerdisk.sh around qemu-img disks) run through the one ingest path into a real
 * filesystem store, and the verdict decides; pulled layers are generated from a stored blob and
 * checked with GNU tar (byte-identical extraction), skopeo (an OCI layout copied with every
 * digest verified) and our own reader (the round trip).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { makeContainerDisk, writeOciLayout } from '../../../test/support/containerdisk.js';
import { patternedRaw, qemuConvert, qemuCreate, qemuInfo } from '../../../test/support/qemu.js';
import { containerDiskConfig, containerDiskManifest } from '../../formats/container-disk.js';
import { FsBlobStore } from '../../store/fs-blob-store.js';
import { ingest } from '../images/ingest.js';
import { stageBlob } from '../images/stage-blob.js';
import { containerDiskLayerDigest, containerDiskPull, openContainerDiskPush } from './container-disk-layers.js';
import { declaredDiskFormat, decideVmLayer, vmLayerRefusal, type DeclaredFormat } from './vm-layer-verdict.js';

const work = mkdtempSync(join(tmpdir(), 'imago-cdlayers-'));
after(() => rmSync(work, { recursive: true, force: true }));
let n = 0;
const fresh = (what: string) => {
  const d = join(work, `${what}-${n++}`);
  mkdirSync(d, { recursive: true });
  return d;
};
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const LIMITS = { maxImageBytes: 1 << 30, md5: false };

async function blobsIn(store: FsBlobStore): Promise<number> {
  let k = 0;
  for await (const _ of store.list()) k++;
  for await (const _ of store.listStaging()) k++;
  return k;
}

/** The door's push path: open the layer, ingest its disk with the declared format as the claim, decide. */
async function push(store: FsBlobStore, layerPath: string, annotations: Record<string, string> = {}) {
  const disk = await openContainerDiskPush(createReadStream(layerPath), { maxDiskBytes: LIMITS.maxImageBytes });
  const declared = declaredDiskFormat({ annotations }) as DeclaredFormat | undefined;
  const outcome = await ingest(disk.body, store, { ...LIMITS, claimedFormat: declared?.format, announcedSize: disk.size });
  return { disk, declared, outcome, decision: decideVmLayer(declared, outcome.report) };
}

test('a containerDisk push (gzip and zstd) stores the qcow2 itself through the one ingest path; qemu-img reads the stored blob', async () => {
  const qcow2 = await qemuConvert('cdl-push.qcow2', await patternedRaw('cdl-push.raw', 24 << 20), 'qcow2');
  for (const compression of ['gzip', 'zstd'] as const) {
    const store = new FsBlobStore(fresh('store'));
    const built = makeContainerDisk(qcow2, fresh(`oci-${compression}`), compression);
    const { outcome, decision, declared } = await push(store, built.layerPath, { 'org.openstack.glance.disk_format': 'qcow2' });
    assert.deepEqual(declared, { format: 'qcow2', source: 'annotation "org.openstack.glance.disk_format"' });
    assert.equal(outcome.kind, 'stored');
    assert.ok(outcome.kind === 'stored');
    assert.equal(outcome.blob.digest, `sha256:${sha(readFileSync(qcow2))}`);
    assert.equal(outcome.report.format, 'qcow2');
    assert.deepEqual(decision, { accept: true });
    const info = await qemuInfo(await store.localPath(outcome.blob.digest));
    assert.equal(info.format, 'qcow2');
    assert.equal(info['virtual-size'], 24 << 20);
  }
});

test('a containerDisk whose qcow2 has a backing file: ingest refuses, MANIFEST_INVALID names BACKING_FILE, nothing is stored', async () => {
  const base = await qemuCreate('cdl-base.qcow2', 'qcow2', '16M');
  const overlay = await qemuCreate('cdl-overlay.qcow2', 'qcow2', '16M', [`backing_file=${base}`, 'backing_fmt=qcow2']);
  const store = new FsBlobStore(fresh('store'));
  const { outcome, decision } = await push(store, makeContainerDisk(overlay, fresh('oci'), 'gzip').layerPath);
  assert.equal(outcome.kind, 'refused');
  assert.ok(!decision.accept);
  assert.equal(decision.code, 'MANIFEST_INVALID');
  assert.match(decision.message, /^the disk layer is refused: BACKING_FILE: /);
  assert.equal(await blobsIn(store), 0);
});

test('declared vs detected: a raw disk declared qcow2 is refused (FORMAT_MISMATCH); undeclared, the same layer is a raw image', async () => {
  const raw = await patternedRaw('cdl-raw.raw', 4 << 20);
  const layer = makeContainerDisk(raw, fresh('oci'), 'zstd').layerPath;
  const store = new FsBlobStore(fresh('store'));
  const { outcome, decision } = await push(store, layer, { 'org.openstack.glance.disk_format': 'qcow2' });
  assert.equal(outcome.kind, 'refused');
  assert.ok(!decision.accept);
  assert.match(decision.message, /FORMAT_MISMATCH: .*declared as qcow2 but its bytes are raw/);
  assert.equal(await blobsIn(store), 0);
  // make-containerdisk.sh names every disk disk.qcow2: the name declares nothing (KubeVirt probes the bytes)
  const plain = await push(store, layer);
  assert.equal(plain.outcome.kind, 'stored');
  assert.equal(plain.outcome.report.format, 'raw');
  assert.deepEqual(plain.decision, { accept: true });
  // the same report, checked by the verdict alone (a door that did not pass the claim to ingest)
  const d = decideVmLayer({ format: 'qcow2', source: 'annotation "org.openstack.glance.disk_format"' }, { format: 'raw', findings: [] });
  assert.ok(!d.accept);
  assert.match(d.message, /declares qcow2 \(annotation "org.openstack.glance.disk_format"\) but its bytes are raw/);
});

test('two disks in a containerDisk: the ingest fails with the reader’s error, vmLayerRefusal makes it MANIFEST_INVALID, nothing is kept', async () => {
  const dir = fresh('two');
  mkdirSync(join(dir, 'disk'));
  writeFileSync(join(dir, 'disk', 'a.qcow2'), readFileSync(await qemuConvert('cdl-two.qcow2', await patternedRaw('cdl-two.raw', 4 << 20), 'qcow2')));
  writeFileSync(join(dir, 'disk', 'b.raw'), Buffer.alloc(4096, 1));
  const layer = join(dir, 'layer.tar.gz');
  execFileSync('bash', ['-c', `tar -C ${dir} -cf - disk/a.qcow2 disk/b.raw | gzip -1 > ${layer}`]);
  const store = new FsBlobStore(fresh('store'));
  const e = await push(store, layer).then(
    () => assert.fail('accepted'),
    (err: unknown) => err,
  );
  const refusal = vmLayerRefusal(e);
  assert.equal(refusal?.code, 'MANIFEST_INVALID');
  assert.match(refusal!.message, /^TWO_DISKS: containerDisk layer holds more than one disk: "disk\/a.qcow2" and "disk\/b.raw"/);
  assert.equal(await blobsIn(store), 0);
});

test('an ordinary container layer is not a VM image: NOT_A_CONTAINER_DISK is no refusal (vmLayerRefusal undefined)', async () => {
  const dir = fresh('plain');
  mkdirSync(join(dir, 'etc'));
  writeFileSync(join(dir, 'etc', 'motd'), 'hello\n');
  const layer = join(dir, 'layer.tar.gz');
  execFileSync('bash', ['-c', `tar -C ${dir} -cf - etc | gzip > ${layer}`]);
  const e = await openContainerDiskPush(createReadStream(layer)).then(
    () => assert.fail('accepted'),
    (err: unknown) => err,
  );
  assert.equal(vmLayerRefusal(e), undefined);
});

test('a pull generates the layer from the stored blob: GNU tar extracts the same qcow2; two digests are equal; ranges are slices', async () => {
  const qcow2 = await qemuConvert('cdl-pull.qcow2', await patternedRaw('cdl-pull.raw', 16 << 20), 'qcow2');
  const bytes = readFileSync(qcow2);
  const store = new FsBlobStore(fresh('store'));
  const staged = await stageBlob(store, createReadStream(qcow2), { md5: false });
  const pull = containerDiskPull(store, staged.blob, 'alma-9.qcow2');
  assert.equal(pull.size, 512 + 512 + Math.ceil(bytes.length / 512) * 512 + 1024);
  const layer = Buffer.concat(await (await pull.open()).toArray());
  assert.equal(layer.length, pull.size);
  const dir = fresh('x');
  writeFileSync(join(dir, 'layer.tar'), layer);
  execFileSync('tar', ['-xf', join(dir, 'layer.tar'), '-C', dir]);
  assert.equal(sha(readFileSync(join(dir, 'disk', 'alma-9.qcow2'))), sha(bytes));
  const d1 = await containerDiskLayerDigest(pull);
  const d2 = await containerDiskLayerDigest(containerDiskPull(store, staged.blob, 'alma-9.qcow2'));
  assert.equal(d1, d2);
  assert.equal(d1, `sha256:${sha(layer)}`);
  for (const range of [
    { start: 0, end: 99 },
    { start: 1000, end: 200_000 },
    { start: pull.size - 1500, end: pull.size - 1 },
  ]) {
    const got = Buffer.concat(await (await pull.open(range)).toArray());
    assert.deepEqual(got, layer.subarray(range.start, range.end + 1));
  }
});

test('a generated containerDisk is an OCI image skopeo copies (digests verified) and our push reader reads back to the same blob', async () => {
  const qcow2 = await qemuConvert('cdl-rt.qcow2', await patternedRaw('cdl-rt.raw', 8 << 20), 'qcow2');
  const store = new FsBlobStore(fresh('store'));
  const staged = await stageBlob(store, createReadStream(qcow2), { md5: false });
  const pull = containerDiskPull(store, staged.blob, 'disk.qcow2');
  const layerDigest = await containerDiskLayerDigest(pull);
  const config = containerDiskConfig(layerDigest, 'x86_64');
  const manifest = containerDiskManifest(config, { digest: layerDigest, size: pull.size });
  const oci = fresh('oci');
  writeOciLayout(oci, manifest, [Buffer.concat(await (await pull.open()).toArray()), config.bytes]);
  // skopeo verifies every blob it reads; into an OCI layout it gzips the uncompressed layer itself
  const copy = fresh('copy');
  execFileSync('skopeo', ['copy', '--quiet', `oci:${oci}:v1`, `oci:${copy}:v1`]);
  const info = JSON.parse(execFileSync('skopeo', ['inspect', '--raw', `oci:${copy}:v1`], { encoding: 'utf8' })) as {
    layers: { mediaType: string; digest: string }[];
  };
  const inspected = JSON.parse(execFileSync('skopeo', ['inspect', `oci:${copy}:v1`], { encoding: 'utf8' })) as { Architecture: string };
  assert.equal(inspected.Architecture, 'amd64');
  assert.equal(info.layers[0]!.mediaType, 'application/vnd.oci.image.layer.v1.tar+gzip');
  // push the copy back: the same disk, the same blob, stored once
  const { outcome } = await push(store, join(copy, 'blobs', 'sha256', info.layers[0]!.digest.slice(7)));
  assert.ok(outcome.kind === 'stored');
  assert.equal(outcome.blob.digest, staged.blob.digest);
  // and the uncompressed copy (dir: keeps layers as they are) is our layer, digest for digest
  const plain = fresh('dir');
  execFileSync('skopeo', ['copy', '--quiet', `oci:${oci}:v1`, `dir:${plain}`]);
  assert.equal(sha(readFileSync(join(plain, layerDigest.slice(7)))), layerDigest.slice(7));
});

test('a stored blob that is missing or damaged fails the pull with BLOB_NOT_FOUND', async () => {
  const store = new FsBlobStore(fresh('store'));
  const staged = await stageBlob(store, createReadStream(await patternedRaw('cdl-lost.raw', 1 << 20)), { md5: false });
  await assert.rejects(containerDiskPull(store, { ...staged.blob, sizeBytes: staged.blob.sizeBytes + 1 }, 'd.img').open(), /damaged in storage/);
  await store.delete(staged.blob.digest);
  await assert.rejects(containerDiskPull(store, staged.blob, 'd.img').open(), /missing from storage/);
  // the head alone needs no blob
  const head = await containerDiskPull(store, staged.blob, 'd.img').open({ start: 0, end: 511 });
  assert.equal(Buffer.concat(await head.toArray()).length, 512);
});

test("the layer's own read error comes out as itself (not the peeler's wrapper): vmLayerRefusal leaves it to the door", async () => {
  const broken = (async function* () {
    yield Buffer.alloc(10);
    throw new Error('storage went away');
  })();
  const e = await openContainerDiskPush(broken).then(
    () => assert.fail('accepted'),
    (err: unknown) => err,
  );
  assert.ok(e instanceof Error);
  assert.equal(e.message, 'storage went away');
  assert.equal(vmLayerRefusal(e), undefined);
});

/**
 * The pull forms of a stored image, from EGI's reference push: the oras artifact carries the
 * stored blob itself with EGI's annotations (skopeo copies it out of an OCI layout, every digest
 * verified); the containerDisk is deterministic (two builds, one digest; a cached layer digest
 * gives the same manifest) and extracts with GNU tar to the stored qcow2.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { writeOciLayout } from '../../../test/support/containerdisk.js';
import { patternedRaw, qemuConvert, qemuInfo } from '../../../test/support/qemu.js';
import { EMPTY_CONFIG } from '../../formats/container-disk.js';
import { FsBlobStore } from '../../store/fs-blob-store.js';
import { stageBlob } from '../images/stage-blob.js';
import { annotationsToImage } from './vm-image-mapping.js';
import { artifactForm, containerDiskForm, containerDiskFormat, type PulledImage } from './vm-image-pulls.js';

const work = mkdtempSync(join(tmpdir(), 'imago-pulls-'));
after(() => rmSync(work, { recursive: true, force: true }));
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const egi = JSON.parse(readFileSync(join(import.meta.dirname, 'fixtures', 'egi-alma-9.annotations.json'), 'utf8')) as Record<string, Record<string, string>>;

async function egiImage(store: FsBlobStore): Promise<{ image: PulledImage; bytes: Buffer }> {
  const qcow2 = await qemuConvert('pulls-alma.qcow2', await patternedRaw('pulls-alma.raw', 8 << 20), 'qcow2');
  const staged = await stageBlob(store, createReadStream(qcow2), { md5: false });
  const mapped = annotationsToImage({ manifest: egi.$manifest, layer: { ...egi['alma-9.qcow2'], 'org.opencontainers.image.title': 'alma-9.qcow2' } });
  const image: PulledImage = {
    id: 'img-1',
    name: 'alma',
    digest: staged.blob.digest,
    storedSize: staged.blob.sizeBytes,
    inspection: { format: 'qcow2', details: {}, findings: [] },
    minDisk: 0,
    minRam: 0,
    properties: {},
    ...mapped.attributes,
  };
  return { image, bytes: readFileSync(qcow2) };
}

test("the artifact form of EGI's image: the stored qcow2 as the one layer titled alma-9.qcow2, EGI's annotations on layer and manifest", async () => {
  const store = new FsBlobStore(join(work, 'store-a'));
  const { image, bytes } = await egiImage(store);
  const form = artifactForm(image);
  assert.equal(form.layer.digest, `sha256:${sha(bytes)}`);
  const m = JSON.parse(Buffer.from(form.manifest.bytes).toString()) as {
    layers: { annotations: Record<string, string> }[];
    annotations: Record<string, string>;
  };
  assert.equal(m.layers[0]!.annotations['org.opencontainers.image.title'], 'alma-9.qcow2');
  for (const [k, v] of Object.entries({ ...egi.$manifest, ...egi['alma-9.qcow2'] })) {
    assert.equal(m.annotations[k], v, k);
    assert.equal(m.layers[0]!.annotations[k], v, k);
  }
  assert.equal(artifactForm(image).manifest.digest, form.manifest.digest, 'deterministic');
  // skopeo copies the artifact out of a layout (it verifies every digest it reads)
  const oci = join(work, 'oci-a');
  writeOciLayout(oci, form.manifest, [bytes, Buffer.from('{}')]);
  assert.equal(sha(Buffer.from('{}')), EMPTY_CONFIG.digest.slice(7));
  const out = join(work, 'dir-a');
  execFileSync('skopeo', ['copy', '--quiet', `oci:${oci}:v1`, `dir:${out}`]);
  assert.equal(sha(readFileSync(join(out, sha(bytes)))), sha(bytes));
});

test('the containerDisk form: deterministic, the cached layer digest gives the same manifest, GNU tar extracts the stored qcow2', async () => {
  const store = new FsBlobStore(join(work, 'store-c'));
  const { image, bytes } = await egiImage(store);
  assert.deepEqual(containerDiskFormat(image), { format: 'qcow2', needsVariant: false });
  const a = await containerDiskForm(store, image);
  const b = await containerDiskForm(store, image, undefined, a.layer.digest);
  assert.equal(a.fileName, 'alma-9.qcow2');
  assert.equal(b.manifest.digest, a.manifest.digest);
  assert.equal(b.config.digest, a.config.digest);
  const layer = Buffer.concat(await (await a.layer.open()).toArray());
  assert.equal(`sha256:${sha(layer)}`, a.layer.digest);
  const dir = join(work, 'x');
  mkdirSync(dir);
  writeFileSync(join(dir, 'layer.tar'), layer);
  execFileSync('tar', ['-xf', join(dir, 'layer.tar'), '-C', dir]);
  assert.equal(sha(readFileSync(join(dir, 'disk', 'alma-9.qcow2'))), sha(bytes));
  assert.equal((await qemuInfo(join(dir, 'disk', 'alma-9.qcow2'))).format, 'qcow2');
  const cfg = JSON.parse(Buffer.from(a.config.bytes).toString()) as { architecture: string };
  assert.equal(cfg.architecture, 'amd64');
  // a vmdk image needs its qcow2 variant; an ISO is served as raw bytes
  assert.deepEqual(containerDiskFormat({ ...image, inspection: { format: 'vmdk', details: {}, findings: [] } }), { format: 'qcow2', needsVariant: true });
  assert.deepEqual(containerDiskFormat({ ...image, inspection: { format: 'iso', details: {}, findings: [] } }), { format: 'raw', needsVariant: false });
  assert.throws(() => artifactForm({ ...image, digest: undefined }), /has no data yet/);
});

/**
 * Which push is a VM image, what its disk declares, and the decision against what ingest found.
 * Manifests: the one make-containerdisk.sh writes (read from its OCI layout), the shape `oras push
 * --annotation-file` writes for EGI's file (oras docs "Manifest Annotations"), an ordinary
 * container image, a Helm chart and a signature.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { makeContainerDisk } from '../../../test/support/containerdisk.js';
import { patternedRaw } from '../../../test/support/qemu.js';
import { finding } from '../../formats/findings.js';
import { DomainError } from '../errors.js';
import { classifyVmManifest, declaredDiskFormat, decideVmLayer, vmLayerRefusal } from './vm-layer-verdict.js';

const work = mkdtempSync(join(tmpdir(), 'imago-vmverdict-'));
after(() => rmSync(work, { recursive: true, force: true }));

const EGI_ORAS = {
  schemaVersion: 2,
  mediaType: 'application/vnd.oci.image.manifest.v1+json',
  artifactType: 'application/vnd.unknown.artifact.v1',
  config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a', size: 2 },
  layers: [
    {
      mediaType: 'application/vnd.oci.image.layer.v1.tar',
      digest: 'sha256:0000000000000000000000000000000000000000000000000000000000000000',
      size: 1,
      annotations: { 'org.openstack.glance.disk_format': 'qcow2', 'org.opencontainers.image.title': 'alma-9.qcow2' },
    },
  ],
  annotations: { 'org.opencontainers.image.source': 'https://github.com/EGI-Federation/fedcloud-vmi-templates' },
};

test('classification: an oras disk file, a containerDisk (make-containerdisk.sh), an ordinary image, a Helm chart, a signature, two disks', async () => {
  assert.deepEqual(classifyVmManifest(EGI_ORAS), { kind: 'disk-file', layer: 0 });
  // a title with a disk extension is enough; so is a disk media type
  assert.deepEqual(
    classifyVmManifest({
      ...EGI_ORAS,
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', annotations: { 'org.opencontainers.image.title': 'x.vmdk' } }],
    }),
    {
      kind: 'disk-file',
      layer: 0,
    },
  );
  assert.deepEqual(classifyVmManifest({ layers: [{ mediaType: 'text/plain' }, { mediaType: 'application/x-qemu-disk' }] }), { kind: 'disk-file', layer: 1 });
  const built = makeContainerDisk(await patternedRaw('verdict.raw', 1 << 20), join(work, 'oci'), 'gzip');
  assert.deepEqual(classifyVmManifest(built.manifest), { kind: 'container-disk', layer: 0 });
  const busybox = {
    config: { mediaType: 'application/vnd.docker.container.image.v1+json' },
    layers: [{ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip' }, { mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip' }],
  };
  assert.deepEqual(classifyVmManifest(busybox), { kind: 'container-disk', layer: 1 }, 'a candidate: the layer reader decides (NOT_A_CONTAINER_DISK → plain)');
  const helm = {
    config: { mediaType: 'application/vnd.cncf.helm.config.v1+json' },
    layers: [{ mediaType: 'application/vnd.cncf.helm.chart.content.v1.tar+gzip' }],
  };
  assert.deepEqual(classifyVmManifest(helm), { kind: 'other' });
  const signature = {
    artifactType: 'application/vnd.dev.cosign.artifact.sig.v1+json',
    config: { mediaType: 'application/vnd.oci.empty.v1+json' },
    layers: [{ mediaType: 'application/vnd.dev.cosign.simplesigning.v1+json' }],
  };
  assert.deepEqual(classifyVmManifest(signature), { kind: 'other' });
  const two = classifyVmManifest({
    layers: [
      { mediaType: 'application/vnd.oci.image.layer.v1.tar', annotations: { 'org.opencontainers.image.title': 'a.qcow2' } },
      { mediaType: 'application/vnd.oci.image.layer.v1.tar', annotations: { 'org.opencontainers.image.title': 'b.qcow2' } },
    ],
  });
  assert.ok('code' in two);
  assert.equal(two.code, 'MANIFEST_INVALID');
  assert.match(two.message, /2 disk layers \(a.qcow2, b.qcow2\)/);
  // a plain file next to the disk (a checksum list) does not make two disks
  assert.deepEqual(
    classifyVmManifest({
      layers: [
        { mediaType: 'application/vnd.oci.image.layer.v1.tar', annotations: { 'org.opencontainers.image.title': 'SHA256SUMS' } },
        { mediaType: 'application/vnd.oci.image.layer.v1.tar', annotations: { 'org.opencontainers.image.title': 'alma-9.qcow2' } },
      ],
    }),
    { kind: 'disk-file', layer: 1 },
  );
});

test('declared format: the annotation or a disk media type; two that disagree are MANIFEST_INVALID; a file name declares nothing', () => {
  assert.deepEqual(declaredDiskFormat({ annotations: { 'org.openstack.glance.disk_format': 'QCOW2' }, mediaType: 'application/vnd.oci.image.layer.v1.tar' }), {
    format: 'qcow2',
    source: 'annotation "org.openstack.glance.disk_format"',
  });
  assert.deepEqual(declaredDiskFormat({ mediaType: 'application/x-vmdk-disk' }), { format: 'vmdk', source: 'media type application/x-vmdk-disk' });
  assert.equal(declaredDiskFormat({ mediaType: 'application/vnd.oci.image.layer.v1.tar' }), undefined, "oras's media type for any file declares nothing");
  assert.deepEqual(declaredDiskFormat({ annotations: { 'org.openstack.glance.disk_format': 'gpt' }, mediaType: 'application/x-raw-disk-image' }), {
    format: 'gpt',
    source: 'annotation "org.openstack.glance.disk_format"',
  });
  const conflict = declaredDiskFormat({ annotations: { 'org.openstack.glance.disk_format': 'raw' }, mediaType: 'application/x-qemu-disk' });
  assert.ok(conflict && 'code' in conflict);
  assert.match(
    conflict.message,
    /declares two formats: raw \(annotation "org.openstack.glance.disk_format"\) and qcow2 \(media type application\/x-qemu-disk\)/,
  );
});

test('the decision: verdict findings first, then declared vs detected (raw accepts an ISO, nothing accepts qcow2 as raw)', () => {
  assert.deepEqual(decideVmLayer({ format: 'qcow2', source: 's' }, { format: 'qcow2', findings: [], verdict: 'safe' }), { accept: true });
  assert.deepEqual(decideVmLayer({ format: 'raw', source: 's' }, { format: 'iso', findings: [] }), { accept: true });
  assert.deepEqual(decideVmLayer(undefined, { format: 'vmdk', findings: [] }), { accept: true });
  const asRaw = decideVmLayer({ format: 'raw', source: 'annotation "org.openstack.glance.disk_format"' }, { format: 'qcow2', findings: [] });
  assert.ok(!asRaw.accept);
  assert.equal(asRaw.findings?.[0]?.code, 'FORMAT_MISMATCH');
  const findings = [
    finding('DATA_FILE', 'qcow2 image references an external data file'),
    finding('POLYGLOT', 'also an ISO'),
    finding('ENCRYPTED', 'facts', 'info'),
  ];
  const d = decideVmLayer(undefined, { format: 'qcow2', findings, verdict: 'refused' });
  assert.ok(!d.accept);
  assert.equal(d.message, 'the disk layer is refused: DATA_FILE: qcow2 image references an external data file (and 1 more: POLYGLOT)');
});

test('errors out of a push become MANIFEST_INVALID, or nothing when they are not the manifest’s fault', () => {
  const unsafe = new DomainError('UNSAFE_IMAGE', 'image refused', { findings: [finding('BACKING_FILE', 'qcow2 image has a backing file')] });
  assert.equal(vmLayerRefusal(unsafe)?.message, 'the disk layer is refused: BACKING_FILE: qcow2 image has a backing file');
  assert.equal(vmLayerRefusal(new DomainError('QUOTA_EXCEEDED', 'over quota')), undefined);
  assert.equal(vmLayerRefusal(new Error('ECONNRESET')), undefined);
  assert.match(vmLayerRefusal(new DomainError('EMPTY_IMAGE', 'the upload is empty'))!.message, /empty/);
});

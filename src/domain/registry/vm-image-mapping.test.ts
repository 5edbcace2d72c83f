/**
 * Annotations ⇄ image, with EGI's documented annotation file for `oras push alma-9.qcow2`
 * (fixtures/egi-alma-9.annotations.json, as published) as the reference case: the annotations an
 * oras push of it puts on the manifest and the layer become the image's attributes and properties,
 * and a pull gives the same annotations back.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { DomainError } from '../errors.js';
import type { ImageAttributes } from '../images/image.js';
import { annotationsToImage, annotationKeyOfProperty, imageFileName, imageToAnnotations, type AnnotatedImage } from './vm-image-mapping.js';

const egi = JSON.parse(readFileSync(join(import.meta.dirname, 'fixtures', 'egi-alma-9.annotations.json'), 'utf8')) as Record<string, Record<string, string>>;

/** What `oras push --annotation-file` makes of the file: `$manifest` on the manifest (plus oras's own `created`), the file's entry plus its title on its layer. */
const pushed = {
  manifest: { ...egi.$manifest, 'org.opencontainers.image.created': '2025-06-10T12:00:00Z' },
  layer: { ...egi['alma-9.qcow2'], 'org.opencontainers.image.title': 'alma-9.qcow2' },
};

function asImage(attributes: Partial<ImageAttributes>): AnnotatedImage {
  return { minDisk: 0, minRam: 0, properties: {}, ...attributes } as AnnotatedImage;
}

function refused(a: Parameters<typeof annotationsToImage>[0], pattern: RegExp, annotation?: string): void {
  assert.throws(
    () => annotationsToImage(a),
    (e: unknown) =>
      e instanceof DomainError && e.code === 'INVALID_REQUEST' && pattern.test(e.message) && (annotation === undefined || e.details.annotation === annotation),
  );
}

test("EGI's alma-9.qcow2 annotation file: Glance keys become the image's attributes, EGI and OCI keys its properties", () => {
  const m = annotationsToImage(pushed);
  assert.deepEqual(m.attributes, {
    diskFormat: 'qcow2',
    containerFormat: 'bare',
    architecture: 'x86_64',
    osDistro: 'alma',
    osVersion: '9',
    osType: 'linux',
    properties: {
      'eu.egi.cloud.image.title': 'EGI Alma 9 image',
      'eu.egi.cloud.tag': '2025-06-10-7b98c834',
      'org.opencontainers.image.created': '2025-06-10T12:00:00Z',
      'org.opencontainers.image.revision': '7b98c834862f2e7e342fad7f9e175ea8c74aa4f3',
      'org.opencontainers.image.source': 'https://github.com/EGI-Federation/fedcloud-vmi-templates',
      'org.opencontainers.image.title': 'alma-9.qcow2',
    },
  });
  assert.equal(m.fileName, 'alma-9.qcow2');
  assert.equal(m.title, 'EGI Alma 9 image');
  assert.equal(m.declaredDiskFormat, 'qcow2');
  assert.deepEqual(m.overridden, []);
});

test('a pull gives back the annotations of the push (the file title travels on the layer)', () => {
  const m = annotationsToImage(pushed);
  const back = imageToAnnotations(asImage(m.attributes));
  const expected: Record<string, string> = { ...pushed.manifest, ...pushed.layer };
  delete expected['org.opencontainers.image.title'];
  assert.deepEqual(back, Object.fromEntries(Object.entries(expected).sort(([a], [b]) => (a < b ? -1 : 1))));
  assert.equal(imageFileName({ name: 'alma', diskFormat: 'qcow2', properties: m.attributes.properties! }), 'alma-9.qcow2');
});

test('other Glance properties, min_disk/min_ram and the description; the layer wins over the manifest', () => {
  const m = annotationsToImage({
    manifest: { 'org.openstack.glance.os_version': '8', 'eu.egi.cloud.description': 'from the manifest' },
    layer: {
      'org.openstack.glance.os_version': '9',
      'org.openstack.glance.os_admin_user': 'almalinux',
      'org.openstack.glance.hw_firmware_type': 'uefi',
      'org.openstack.glance.min_disk': '20',
      'org.openstack.glance.min_ram': '2048',
    },
  });
  assert.deepEqual(m.attributes, {
    description: 'from the manifest',
    osVersion: '9',
    minDisk: 20,
    minRam: 2048,
    properties: { os_admin_user: 'almalinux', hw_firmware_type: 'uefi' },
  });
  assert.deepEqual(m.overridden, ['org.openstack.glance.os_version']);
  assert.deepEqual(imageToAnnotations(asImage(m.attributes)), {
    'eu.egi.cloud.description': 'from the manifest',
    'org.openstack.glance.hw_firmware_type': 'uefi',
    'org.openstack.glance.min_disk': '20',
    'org.openstack.glance.min_ram': '2048',
    'org.openstack.glance.os_admin_user': 'almalinux',
    'org.openstack.glance.os_version': '9',
  });
});

test('refusals name the annotation: unknown vocabulary, bad numbers and formats, reserved Glance fields, keys and values over the limits', () => {
  refused(
    { layer: { 'org.openstack.glance.os_distro': 'plan9' } },
    /^annotation "org.openstack.glance.os_distro": "plan9" is not a known os_distro/,
    'org.openstack.glance.os_distro',
  );
  refused(
    { layer: { 'org.openstack.glance.hw_firmware_type': 'coreboot' } },
    /^annotation "org.openstack.glance.hw_firmware_type": /,
    'org.openstack.glance.hw_firmware_type',
  );
  refused({ layer: { 'org.openstack.glance.disk_format': 'qcow3' } }, /^annotation "org.openstack.glance.disk_format": field "diskFormat" must be one of/);
  refused({ layer: { 'org.openstack.glance.min_disk': '-1' } }, /must be a whole number/);
  refused({ manifest: { 'org.openstack.glance.visibility': 'public' } }, /reserved field "visibility"/);
  refused({ manifest: { 'org.openstack.glance.name': 'x' } }, /reserved field "name"/);
  refused({ manifest: { 'com.example/with space': 'x' } }, /^annotation "com.example\/with space": property key/);
  refused({ manifest: { 'eu.egi.cloud.description': 'd'.repeat(4097) } }, /^annotation "eu.egi.cloud.description": field "description" is longer than 4096/);
  refused(
    { manifest: { 'eu.egi.cloud.tag': 't'.repeat(65536) } },
    /^annotation "eu.egi.cloud.tag": property "eu.egi.cloud.tag" must be a string \(up to 65535/,
  );
  const many = Object.fromEntries(Array.from({ length: 129 }, (_, i) => [`com.example.k${i}`, 'v']));
  refused({ manifest: many }, /at most 128 properties/);
});

test('property keys as annotation keys; the file name of a pull', () => {
  assert.equal(annotationKeyOfProperty('os_admin_user'), 'org.openstack.glance.os_admin_user');
  assert.equal(annotationKeyOfProperty('hw:cpu_policy'), 'org.openstack.glance.hw:cpu_policy');
  assert.equal(annotationKeyOfProperty('owner_specified.openstack.md5'), 'org.openstack.glance.owner_specified.openstack.md5');
  assert.equal(annotationKeyOfProperty('eu.egi.cloud.tag'), 'eu.egi.cloud.tag');
  assert.equal(annotationKeyOfProperty('org.openstack.glance.os_distro'), 'org.openstack.glance.os_distro');
  assert.equal(imageFileName({ name: 'Ubuntu 24.04 (noble)', diskFormat: 'qcow2', properties: {} }), 'Ubuntu-24.04-noble.qcow2');
  assert.equal(imageFileName({ name: 'win.iso', diskFormat: 'iso', properties: {} }), 'win.iso');
  assert.equal(imageFileName({ name: 'x', diskFormat: undefined, properties: {} }), 'x.img');
  assert.equal(imageFileName({ name: 'x', diskFormat: 'raw', properties: { 'org.opencontainers.image.title': '../../etc/passwd' } }), 'passwd');
  // served as another format (a containerDisk of a vmdk image is its qcow2 variant): the extension follows
  assert.equal(imageFileName({ name: 'x', diskFormat: 'vmdk', properties: { 'org.opencontainers.image.title': 'win2022.vmdk' } }, 'qcow2'), 'win2022.qcow2');
  assert.equal(imageFileName({ name: 'noble', diskFormat: 'qcow2', properties: { 'org.opencontainers.image.title': 'noble.img' } }), 'noble.img');
  assert.equal(imageFileName({ name: 'disk.vmdk', diskFormat: 'vmdk', properties: {} }, 'qcow2'), 'disk.qcow2');
});

/**
 * A pushed VM image becomes an Imago image (issue 10 §3), over real HTTP against a real server,
 * SQLite and PostgreSQL: EGI's reference push (an `alma-9.qcow2` made by qemu-img, pushed as oras
 * pushes it, with EGI's published annotation file) → a ready image through REST with the Glance and
 * EGI properties and the blob's sha256; a re-push of the tag replaces it; a containerDisk pushed by
 * skopeo → a ready image whose virtual size is qemu-img's; hostile layers (a backing file, a raw
 * disk declared qcow2, a containerDisk tar with `../` or two disks) → MANIFEST_INVALID naming the
 * finding, no tag, no image; an ordinary container layer → a plain manifest, no image.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { makeContainerDisk } from './support/containerdisk.js';
import { OCI_EMPTY, OCI_MANIFEST, OciClient, sha256 } from './support/oci-client.js';
import { patternedRaw, qemuConvert, qemuCreate, qemuInfo } from './support/qemu.js';
import { apiRequest, startTestServer, type Dialect, type TestServer } from './support/server.js';

const run = promisify(execFile);
const EGI = JSON.parse(readFileSync(resolve(import.meta.dirname, '..', 'src', 'domain', 'registry', 'fixtures', 'egi-alma-9.annotations.json'), 'utf8')) as {
  $manifest: Record<string, string>;
  'alma-9.qcow2': Record<string, string>;
};
const TITLE = 'org.opencontainers.image.title';
const LAYER_TAR = 'application/vnd.oci.image.layer.v1.tar';
const ORAS_ARTIFACT = 'application/vnd.unknown.artifact.v1';

for (const dialect of ['sqlite', 'postgres'] as Dialect[]) {
  describe(`VM images pushed over OCI (${dialect})`, () => {
    let s: TestServer;
    let pusher: OciClient;
    let work: string;
    let creds: string;

    before(async () => {
      s = await startTestServer({ dialect });
      assert.equal((await apiRequest(s, 'POST', '/api/v1/projects', { name: 'egi' })).status, 201);
      const token = (await apiRequest(s, 'POST', '/api/v1/tokens', { name: 'pusher', project: 'egi', role: 'writer', user: 'petra' })).json!.token as string;
      pusher = new OciClient(s.url, token);
      creds = `petra:${token}`;
      work = mkdtempSync(join(tmpdir(), 'imago-ocivm-'));
    });
    after(async () => {
      await s?.stop();
      if (work) rmSync(work, { recursive: true, force: true });
    });

    /** The images an OCI reference made, as REST lists them (any state). */
    const imagesOf = async (reference: string) => {
      const r = await apiRequest(s, 'GET', `/api/v1/images?project=egi&property=${encodeURIComponent(`imago.oci.reference=${reference}`)}`);
      assert.equal(r.status, 200, r.text);
      return (r.json!.images ?? []) as Record<string, any>[];
    };
    const countBlobs = async () => {
      let n = 0;
      for await (const b of s.app.store.list()) if (b) n++;
      return n;
    };
    const allImages = async () => ((await apiRequest(s, 'GET', '/api/v1/images?project=egi&limit=1000')).json!.images ?? []) as Record<string, any>[];
    const tagsOf = async (repo: string) => {
      const r = await pusher.req('GET', `/v2/${repo}/tags/list`);
      return r.status === 200 ? ((r.json.tags ?? []) as string[]) : [];
    };

    /** What `oras push --annotation-file` sends: the empty config, the file as one layer, annotations on both. */
    async function orasPush(
      repo: string,
      tag: string,
      file: Buffer,
      layerAnnotations: Record<string, string>,
      manifestAnnotations: Record<string, string> = {},
    ) {
      const config = await pusher.pushBlob(repo, '{}');
      const layer = await pusher.pushBlob(repo, file);
      const manifest = {
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        artifactType: ORAS_ARTIFACT,
        config: { mediaType: OCI_EMPTY, digest: config, size: 2, data: 'e30=' },
        layers: [{ mediaType: LAYER_TAR, digest: layer, size: file.length, annotations: layerAnnotations }],
        annotations: { 'org.opencontainers.image.created': '2025-06-10T12:00:00Z', ...manifestAnnotations },
      };
      return { layer, put: await pusher.putManifest(repo, tag, manifest, OCI_MANIFEST) };
    }

    /** An image manifest (OCI image config) over one tar layer: what a container engine pushes. */
    async function imagePush(repo: string, tag: string, layerBytes: Buffer, mediaType: string) {
      const cfgBytes = JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } });
      const config = await pusher.pushBlob(repo, cfgBytes);
      const layer = await pusher.pushBlob(repo, layerBytes);
      const manifest = {
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config, size: Buffer.byteLength(cfgBytes) },
        layers: [{ mediaType, digest: layer, size: layerBytes.length }],
      };
      return pusher.putManifest(repo, tag, manifest, OCI_MANIFEST);
    }

    test("EGI's reference push (alma-9.qcow2 with EGI's annotation file) → a ready image with the Glance and EGI properties, the same sha256; a re-push replaces it", async () => {
      const qcow2 = await qemuConvert('ocivm-alma-9.qcow2', await patternedRaw('ocivm-alma-9.raw', 32 << 20), 'qcow2');
      const bytes = readFileSync(qcow2);
      const { layer, put } = await orasPush('egi/alma-9', '9', bytes, { [TITLE]: 'alma-9.qcow2', ...EGI['alma-9.qcow2'] }, EGI.$manifest);
      assert.equal(put.status, 201, put.body.toString());
      assert.deepEqual(await tagsOf('egi/alma-9'), ['9']);

      const [img, ...more] = await imagesOf('egi/alma-9:9');
      assert.equal(more.length, 0);
      assert.ok(img);
      assert.equal(img.name, 'alma-9:9');
      assert.equal(img.project, 'egi');
      assert.equal(img.state, 'ready');
      assert.equal(img.owner, 'petra');
      assert.equal(img.digest, layer, 'the image is the pushed blob: same sha256');
      assert.equal(img.checksums.sha512, createHash('sha512').update(bytes).digest('hex'));
      assert.equal(img.storedSize, bytes.length);
      assert.equal(img.virtualSize, (await qemuInfo(qcow2))['virtual-size']);
      assert.equal(img.inspection.format, 'qcow2');
      assert.equal(img.diskFormat, 'qcow2');
      assert.equal(img.containerFormat, 'bare');
      assert.equal(img.architecture, 'x86_64');
      assert.equal(img.osDistro, 'alma');
      assert.equal(img.osType, 'linux');
      assert.equal(img.osVersion, '9');
      assert.deepEqual(img.properties, {
        'eu.egi.cloud.image.title': 'EGI Alma 9 image',
        'eu.egi.cloud.tag': '2025-06-10-7b98c834',
        'org.opencontainers.image.title': 'alma-9.qcow2',
        'org.opencontainers.image.revision': EGI.$manifest['org.opencontainers.image.revision'],
        'org.opencontainers.image.source': EGI.$manifest['org.opencontainers.image.source'],
        'org.opencontainers.image.created': '2025-06-10T12:00:00Z',
        'imago.oci.reference': 'egi/alma-9:9',
      });
      // the file through REST is the pushed file
      const file = await fetch(`${s.url}/api/v1/images/${img.id}/file`, { headers: { authorization: `Bearer ${s.token}` } });
      assert.equal(file.status, 200);
      assert.equal(sha256(Buffer.from(await file.arrayBuffer())), layer);

      // a re-push of the tag (a new EGI tag) replaces the image: one image for the reference, the new properties
      const again = await orasPush(
        'egi/alma-9',
        '9',
        bytes,
        { [TITLE]: 'alma-9.qcow2', ...EGI['alma-9.qcow2'], 'eu.egi.cloud.tag': '2025-07-01-aaaaaaaa' },
        EGI.$manifest,
      );
      assert.equal(again.put.status, 201, again.put.body.toString());
      const after = await imagesOf('egi/alma-9:9');
      assert.equal(after.length, 1);
      assert.notEqual(after[0]!.id, img.id);
      assert.equal(after[0]!.state, 'ready');
      assert.equal(after[0]!.properties['eu.egi.cloud.tag'], '2025-07-01-aaaaaaaa');
      assert.equal((await apiRequest(s, 'GET', `/api/v1/images/${img.id}`)).status, 404);
    });

    test('a containerDisk pushed by skopeo → a ready image holding the disk, virtual size as qemu-img reports', async () => {
      const qcow2 = await qemuConvert('ocivm-cd.qcow2', await patternedRaw('ocivm-cd.raw', 24 << 20), 'qcow2');
      const built = makeContainerDisk(qcow2, join(work, `cd-${dialect}`), 'gzip');
      const authFile = join(work, 'auth.json');
      writeFileSync(authFile, '{}');
      const env = { ...process.env, REGISTRY_AUTH_FILE: authFile, HOME: work, XDG_RUNTIME_DIR: work };
      const registry = new URL(s.url).host;
      await run(
        'skopeo',
        ['copy', '--quiet', '--dest-tls-verify=false', '--dest-creds', creds, `oci:${built.ociDir}:v1`, `docker://${registry}/egi/fedora/disk:v1`],
        {
          env,
          timeout: 120_000,
        },
      );
      assert.deepEqual(await tagsOf('egi/fedora/disk'), ['v1']);
      const [img, ...more] = await imagesOf('egi/fedora/disk:v1');
      assert.equal(more.length, 0);
      assert.ok(img);
      assert.equal(img.name, 'fedora/disk:v1');
      assert.equal(img.state, 'ready');
      assert.equal(img.diskFormat, 'qcow2');
      assert.equal(img.virtualSize, (await qemuInfo(qcow2))['virtual-size']);
      assert.equal(img.digest, sha256(readFileSync(qcow2)), 'the image is the disk inside the layer, unpacked');
      assert.equal(img.properties[TITLE], 'disk.qcow2');
    });

    test('a qcow2 layer with a backing file → MANIFEST_INVALID naming BACKING_FILE; no tag, no image', async () => {
      const base = await qemuCreate('ocivm-base.qcow2', 'qcow2', '16M');
      const overlay = await qemuCreate('ocivm-overlay.qcow2', 'qcow2', '16M', [`backing_file=${base}`, 'backing_fmt=qcow2']);
      const before = (await allImages()).length;
      const { put } = await orasPush('egi/overlay', 'v1', readFileSync(overlay), { [TITLE]: 'overlay.qcow2', 'org.openstack.glance.disk_format': 'qcow2' });
      assert.equal(put.status, 400);
      assert.equal(put.json.errors[0].code, 'MANIFEST_INVALID');
      assert.match(put.json.errors[0].message, /BACKING_FILE/);
      assert.deepEqual(await tagsOf('egi/overlay'), []);
      assert.deepEqual(await imagesOf('egi/overlay:v1'), []);
      assert.equal((await allImages()).length, before, 'no image is left, in any state');
      assert.equal((await pusher.req('GET', '/v2/egi/overlay/manifests/v1')).status, 404);
    });

    test('a raw layer declared qcow2 → MANIFEST_INVALID FORMAT_MISMATCH; an unknown os_distro and a reserved tag suffix → MANIFEST_INVALID; no tag, no image', async () => {
      const raw = readFileSync(await patternedRaw('ocivm-declared.raw', 4 << 20));
      const { put } = await orasPush('egi/liar', 'v1', raw, { [TITLE]: 'disk.qcow2', 'org.openstack.glance.disk_format': 'qcow2' });
      assert.equal(put.status, 400);
      assert.equal(put.json.errors[0].code, 'MANIFEST_INVALID');
      assert.match(put.json.errors[0].message, /FORMAT_MISMATCH/);
      assert.deepEqual(await tagsOf('egi/liar'), []);
      assert.deepEqual(await imagesOf('egi/liar:v1'), []);
      // annotations the image cannot take are refused naming the annotation
      const qcow2 = readFileSync(await qemuConvert('ocivm-plan9.qcow2', await patternedRaw('ocivm-plan9.raw', 4 << 20), 'qcow2'));
      const plan9 = await orasPush('egi/plan9', 'v1', qcow2, { [TITLE]: 'plan9.qcow2', 'org.openstack.glance.os_distro': 'plan9' });
      assert.equal(plan9.put.status, 400);
      assert.equal(plan9.put.json.errors[0].code, 'MANIFEST_INVALID');
      assert.match(plan9.put.json.errors[0].message, /org\.openstack\.glance\.os_distro/);
      assert.deepEqual(await imagesOf('egi/plan9:v1'), []);
      // the tag suffixes the pull side derives are refused for any push
      for (const tag of ['v1-containerdisk', 'v1-artifact']) {
        const r = await orasPush('egi/reserved', tag, Buffer.from('not a disk'), { [TITLE]: 'notes.txt' });
        assert.equal(r.put.status, 400);
        assert.equal(r.put.json.errors[0].code, 'MANIFEST_INVALID');
        assert.match(r.put.json.errors[0].message, /reserves/);
      }
    });

    test('containerDisk tars with a ../ path or two disks → MANIFEST_INVALID naming the entry; no tag, no image', async () => {
      const qcow2 = await qemuConvert('ocivm-hostile.qcow2', await patternedRaw('ocivm-hostile.raw', 4 << 20), 'qcow2');
      const dir = join(work, `hostile-${dialect}`);
      mkdirSync(dir, { recursive: true });
      const evil = join(dir, 'evil');
      writeFileSync(evil, 'root::0:0::/root:/bin/sh\n');
      const tar = async (name: string, entries: [string, string][]) => {
        const out = join(dir, name);
        const py = `import tarfile, sys\nt = tarfile.open(sys.argv[1], 'w:gz', format=tarfile.PAX_FORMAT)\nfor src, arc in zip(sys.argv[2::2], sys.argv[3::2]): t.add(src, arcname=arc)\nt.close()\n`;
        await run('python3', ['-c', py, out, ...entries.flat()]);
        return readFileSync(out);
      };
      const gz = 'application/vnd.oci.image.layer.v1.tar+gzip';
      const dotdot = await imagePush(
        'egi/dotdot',
        'v1',
        await tar('dotdot.tar.gz', [
          [qcow2, 'disk/disk.qcow2'],
          [evil, '../etc/passwd'],
        ]),
        gz,
      );
      assert.equal(dotdot.status, 400, dotdot.body.toString());
      assert.equal(dotdot.json.errors[0].code, 'MANIFEST_INVALID');
      assert.match(dotdot.json.errors[0].message, /UNSAFE_ENTRY.*\.\.\/etc\/passwd/);
      const two = await imagePush(
        'egi/two',
        'v1',
        await tar('two.tar.gz', [
          [qcow2, 'disk/a.qcow2'],
          [qcow2, 'disk/b.qcow2'],
        ]),
        gz,
      );
      assert.equal(two.status, 400, two.body.toString());
      assert.equal(two.json.errors[0].code, 'MANIFEST_INVALID');
      assert.match(two.json.errors[0].message, /TWO_DISKS.*disk\/a\.qcow2.*disk\/b\.qcow2/);
      for (const repo of ['egi/dotdot', 'egi/two']) {
        assert.deepEqual(await tagsOf(repo), []);
        assert.deepEqual(await imagesOf(`${repo}:v1`), []);
      }
    });

    test('an image uploaded through REST pulls as a containerDisk (skopeo; plain tag and -containerdisk) and as an oras artifact (-artifact); outsiders get 404', async () => {
      const qcow2 = await qemuConvert('ocivm-rest.qcow2', await patternedRaw('ocivm-rest.raw', 16 << 20), 'qcow2');
      const bytes = readFileSync(qcow2);
      const created = await apiRequest(s, 'POST', '/api/v1/images', { name: 'cirros:0.6', project: 'egi', architecture: 'x86_64' });
      assert.equal(created.status, 201, created.text);
      const id = created.json!.id as string;
      const up = await fetch(`${s.url}/api/v1/images/${id}/file`, {
        method: 'PUT',
        body: bytes,
        headers: { authorization: `Bearer ${s.token}`, 'content-type': 'application/octet-stream' },
      });
      assert.equal(up.status, 200, await up.text());
      const blobsBefore = await countBlobs();

      const authFile = join(work, 'auth.json');
      writeFileSync(authFile, '{}');
      const env = { ...process.env, REGISTRY_AUTH_FILE: authFile, HOME: work, XDG_RUNTIME_DIR: work };
      const registry = new URL(s.url).host;
      const manifests: string[] = [];
      for (const tag of ['0.6', '0.6-containerdisk']) {
        const out = join(work, `pull-${dialect}-${tag}`);
        await run('skopeo', ['copy', '--quiet', '--src-tls-verify=false', '--src-creds', creds, `docker://${registry}/egi/cirros:${tag}`, `dir:${out}`], {
          env,
          timeout: 120_000,
        });
        const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')) as { layers: { digest: string }[] };
        manifests.push(sha256(readFileSync(join(out, 'manifest.json'))));
        const x = join(out, 'x');
        mkdirSync(x);
        await run('tar', ['-xf', join(out, manifest.layers[0]!.digest.slice('sha256:'.length)), '-C', x]);
        const files = readdirSync(join(x, 'disk'));
        assert.equal(files.length, 1);
        assert.match(files[0]!, /\.qcow2$/);
        assert.ok(readFileSync(join(x, 'disk', files[0]!)).equals(bytes), 'the disk in the layer is the uploaded file');
      }
      assert.equal(manifests[0], manifests[1], 'the same manifest, the same digest, for both tags');
      const inspected = JSON.parse(
        (await run('skopeo', ['inspect', '--tls-verify=false', '--creds', creds, `docker://${registry}/egi/cirros:0.6`], { env })).stdout,
      ) as {
        Architecture: string;
      };
      assert.equal(inspected.Architecture, 'amd64');
      assert.deepEqual(await tagsOf('egi/cirros'), ['0.6'], 'the tags list shows the image');

      const art = await pusher.req('GET', '/v2/egi/cirros/manifests/0.6-artifact', { headers: { accept: OCI_MANIFEST } });
      assert.equal(art.status, 200, art.body.toString());
      const layer = art.json.layers[0];
      assert.equal(layer.digest, sha256(bytes), 'the artifact layer is the stored blob');
      const blob = await pusher.req('GET', `/v2/egi/cirros/blobs/${layer.digest}`);
      assert.equal(blob.status, 200);
      assert.ok(blob.body.equals(bytes));
      assert.equal((await pusher.req('GET', `/v2/egi/cirros/manifests/${art.headers.get('docker-content-digest')}`)).status, 200);
      assert.equal(await countBlobs(), blobsBefore, 'pulls write nothing to the store');

      assert.equal((await apiRequest(s, 'POST', '/api/v1/projects', { name: 'elsewhere' })).status, 201);
      const outsiderToken = (await apiRequest(s, 'POST', '/api/v1/tokens', { name: 'o', project: 'elsewhere', role: 'writer', user: 'otto' })).json!
        .token as string;
      const outsider = new OciClient(s.url, outsiderToken);
      assert.equal((await outsider.req('GET', '/v2/egi/cirros/manifests/0.6')).status, 404);
      assert.equal((await outsider.req('GET', `/v2/egi/cirros/blobs/${layer.digest}`)).status, 404);
      assert.equal((await pusher.req('GET', '/v2/egi/cirros/manifests/0.7')).status, 404);
    });

    test('an ordinary container layer and a plain artifact stay plain manifests: no image', async () => {
      const dir = join(work, `plain-${dialect}`);
      mkdirSync(join(dir, 'etc'), { recursive: true });
      writeFileSync(join(dir, 'etc', 'motd'), 'hello\n');
      await run('bash', ['-c', `tar -C ${dir} -cf - etc | gzip > ${dir}/layer.tar.gz`]);
      const plain = await imagePush('egi/app', 'v1', readFileSync(join(dir, 'layer.tar.gz')), 'application/vnd.oci.image.layer.v1.tar+gzip');
      assert.equal(plain.status, 201, plain.body.toString());
      const sbom = await orasPush('egi/sbom', 'v1', Buffer.from('{"spdxVersion":"SPDX-2.3"}'), { [TITLE]: 'sbom.spdx.json' });
      assert.equal(sbom.put.status, 201, sbom.put.body.toString());
      assert.deepEqual(await tagsOf('egi/app'), ['v1']);
      assert.deepEqual(await imagesOf('egi/app:v1'), []);
      assert.deepEqual(await imagesOf('egi/sbom:v1'), []);
    });
  });
}

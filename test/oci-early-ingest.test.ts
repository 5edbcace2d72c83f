/**
 * A containerDisk layer's disk is ingested while the layer arrives (domain/registry/
 * early-layer-ingests.ts), and the manifest PUT takes that outcome instead of reading the layer back
 * — over real HTTP against a real server (SQLite and PostgreSQL), real qemu-img disks, real gzip tars.
 * What shows which path ran is the server's own counts: `vmPushes.counts.layerReads` (layers the
 * manifest hook read back from the store) and `earlyIngests.counts.taken` (outcomes a manifest took).
 *
 * - a containerDisk pushed monolithically (POST + PUT) and as skopeo does (POST, PATCH, PUT) → a ready
 *   image with the disk's sha256, sha512 and qemu-img's virtual size; no layer read back;
 * - the refusals hold on the early path: a qcow2 with a backing file, a qcow2 declared raw, two disks
 *   → MANIFEST_INVALID naming the finding, no tag, no image, no layer read back;
 * - GC between the layer and its manifest keeps the early disk; the manifest still takes it;
 * - after a restart the outcome is gone: the manifest PUT reads the layer back and the image is the same;
 * - an ordinary container layer (first entry outside disk/) → the early ingest gives up at once, the
 *   hook reads the layer back and stores a plain manifest.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { startApp } from '../src/app.js';
import { OCI_MANIFEST, OciClient, sha256 } from './support/oci-client.js';
import { patternedRaw, qcow2WithBacking, qemuConvert, qemuInfo } from './support/qemu.js';
import { apiRequest, startTestServer, type Dialect, type TestServer } from './support/server.js';

const run = promisify(execFile);
const GZ_LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip';

for (const dialect of ['sqlite', 'postgres'] as Dialect[]) {
  describe(`containerDisk layers ingested while they arrive (${dialect})`, () => {
    let s: TestServer;
    let pusher: OciClient;
    let work: string;
    let qcow2: string;

    before(async () => {
      s = await startTestServer({ dialect });
      assert.equal((await apiRequest(s, 'POST', '/api/v1/projects', { name: 'kv' })).status, 201);
      const token = (await apiRequest(s, 'POST', '/api/v1/tokens', { name: 'pusher', project: 'kv', role: 'writer', user: 'kim' })).json!.token as string;
      pusher = new OciClient(s.url, token);
      work = mkdtempSync(join(tmpdir(), 'imago-early-'));
      qcow2 = await qemuConvert('early.qcow2', await patternedRaw('early.raw', 12 << 20), 'qcow2');
    });
    after(async () => {
      await s?.stop();
      if (work) rmSync(work, { recursive: true, force: true });
    });

    const counts = () => ({ layerReads: s.app.vmPushes.counts.layerReads, taken: s.app.earlyIngests.counts.taken });
    const imagesOf = async (reference: string) => {
      const r = await apiRequest(s, 'GET', `/api/v1/images?project=kv&property=${encodeURIComponent(`imago.oci.reference=${reference}`)}`);
      assert.equal(r.status, 200, r.text);
      return (r.json!.images ?? []) as Record<string, any>[];
    };
    const tagsOf = async (repo: string) => {
      const r = await pusher.req('GET', `/v2/${repo}/tags/list`);
      return r.status === 200 ? ((r.json.tags ?? []) as string[]) : [];
    };

    /** A gzip tar of `entries` ([file, name in the archive]), as python's tarfile writes it. */
    const tarGz = async (name: string, entries: [string, string][]) => {
      const dir = join(work, dialect);
      mkdirSync(dir, { recursive: true });
      const out = join(dir, name);
      const py = `import tarfile, sys\nt = tarfile.open(sys.argv[1], 'w:gz', format=tarfile.PAX_FORMAT)\nfor src, arc in zip(sys.argv[2::2], sys.argv[3::2]): t.add(src, arcname=arc)\nt.close()\n`;
      await run('python3', ['-c', py, out, ...entries.flat()]);
      return readFileSync(out);
    };

    /** POST, one PATCH with the whole blob, PUT ?digest= (what skopeo sends). */
    const pushBlobPatched = async (repo: string, bytes: Buffer) => {
      const start = await pusher.req('POST', `/v2/${repo}/blobs/uploads/`);
      assert.equal(start.status, 202);
      const patch = await pusher.req('PATCH', start.headers.get('location')!, { body: bytes, headers: { 'content-type': 'application/octet-stream' } });
      assert.equal(patch.status, 202, patch.body.toString());
      const loc = patch.headers.get('location')!;
      const put = await pusher.req('PUT', `${loc}${loc.includes('?') ? '&' : '?'}digest=${sha256(bytes)}`);
      assert.equal(put.status, 201, put.body.toString());
      return sha256(bytes);
    };

    /** The config and the layer pushed, then the manifest; `between` runs before the manifest. */
    async function containerDiskPush(
      repo: string,
      layerBytes: Buffer,
      opts: { patched?: boolean; annotations?: Record<string, string>; between?: () => Promise<void> } = {},
    ) {
      const cfgBytes = JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } });
      const config = await pusher.pushBlob(repo, cfgBytes);
      const layer = opts.patched ? await pushBlobPatched(repo, layerBytes) : await pusher.pushBlob(repo, layerBytes);
      await opts.between?.();
      const manifest = {
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config, size: Buffer.byteLength(cfgBytes) },
        layers: [{ mediaType: GZ_LAYER, digest: layer, size: layerBytes.length, ...(opts.annotations ? { annotations: opts.annotations } : {}) }],
      };
      return pusher.putManifest(repo, 'v1', manifest, OCI_MANIFEST);
    }

    const assertTheDisk = async (img: Record<string, any> | undefined) => {
      const bytes = readFileSync(qcow2);
      assert.ok(img);
      assert.equal(img.state, 'ready');
      assert.equal(img.digest, sha256(bytes), 'the image is the disk inside the layer');
      assert.equal(img.checksums.sha512, createHash('sha512').update(bytes).digest('hex'));
      assert.equal(img.storedSize, bytes.length);
      assert.equal(img.virtualSize, (await qemuInfo(qcow2))['virtual-size']);
      assert.equal(img.diskFormat, 'qcow2');
      assert.equal(img.properties['org.opencontainers.image.title'], 'disk.qcow2');
    };

    test('a containerDisk pushed monolithically or by PATCH → a ready image from the early outcome; the manifest PUT reads no layer back', async () => {
      const layer = await tarGz('good.tar.gz', [[qcow2, 'disk/disk.qcow2']]);
      for (const [repo, patched] of [
        ['kv/mono', false],
        ['kv/patched', true],
      ] as const) {
        const was = counts();
        const put = await containerDiskPush(repo, layer, { patched });
        assert.equal(put.status, 201, put.body.toString());
        assert.deepEqual(counts(), { layerReads: was.layerReads, taken: was.taken + 1 }, `${repo}: the outcome was taken, nothing read back`);
        const [img, ...more] = await imagesOf(`${repo}:v1`);
        assert.equal(more.length, 0);
        await assertTheDisk(img);
        assert.deepEqual(await tagsOf(repo), ['v1']);
      }
    });

    test('refusals hold on the early path: a backing file, a declared format the bytes are not, two disks → MANIFEST_INVALID; no tag, no image', async () => {
      const overlay = await qcow2WithBacking('early-overlay');
      const cases: [string, Buffer, Record<string, string> | undefined, RegExp][] = [
        ['kv/backing', await tarGz('backing.tar.gz', [[overlay, 'disk/disk.qcow2']]), undefined, /BACKING_FILE/],
        ['kv/liar', await tarGz('liar.tar.gz', [[qcow2, 'disk/disk.qcow2']]), { 'org.openstack.glance.disk_format': 'raw' }, /FORMAT_MISMATCH/],
        [
          'kv/two',
          await tarGz('two.tar.gz', [
            [qcow2, 'disk/a.qcow2'],
            [qcow2, 'disk/b.qcow2'],
          ]),
          undefined,
          /TWO_DISKS/,
        ],
      ];
      for (const [repo, layer, annotations, finding] of cases) {
        const was = counts();
        const put = await containerDiskPush(repo, layer, { annotations });
        assert.equal(put.status, 400, put.body.toString());
        assert.equal(put.json.errors[0].code, 'MANIFEST_INVALID');
        assert.match(put.json.errors[0].message, finding);
        assert.deepEqual(counts(), { layerReads: was.layerReads, taken: was.taken + 1 }, `${repo}: refused from the early outcome`);
        assert.deepEqual(await tagsOf(repo), []);
        const left = await apiRequest(s, 'GET', '/api/v1/images?project=kv&limit=1000');
        assert.deepEqual(
          (left.json!.images as Record<string, any>[]).filter((i) => i.properties['imago.oci.reference'] === `${repo}:v1`),
          [],
          'no image is left, in any state',
        );
      }
    });

    test('GC between the layer and its manifest keeps the early disk; the manifest takes it', async () => {
      const layer = await tarGz('gc.tar.gz', [[qcow2, 'disk/disk.qcow2']]);
      const was = counts();
      let kept = false;
      const put = await containerDiskPush('kv/gc', layer, {
        between: async () => {
          const disk = `sha256:${createHash('sha256').update(readFileSync(qcow2)).digest('hex')}` as const;
          // no image holds the disk yet: only the early outcome does
          await s.app.gc({ dryRun: false });
          kept = (await s.app.store.stat(disk)) !== undefined;
        },
      });
      assert.equal(put.status, 201, put.body.toString());
      assert.ok(kept, 'GC kept the disk the early outcome holds');
      assert.deepEqual(counts(), { layerReads: was.layerReads, taken: was.taken + 1 });
      await assertTheDisk((await imagesOf('kv/gc:v1'))[0]);
    });

    test('after a restart the outcome is gone: the manifest PUT reads the layer back, the image is the same', async () => {
      const layer = await tarGz('restart.tar.gz', [[qcow2, 'disk/disk.qcow2']]);
      const put = await containerDiskPush('kv/restart', layer, {
        between: async () => {
          await s.app.close();
          s.app = await startApp({ ...s.config, listen: { host: '127.0.0.1', port: Number(new URL(s.url).port) } });
        },
      });
      assert.equal(put.status, 201, put.body.toString());
      assert.deepEqual(counts(), { layerReads: 1, taken: 0 }, 'the new process read the layer back');
      await assertTheDisk((await imagesOf('kv/restart:v1'))[0]);
    });

    test('quota on the early path: the layer and the disk count once each; a disk over the room is not stored early, the quota refuses it, nothing tagged', async () => {
      assert.equal((await apiRequest(s, 'POST', '/api/v1/projects', { name: 'kvq' })).status, 201);
      const token = (await apiRequest(s, 'POST', '/api/v1/tokens', { name: 'q', project: 'kvq', role: 'writer', user: 'kim' })).json!.token as string;
      const q = pusher.as(token);
      const usage = async () => (await apiRequest(s, 'GET', '/api/v1/projects/kvq/quota')).json!.usage as { storedBytes: number; stagingBytes: number };
      const setQuota = async (storedBytes: number) => assert.equal((await apiRequest(s, 'PUT', '/api/v1/projects/kvq/quota', { storedBytes })).status, 200);
      // a disk of its own: the other tests' disk is in the store already
      const own = await qemuConvert('early-quota.qcow2', await patternedRaw('early-quota.raw', 10 << 20), 'qcow2');
      const disk = readFileSync(own);
      const layer = await tarGz('quota.tar.gz', [[own, 'disk/disk.qcow2']]);
      const cfgBytes = JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } });
      const push = async (repo: string) => {
        const config = await q.pushBlob(repo, cfgBytes);
        const digest = await q.pushBlob(repo, layer);
        const manifest = JSON.stringify({
          schemaVersion: 2,
          mediaType: OCI_MANIFEST,
          config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config, size: Buffer.byteLength(cfgBytes) },
          layers: [{ mediaType: GZ_LAYER, digest, size: layer.length }],
        });
        return { manifest, put: await q.putManifest(repo, 'v1', manifest, OCI_MANIFEST) };
      };
      // room for the config, the layer and the manifest, not for the disk as well
      await setQuota(Buffer.byteLength(cfgBytes) + layer.length + 4096);
      let was = counts();
      const over = await push('kvq/over');
      assert.equal(over.put.status, 403, over.put.body.toString());
      assert.equal(over.put.json.errors[0].code, 'DENIED');
      assert.match(over.put.json.errors[0].message, /quota/);
      // the early ingest stores no disk past the room it had: it decided nothing, the read-back path refused
      assert.deepEqual(counts(), { layerReads: was.layerReads + 1, taken: was.taken });
      assert.equal(await s.app.store.stat(sha256(disk) as `sha256:${string}`), undefined, 'no disk blob was stored');
      assert.deepEqual(await tagsOf('kvq/over'), []);
      assert.equal((await usage()).storedBytes, Buffer.byteLength(cfgBytes) + layer.length, "the early disk is no one's: not counted");
      // room for both: each blob counts once, the disk as the image's
      await setQuota(10 * layer.length + disk.length);
      was = counts();
      const fits = await push('kvq/fits');
      assert.equal(fits.put.status, 201, fits.put.body.toString());
      assert.deepEqual(counts(), { layerReads: was.layerReads, taken: was.taken + 1 });
      assert.equal((await usage()).storedBytes, Buffer.byteLength(cfgBytes) + layer.length + Buffer.byteLength(fits.manifest) + disk.length);
    });

    test('an ordinary container layer: the early ingest gives up at its first entry, the hook reads it back, a plain manifest', async () => {
      const file = join(work, `passwd-${dialect}`);
      writeFileSync(file, 'root:x:0:0::/root:/bin/sh\n');
      const layer = await tarGz('plain.tar.gz', [
        [file, 'etc/passwd'],
        [qcow2, 'usr/share/disk.qcow2'],
      ]);
      const was = counts();
      const started = s.app.earlyIngests.counts.started;
      const put = await containerDiskPush('kv/plain', layer);
      assert.equal(put.status, 201, put.body.toString());
      assert.equal(s.app.earlyIngests.counts.started, started + 1, 'the gzip layer was tapped');
      assert.deepEqual(counts(), { layerReads: was.layerReads + 1, taken: was.taken }, 'nothing early to take: read back');
      assert.deepEqual(await imagesOf('kv/plain:v1'), []);
      assert.deepEqual(await tagsOf('kv/plain'), ['v1']);
    });
  });
}

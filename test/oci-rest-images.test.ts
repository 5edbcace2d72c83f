/**
 * Images uploaded through REST, served over OCI (issue 10 §4), over real HTTP against a real
 * server on SQLite and PostgreSQL:
 * - a vmdk (a format KubeVirt cannot read) pulls as a containerDisk of its qcow2 variant: skopeo
 *   copies it out, GNU tar extracts the disk, `qemu-img compare` finds it equal to the uploaded vmdk;
 * - `_catalog` lists the repositories of images nobody pushed (only to the projects' members), with
 *   pagination; a cluster-scope image (no project) has no repository name and is not listed;
 * - after a restart, the blobs of a manifest generated before it are answered without fetching the
 *   manifest again (the layer digest is kept in the database, not hashed again).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { startApp } from '../src/app.js';
import { OciClient } from './support/oci-client.js';
import { patternedRaw, qemuConvert, qemuInfo } from './support/qemu.js';
import { apiRequest, startTestServer, type Dialect, type TestServer } from './support/server.js';

const run = promisify(execFile);
const MIB = 1024 * 1024;

for (const dialect of ['sqlite', 'postgres'] as Dialect[]) {
  describe(`REST images over OCI (${dialect})`, () => {
    let s: TestServer;
    let admin: OciClient;
    let work: string;
    let env: NodeJS.ProcessEnv;

    before(async () => {
      s = await startTestServer({ dialect });
      for (const p of ['vms', 'other']) assert.equal((await apiRequest(s, 'POST', '/api/v1/projects', { name: p })).status, 201);
      admin = new OciClient(s.url, s.token);
      work = mkdtempSync(join(tmpdir(), 'imago-ocirest-'));
      const authFile = join(work, 'auth.json');
      writeFileSync(authFile, '{}');
      env = { ...process.env, REGISTRY_AUTH_FILE: authFile, HOME: work, XDG_RUNTIME_DIR: work };
    });
    after(async () => {
      await s?.stop();
      if (work) rmSync(work, { recursive: true, force: true });
    });

    /** Creates an image through REST in `project` and uploads `file`; returns its id. */
    async function restUpload(name: string, project: string | null, file: string): Promise<string> {
      const created = await apiRequest(s, 'POST', '/api/v1/images', { name, project });
      assert.equal(created.status, 201, created.text);
      const id = created.json!.id as string;
      const up = await fetch(`${s.url}/api/v1/images/${id}/file`, {
        method: 'PUT',
        body: readFileSync(file),
        headers: { authorization: `Bearer ${s.token}`, 'content-type': 'application/octet-stream' },
      });
      assert.equal(up.status, 200, await up.text());
      return id;
    }

    /** skopeo copy of `ref` into a dir: layout; the one disk GNU tar extracts from its layer. */
    async function pullDisk(ref: string, out: string): Promise<{ disk: string; manifest: { layers: { digest: string }[]; config: { digest: string } } }> {
      await run(
        'skopeo',
        ['copy', '--quiet', '--src-tls-verify=false', '--src-creds', `x:${s.token}`, `docker://${new URL(s.url).host}/${ref}`, `dir:${out}`],
        { env, timeout: 180_000 },
      );
      const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')) as { layers: { digest: string }[]; config: { digest: string } };
      const x = join(out, 'x');
      mkdirSync(x);
      await run('tar', ['-xf', join(out, manifest.layers[0]!.digest.slice('sha256:'.length)), '-C', x]);
      const files = readdirSync(join(x, 'disk'));
      assert.equal(files.length, 1, `one disk in the layer: ${files.join(', ')}`);
      return { disk: join(x, 'disk', files[0]!), manifest };
    }

    test('a vmdk uploaded through REST pulls as a containerDisk of its qcow2 variant: qemu-img compare finds the same disk', async () => {
      const vmdk = await qemuConvert('ocirest-win.vmdk', await patternedRaw('ocirest-win.raw', 8 * MIB), 'vmdk');
      await restUpload('win:1', 'vms', vmdk);
      const { disk } = await pullDisk('vms/win:1', join(work, `vmdk-${dialect}`));
      assert.match(disk, /\.qcow2$/, 'the file name follows the served format');
      assert.equal((await qemuInfo(disk)).format, 'qcow2', 'KubeVirt gets a qcow2');
      await run('qemu-img', ['compare', '-q', vmdk, disk]);
      // the -containerdisk tag serves the same bytes
      const again = await admin.req('GET', '/v2/vms/win/manifests/1-containerdisk', { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
      assert.equal(again.status, 200, again.body.toString());
      const plain = await admin.req('GET', '/v2/vms/win/manifests/1', { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
      assert.equal(again.headers.get('docker-content-digest'), plain.headers.get('docker-content-digest'));
    });

    test('_catalog lists the repositories of images nobody pushed, to their projects only; a cluster-scope image has none', async () => {
      const qcow2 = await qemuConvert('ocirest-cat.qcow2', await patternedRaw('ocirest-cat.raw', 1 * MIB), 'qcow2');
      await restUpload('alma/disk:9', 'vms', qcow2);
      await restUpload('debian', 'other', qcow2);
      await restUpload('Not A Repository', 'vms', qcow2);
      await restUpload('clusterwide', null, qcow2);
      const all = await admin.req('GET', '/v2/_catalog');
      assert.equal(all.status, 200, all.body.toString());
      const repos = all.json.repositories as string[];
      for (const r of ['vms/alma/disk', 'vms/win', 'other/debian']) assert.ok(repos.includes(r), `${r} is listed: ${repos.join(', ')}`);
      assert.deepEqual(repos, [...repos].sort(), 'in lexical order');
      assert.ok(!repos.some((r) => /clusterwide|not/i.test(r)), `no name for a cluster image or an invalid name: ${repos.join(', ')}`);
      // pagination runs over stored and image repositories alike
      const first = await admin.req('GET', '/v2/_catalog?n=1');
      assert.deepEqual(first.json.repositories, [repos[0]]);
      assert.match(first.headers.get('link') ?? '', /rel="next"/);
      const rest = await admin.req('GET', `/v2/_catalog?n=100&last=${encodeURIComponent(repos[0]!)}`);
      assert.deepEqual(rest.json.repositories, repos.slice(1));
      // a member of one project sees that project's repositories only
      const token = (await apiRequest(s, 'POST', '/api/v1/tokens', { name: 'r', project: 'other', role: 'reader', user: 'rita' })).json!.token as string;
      const reader = await admin.as(token).req('GET', '/v2/_catalog');
      assert.deepEqual(reader.json.repositories, ['other/debian']);
    });

    test("after a restart, a generated manifest's blobs and the manifest by digest are answered without fetching it by tag again", async () => {
      const qcow2 = await qemuConvert('ocirest-restart.qcow2', await patternedRaw('ocirest-restart.raw', 4 * MIB), 'qcow2');
      await restUpload('restart:v1', 'vms', qcow2);
      const forms: { repo: string; ref: string; digest: string; manifest: any; blobs: Map<string, Buffer> }[] = [];
      for (const [repo, ref] of [
        ['vms/restart', 'v1'],
        ['vms/restart', 'v1-artifact'],
        ['vms/win', '1'],
      ] as const) {
        const m = await admin.req('GET', `/v2/${repo}/manifests/${ref}`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
        assert.equal(m.status, 200, m.body.toString());
        const blobs = new Map<string, Buffer>();
        for (const d of [m.json.config.digest, ...m.json.layers.map((l: { digest: string }) => l.digest)] as string[]) {
          const b = await admin.req('GET', `/v2/${repo}/blobs/${d}`);
          assert.equal(b.status, 200);
          blobs.set(d, b.body);
        }
        forms.push({ repo, ref, digest: m.headers.get('docker-content-digest')!, manifest: m.json, blobs });
      }
      // the same data directory and database, a new process: nothing served is remembered in memory
      await s.app.close();
      s.app = await startApp({ ...s.config, listen: { host: '127.0.0.1', port: Number(new URL(s.url).port) } });
      // the vmdk's containerDisk by its digest first (before anything of that repository was asked again)
      const win = forms[2]!;
      const byDigest = await admin.req('GET', `/v2/${win.repo}/manifests/${win.digest}`);
      assert.equal(byDigest.status, 200, byDigest.body.toString());
      assert.deepEqual(byDigest.json, win.manifest);
      for (const f of forms) {
        for (const [d, bytes] of f.blobs) {
          const head = await admin.req('HEAD', `/v2/${f.repo}/blobs/${d}`);
          assert.equal(head.status, 200, `${f.repo}:${f.ref} ${d} after the restart`);
          const b = await admin.req('GET', `/v2/${f.repo}/blobs/${d}`);
          assert.equal(b.status, 200);
          assert.ok(b.body.equals(bytes), `${f.repo}:${f.ref} ${d}: the same bytes`);
          // a range of the generated layer too
          const r = await admin.req('GET', `/v2/${f.repo}/blobs/${d}`, { headers: { range: 'bytes=0-9' } });
          assert.equal(r.status, 206);
          assert.ok(r.body.equals(bytes.subarray(0, 10)));
        }
      }
      // an outsider still gets nothing
      const token = (await apiRequest(s, 'POST', '/api/v1/tokens', { name: 'o', project: 'other', role: 'writer', user: 'otto' })).json!.token as string;
      const layer = forms[0]!.manifest.layers[0].digest as string;
      assert.equal((await admin.as(token).req('GET', `/v2/vms/restart/blobs/${layer}`)).status, 404);
    });
  });
}

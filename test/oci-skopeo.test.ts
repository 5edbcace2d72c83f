/**
 * The real client: Debian's skopeo pushes a containerDisk (an OCI layout made by
 * ../shared/peers/make-containerdisk.sh from a qemu-img qcow2) through the OCI door and pulls it
 * back, byte-identical (manifest and every blob), over the challenge → /v2/token → Bearer flow;
 * also as a Docker schema 2 manifest (skopeo converts), and a pull with a wrong password fails.
 * SQLite and PostgreSQL.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { apiRequest, startTestServer, type Dialect, type TestServer } from './support/server.js';
import { OciClient, sha256 } from './support/oci-client.js';

const run = promisify(execFile);
const MAKE_CONTAINERDISK = resolve(import.meta.dirname, '..', '..', 'shared', 'peers', 'make-containerdisk.sh');

async function skopeo(args: string[], env: NodeJS.ProcessEnv): Promise<{ stdout: string; stderr: string }> {
  return run('skopeo', args, { env, maxBuffer: 64 * 1024 * 1024, timeout: 120_000 });
}

/** The manifest digest a layout's index.json names for `tag`. */
function layoutDigest(dir: string, tag: string): string {
  const index = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as { manifests: { digest: string; annotations?: Record<string, string> }[] };
  const m = index.manifests.find((x) => x.annotations?.['org.opencontainers.image.ref.name'] === tag) ?? index.manifests[0]!;
  return m.digest;
}

for (const dialect of ['sqlite', 'postgres'] as Dialect[]) {
  describe(`skopeo through the OCI door (${dialect})`, () => {
    let s: TestServer;
    let work: string;
    let env: NodeJS.ProcessEnv;
    let creds: string;
    let registry: string;
    let layout: string;

    before(async () => {
      s = await startTestServer({ dialect });
      assert.equal((await apiRequest(s, 'POST', '/api/v1/projects', { name: 'vms' })).status, 201);
      const token = (await apiRequest(s, 'POST', '/api/v1/tokens', { name: 'pusher', project: 'vms', role: 'writer', user: 'petra' })).json!.token as string;
      creds = `petra:${token}`;
      registry = new URL(s.url).host;
      work = mkdtempSync(join(tmpdir(), 'imago-skopeo-'));
      // skopeo reads no credentials of the machine's user: only what the test passes
      const authFile = join(work, 'auth.json');
      writeFileSync(authFile, '{}');
      env = { ...process.env, REGISTRY_AUTH_FILE: authFile, HOME: work, XDG_RUNTIME_DIR: work };
      // a small qcow2 with data in it (qemu-img from a random raw), as a containerDisk layout
      const raw = join(work, 'disk.raw');
      writeFileSync(raw, Buffer.concat([randomBytes(3 * 1024 * 1024), Buffer.alloc(2 * 1024 * 1024)]));
      const qcow2 = join(work, 'disk.qcow2');
      await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, qcow2]);
      layout = join(work, 'src-layout');
      await run('bash', [MAKE_CONTAINERDISK, qcow2, layout, 'v1', 'gzip'], { env });
    });
    after(async () => {
      await s?.stop();
      if (work) rmSync(work, { recursive: true, force: true });
    });

    test('push and pull a containerDisk: manifest and every blob byte-identical', async () => {
      await skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', creds, `oci:${layout}:v1`, `docker://${registry}/vms/alma/disk:v1`], env);
      const raw = (await skopeo(['inspect', '--raw', '--tls-verify=false', '--creds', creds, `docker://${registry}/vms/alma/disk:v1`], env)).stdout;
      const srcDigest = layoutDigest(layout, 'v1');
      assert.equal(sha256(raw), srcDigest, 'the manifest is stored as pushed');

      const out = join(work, 'pulled');
      await skopeo(['copy', '--src-tls-verify=false', '--src-creds', creds, `docker://${registry}/vms/alma/disk:v1`, `oci:${out}:v1`], env);
      assert.equal(layoutDigest(out, 'v1'), srcDigest);
      const srcBlobs = readdirSync(join(layout, 'blobs', 'sha256')).sort();
      const outBlobs = readdirSync(join(out, 'blobs', 'sha256')).sort();
      assert.deepEqual(outBlobs, srcBlobs);
      for (const b of srcBlobs) assert.ok(readFileSync(join(out, 'blobs', 'sha256', b)).equals(readFileSync(join(layout, 'blobs', 'sha256', b))), b);

      // the registry lists it, and a second push finds every blob there already
      const c = new OciClient(s.url, creds.split(':')[1]);
      assert.deepEqual((await c.req('GET', '/v2/vms/alma/disk/tags/list')).json.tags, ['v1']);
      const before = (await s.app.db.kysely.selectFrom('oci_uploads').select('id').execute()).length;
      await skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', creds, `oci:${layout}:v1`, `docker://${registry}/vms/alma/disk:again`], env);
      assert.equal((await s.app.db.kysely.selectFrom('oci_uploads').select('id').execute()).length, before, 'no session left open');
      assert.deepEqual((await c.req('GET', '/v2/vms/alma/disk/tags/list')).json.tags, ['again', 'v1']);
    });

    test('as a Docker schema 2 manifest (skopeo converts), pulled back the same', async () => {
      await skopeo(
        ['copy', '--format', 'v2s2', '--dest-tls-verify=false', '--dest-creds', creds, `oci:${layout}:v1`, `docker://${registry}/vms/docker/disk:v2s2`],
        env,
      );
      const raw = (await skopeo(['inspect', '--raw', '--tls-verify=false', '--creds', creds, `docker://${registry}/vms/docker/disk:v2s2`], env)).stdout;
      assert.equal(JSON.parse(raw).mediaType, 'application/vnd.docker.distribution.manifest.v2+json');
      const out = join(work, 'pulled-v2s2');
      await skopeo(['copy', '--src-tls-verify=false', '--src-creds', creds, `docker://${registry}/vms/docker/disk:v2s2`, `dir:${out}`], env);
      assert.equal(sha256(readFileSync(join(out, 'manifest.json'))), sha256(raw));
    });

    test('wrong credentials and other projects are refused', async () => {
      await assert.rejects(
        skopeo(
          [
            'inspect',
            '--raw',
            '--tls-verify=false',
            '--creds',
            'petra:imago_0123456789abcdef_0000000000000000000000000000000000000000000',
            `docker://${registry}/vms/alma/disk:v1`,
          ],
          env,
        ),
        /unauthorized|authentication required|401/i,
      );
      await assert.rejects(
        skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', creds, `oci:${layout}:v1`, `docker://${registry}/elsewhere/disk:v1`], env),
        /name unknown|NAME_UNKNOWN|does not exist|404/i,
      );
    });
  });
}

/**
 * The oras client against the OCI door (issue 10): EGI's reference push (`alma-9.qcow2` with EGI's
 * annotation file) and pulls back, by the ORAS project's Go SDK (oras.land/oras-go, Debian's
 * golang-oras-oras-go-dev, built here from test/support/oras-client/main.go by Debian's Go; `.ci/run`
 * installs both). The issue names the oras Python SDK, which lives on PyPI; these machines reach only
 * the npm registry and Debian's archive, and Debian packages the oras project's Go SDK, not the
 * Python one. The client speaks to the registry through containerd's resolver, as the oras CLI of
 * that SDK version did: token challenge, blob pushes, manifest PUT, pulls by tag.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { patternedRaw, qemuConvert, qemuInfo } from './support/qemu.js';
import { apiRequest, startTestServer, type TestServer } from './support/server.js';

const run = promisify(execFile);
const ROOT = resolve(import.meta.dirname, '..');
const SOURCE = join(ROOT, 'test', 'support', 'oras-client', 'main.go');
const BINARY = join(ROOT, '.cache', 'oras-client', 'oras-client');
const EGI_FILE = join(ROOT, 'src', 'domain', 'registry', 'fixtures', 'egi-alma-9.annotations.json');
const EGI = JSON.parse(readFileSync(EGI_FILE, 'utf8')) as { $manifest: Record<string, string>; 'alma-9.qcow2': Record<string, string> };

/** The client, built once per change of its source (Go in GOPATH mode over Debian's packaged sources). */
async function orasClient(): Promise<string> {
  if (existsSync(BINARY) && statSync(BINARY).mtimeMs > statSync(SOURCE).mtimeMs) return BINARY;
  if (!existsSync('/usr/share/gocode/src/oras.land/oras-go')) {
    throw new Error('the ORAS Go SDK is not installed: apt-get install golang-go golang-oras-oras-go-dev (.ci/run does)');
  }
  mkdirSync(join(ROOT, '.cache', 'oras-client', 'gopath'), { recursive: true });
  await run('go', ['build', '-o', BINARY, '.'], {
    cwd: join(ROOT, 'test', 'support', 'oras-client'),
    env: {
      ...process.env,
      GO111MODULE: 'off',
      GOPATH: `${join(ROOT, '.cache', 'oras-client', 'gopath')}:/usr/share/gocode`,
      GOCACHE: join(ROOT, '.cache', 'oras-client', 'gocache'),
      GOFLAGS: '',
    },
    timeout: 600_000,
  });
  return BINARY;
}

let s: TestServer;
let work: string;
let token: string;
let client: string;

before(async () => {
  client = await orasClient();
  s = await startTestServer({ dialect: 'sqlite' });
  assert.equal((await apiRequest(s, 'POST', '/api/v1/projects', { name: 'egi' })).status, 201);
  token = (await apiRequest(s, 'POST', '/api/v1/tokens', { name: 'pusher', project: 'egi', role: 'writer', user: 'petra' })).json!.token as string;
  work = mkdtempSync(join(tmpdir(), 'imago-oras-'));
});
after(async () => {
  await s?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

const oras = (...args: string[]) =>
  run(client, [...args, '--user', 'petra', '--password', token], { timeout: 120_000 }).catch((e: Error & { stderr?: string }) => {
    throw new Error(`oras-client ${args[0]} failed: ${e.stderr || e.message}`);
  });

test("oras pushes EGI's alma-9.qcow2 with EGI's annotation file: a ready image with its Glance and EGI properties; oras pulls the same bytes back", async () => {
  const qcow2 = await qemuConvert('oras-alma-9.qcow2', await patternedRaw('oras-alma-9.raw', 24 << 20), 'qcow2');
  const dir = join(work, 'push');
  mkdirSync(dir);
  const file = join(dir, 'alma-9.qcow2');
  copyFileSync(qcow2, file);
  const bytes = readFileSync(file);
  const host = new URL(s.url).host;

  const pushed = await oras('push', `${host}/egi/alma-9:9`, file, '--annotation-file', EGI_FILE);
  assert.match(pushed.stdout.trim(), /^sha256:[0-9a-f]{64}$/);

  const r = await apiRequest(s, 'GET', `/api/v1/images?project=egi&property=${encodeURIComponent('imago.oci.reference=egi/alma-9:9')}`);
  assert.equal(r.status, 200, r.text);
  const [img, ...more] = (r.json!.images ?? []) as Record<string, any>[];
  assert.equal(more.length, 0);
  assert.ok(img, 'the push made an image');
  assert.equal(img.name, 'alma-9:9');
  assert.equal(img.state, 'ready');
  assert.equal(img.owner, 'petra');
  assert.equal(img.digest, `sha256:${createHash('sha256').update(bytes).digest('hex')}`);
  assert.equal(img.checksums.sha512, createHash('sha512').update(bytes).digest('hex'));
  assert.equal(img.virtualSize, (await qemuInfo(file))['virtual-size']);
  assert.equal(img.inspection.format, 'qcow2');
  assert.equal(img.diskFormat, 'qcow2');
  assert.equal(img.containerFormat, 'bare');
  assert.equal(img.architecture, 'x86_64');
  assert.equal(img.osDistro, 'alma');
  assert.equal(img.osType, 'linux');
  assert.equal(img.osVersion, '9');
  assert.equal(img.properties['eu.egi.cloud.tag'], EGI['alma-9.qcow2']['eu.egi.cloud.tag']);
  assert.equal(img.properties['eu.egi.cloud.image.title'], 'EGI Alma 9 image');
  assert.equal(img.properties['org.opencontainers.image.title'], 'alma-9.qcow2', 'oras names the layer by its file');
  assert.equal(img.properties['org.opencontainers.image.source'], EGI.$manifest['org.opencontainers.image.source']);

  const out = join(work, 'pull');
  mkdirSync(out);
  await oras('pull', `${host}/egi/alma-9:9`, out);
  assert.ok(readFileSync(join(out, 'alma-9.qcow2')).equals(bytes), 'the pulled file is the pushed one');
});

test('oras pulls an image uploaded through REST as an artifact (<tag>-artifact): its file, named by its title', async () => {
  const qcow2 = await qemuConvert('oras-rest.qcow2', await patternedRaw('oras-rest.raw', 8 << 20), 'qcow2');
  const bytes = readFileSync(qcow2);
  const created = await apiRequest(s, 'POST', '/api/v1/images', { name: 'cirros:0.6', project: 'egi' });
  assert.equal(created.status, 201, created.text);
  const up = await fetch(`${s.url}/api/v1/images/${created.json!.id as string}/file`, {
    method: 'PUT',
    body: bytes,
    headers: { authorization: `Bearer ${s.token}`, 'content-type': 'application/octet-stream' },
  });
  assert.equal(up.status, 200, await up.text());
  const out = join(work, 'pull-rest');
  mkdirSync(out);
  await oras('pull', `${new URL(s.url).host}/egi/cirros:0.6-artifact`, out);
  const files = readdirSync(out);
  assert.equal(files.length, 1, files.join(', '));
  assert.ok(readFileSync(join(out, files[0]!)).equals(bytes), `${files[0]} is the uploaded file`);
});

test('oras push of a qcow2 with a backing file is refused: the manifest PUT fails naming the finding, nothing is tagged', async () => {
  const base = await qemuConvert('oras-base.qcow2', await patternedRaw('oras-base.raw', 4 << 20), 'qcow2');
  const dir = join(work, 'hostile');
  mkdirSync(dir);
  const file = join(dir, 'evil.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', base, file]);
  const annotations = join(dir, 'a.json');
  writeFileSync(annotations, JSON.stringify({ 'evil.qcow2': { 'org.openstack.glance.disk_format': 'qcow2' } }));
  // (containerd's resolver reports the status only; the body names the finding: test/oci-vm-images.test.ts)
  await assert.rejects(oras('push', `${new URL(s.url).host}/egi/evil:1`, file, '--annotation-file', annotations), /400 Bad Request/);
  const tags = await fetch(`${s.url}/v2/egi/evil/tags/list`, { headers: { authorization: `Bearer ${token}` } });
  const listed = tags.status === 200 ? (((await tags.json()) as { tags?: string[] }).tags ?? []) : [];
  assert.deepEqual(listed, [], 'nothing tagged');
  const r = await apiRequest(s, 'GET', `/api/v1/images?project=egi&property=${encodeURIComponent('imago.oci.reference=egi/evil:1')}`);
  assert.deepEqual(r.json!.images, [], 'the image made for the push is gone');
});

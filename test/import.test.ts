/**
 * URL import through the API: a real server importing from a real local HTTP server (allowed
 * explicitly: loopback is refused by default), progress, cancel, policy refusals, hostile images.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { cached, patternedRaw, qemuConvert, qemuCreate, sh } from './support/qemu.js';
import { adminFetch as fetch, startTestServer, type TestServer } from './support/server.js';

let s: TestServer;
let files: http.Server;
let filesUrl = '';
const bodies = new Map<string, Buffer>();

before(async () => {
  bodies.set('/disk.qcow2', readFileSync(await qemuConvert('imp-data.qcow2', await patternedRaw('svc-src-8m.raw', 8 << 20), 'qcow2')));
  const base = await qemuCreate('imp-base.qcow2', 'qcow2', '64M');
  bodies.set(
    '/evil.qcow2',
    readFileSync(
      await cached('imp-overlay.qcow2', async (tmp) => {
        await sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', tmp]);
      }),
    ),
  );
  files = http.createServer((req, res) => {
    if (req.url === '/slow') {
      res.writeHead(200, { 'content-length': 100 << 20 });
      const t = setInterval(() => res.write(Buffer.alloc(64 << 10)), 50);
      res.on('close', () => clearInterval(t));
      return;
    }
    if (req.url === '/to-metadata') return res.writeHead(302, { location: 'http://169.254.169.254/latest/meta-data/' }).end();
    const b = bodies.get(req.url ?? '');
    if (!b) return res.writeHead(404).end();
    res.writeHead(200, { 'content-length': b.length, 'accept-ranges': 'bytes', etag: '"1"' }).end(b);
  });
  await new Promise<void>((r) => files.listen(0, '127.0.0.1', r));
  filesUrl = `http://127.0.0.1:${(files.address() as AddressInfo).port}`;
  s = await startTestServer({ env: { IMAGO_IMPORT_ALLOW: '127.0.0.1' } });
});

after(async () => {
  await s?.stop();
  files?.closeAllConnections();
  await new Promise((r) => files?.close(r));
});

async function api(method: string, path: string, body?: unknown) {
  const res = await fetch(`${s.url}${path}`, {
    method,
    headers: body ? { 'content-type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, json: (await res.json()) as Record<string, any> };
}

async function until(id: string, pred: (img: Record<string, any>) => boolean, ms = 10_000): Promise<Record<string, any>> {
  const end = Date.now() + ms;
  for (;;) {
    const img = (await api('GET', `/api/v1/images/${id}`)).json;
    if (pred(img) || Date.now() > end) return img;
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('import from a URL: 202, importing with progress, then ready with the same digest as the source', async () => {
  const img = (await api('POST', '/api/v1/images', { name: 'imported' })).json;
  const r = await api('POST', `/api/v1/images/${img.id}/import`, { url: `${filesUrl}/disk.qcow2` });
  assert.equal(r.status, 202);
  const done = await until(img.id, (i) => i.state === 'ready' || i.state === 'error');
  assert.equal(done.state, 'ready', done.stateReason);
  assert.equal(done.digest, `sha256:${createHash('sha256').update(bodies.get('/disk.qcow2')!).digest('hex')}`);
  assert.equal(done.virtualSize, 8 << 20);
  assert.equal(done.progress, 100);
});

test('a hostile image behind a URL is refused like an upload', async () => {
  const img = (await api('POST', '/api/v1/images', { name: 'evil-import' })).json;
  await api('POST', `/api/v1/images/${img.id}/import`, { url: `${filesUrl}/evil.qcow2` });
  const done = await until(img.id, (i) => i.state === 'ready' || i.state === 'error');
  assert.equal(done.state, 'error');
  assert.match(done.stateReason, /BACKING_FILE/);
});

test('policy: bad schemes and private addresses are refused up front (422); redirects into them fail the import', async () => {
  const img = (await api('POST', '/api/v1/images', { name: 'policy' })).json;
  for (const url of ['file:///etc/passwd', 'http://169.254.169.254/latest/meta-data/', 'http://10.0.0.1/disk.img', 'ftp://example.com/x']) {
    const r = await api('POST', `/api/v1/images/${img.id}/import`, { url });
    assert.equal(r.status, 422, url);
    assert.equal(r.json.code, 'URL_NOT_ALLOWED');
  }
  assert.equal((await api('GET', `/api/v1/images/${img.id}`)).json.state, 'pending', 'a refused URL changes nothing');
  await api('POST', `/api/v1/images/${img.id}/import`, { url: `${filesUrl}/to-metadata` });
  const done = await until(img.id, (i) => i.state === 'error');
  assert.match(done.stateReason, /169\.254\.169\.254.*link-local or private/);
  const gone = await api('POST', `/api/v1/images/${img.id}/import`, { url: `${filesUrl}/nothing-here` });
  assert.equal(gone.status, 202);
  assert.match((await until(img.id, (i) => i.state === 'error' && /404/.test(i.stateReason ?? ''))).stateReason, /HTTP 404/);
});

test('an import can be cancelled; the image ends in error and can be imported again', async () => {
  const img = (await api('POST', '/api/v1/images', { name: 'cancel-me' })).json;
  await api('POST', `/api/v1/images/${img.id}/import`, { url: `${filesUrl}/slow` });
  const during = await until(img.id, (i) => i.state === 'importing' && (i.progress ?? 0) >= 1);
  assert.equal(during.state, 'importing');
  assert.equal(during.glanceStatus, 'importing');
  assert.equal(during.deckhousePhase, 'Provisioning');
  const again = await api('POST', `/api/v1/images/${img.id}/import`, { url: `${filesUrl}/disk.qcow2` });
  assert.equal(again.status, 409);
  const c = await api('DELETE', `/api/v1/images/${img.id}/import`);
  assert.equal(c.status, 200);
  const after = await until(img.id, (i) => i.state === 'error');
  assert.equal(after.state, 'error');
  assert.match(after.stateReason, /cancelled/);
  await api('POST', `/api/v1/images/${img.id}/import`, { url: `${filesUrl}/disk.qcow2` });
  assert.equal((await until(img.id, (i) => i.state === 'ready')).state, 'ready');
});

/**
 * Issue 18, item 1, for plain downloads and imports: a blob that vanished or changed on storage
 * after it was stored, and a URL import whose source drops the connection mid-way, end that one
 * request — as a problem answer before the headers, or as a transfer the client sees broken after
 * them — never as a complete-looking body or a hang, and never by ending the process. The server
 * runs as its own process (test/support/spawned-server.ts) so that a crash is seen as one.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { appendFileSync, mkdtempSync, rmSync, truncateSync, unlinkSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import type { Image } from '../src/domain/images/image.js';
import { FsBlobStore } from '../src/store/fs-blob-store.js';
import { spawnServer, type SpawnedServer } from './support/spawned-server.js';
import { adminFetch as fetch } from './support/server.js';
import { storeReadyImage } from './support/stored-image.js';

const dataDir = mkdtempSync(join(tmpdir(), 'imago-broken-'));
const store = new FsBlobStore(dataDir);
let s: SpawnedServer;
let files: http.Server;
let filesUrl = '';
const images: Record<'intact' | 'vanished' | 'shorter' | 'longer' | 'shrinking', Image> = {} as never;
const intactBytes = randomBytes(1 << 20);

before(async () => {
  const app = await createApp(loadConfig({}, { IMAGO_DATA: dataDir }));
  try {
    images.intact = await storeReadyImage(app, intactBytes, 'raw', 'intact');
    // distinct bytes each: blobs are content-addressed
    for (const k of ['vanished', 'shorter', 'longer'] as const) images[k] = await storeReadyImage(app, randomBytes(2 << 20), 'raw', k);
    images.shrinking = await storeReadyImage(app, randomBytes(32 << 20), 'raw', 'shrinking');
  } finally {
    await app.close();
  }
  unlinkSync(await store.localPath(images.vanished.digest!));
  truncateSync(await store.localPath(images.shorter.digest!), 1 << 20);
  appendFileSync(await store.localPath(images.longer.digest!), Buffer.alloc(4096, 1));

  // a source that sends half of what it announces, then drops the connection — every time, so
  // the importer's resumes with Range fail too
  files = http.createServer((req, res) => {
    res.writeHead(200, { 'content-length': 8 << 20 });
    res.write(randomBytes(4 << 20), () => res.destroy());
  });
  await new Promise<void>((r) => files.listen(0, '127.0.0.1', r));
  filesUrl = `http://127.0.0.1:${(files.address() as AddressInfo).port}`;
  s = await spawnServer(dataDir, { env: { IMAGO_IMPORT_ALLOW: '127.0.0.1' } });
});

after(async () => {
  await s?.stop();
  files?.closeAllConnections();
  await new Promise((r) => files?.close(r));
  rmSync(dataDir, { recursive: true, force: true });
});

async function request(path: string, init: RequestInit = {}): Promise<Response> {
  assert.equal(s.proc.exitCode, null, `the server process died before ${path}:\n${s.stderr().slice(-3000)}`);
  return fetch(`${s.url}${path}`, { signal: AbortSignal.timeout(10_000), ...init }).catch((e: Error) => {
    throw new Error(`${path} got no answer (${e.message}); the server ${s.proc.exitCode === null ? 'is running' : 'died'}:\n${s.stderr().slice(-3000)}`);
  });
}

/** The server still serves: liveness and a complete download of an intact image. */
async function assertServing(): Promise<void> {
  assert.equal((await request('/api/v1/healthz')).status, 200);
  const r = await request(`/api/v1/images/${images.intact.id}/file`);
  assert.equal(r.status, 200);
  assert.ok(Buffer.from(await r.arrayBuffer()).equals(intactBytes), 'a normal download is complete and intact');
}

/** Reads the body; the reason when the client sees the transfer broken (a hang fails the test). */
async function bodyOrBreak(res: Response): Promise<{ body?: Buffer; broken?: string }> {
  try {
    return { body: Buffer.from(await res.arrayBuffer()) };
  } catch (e) {
    const err = e as Error & { cause?: Error };
    assert.notEqual(err.name, 'TimeoutError', 'the transfer hung instead of ending or breaking');
    return { broken: err.cause?.message ?? err.message };
  }
}

for (const [k, what] of [
  ['vanished', /missing from storage/],
  ['shorter', /damaged in storage: 1048576 bytes are there, 2097152 were stored/],
  ['longer', /damaged in storage: 2101248 bytes are there, 2097152 were stored/],
] as const) {
  test(`a blob ${k} on storage is a problem answer before any byte, whole or ranged, and the server keeps serving`, async () => {
    for (const headers of [{}, { range: 'bytes=0-1023' }, { range: 'bytes=1048576-' }] as Record<string, string>[]) {
      const res = await request(`/api/v1/images/${images[k].id}/file`, { headers });
      const { body, broken } = await bodyOrBreak(res);
      assert.equal(broken, undefined, `a refusal is a whole answer (${JSON.stringify(headers)})`);
      assert.equal(res.status, 410, `${JSON.stringify(headers)}: ${body?.toString()}`);
      assert.match(res.headers.get('content-type') ?? '', /application\/problem\+json/);
      const p = JSON.parse(body!.toString()) as { code: string; detail: string };
      assert.equal(p.code, 'BLOB_NOT_FOUND');
      assert.match(p.detail, what);
      assert.match(p.detail, /upload it again/);
      await assertServing();
    }
  });
}

test('a blob cut short while it is sent: the client sees a broken transfer, not a short body that ends, and the server keeps serving', async () => {
  const res = await request(`/api/v1/images/${images.shrinking.id}/file`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-length'), String(32 << 20));
  const reader = res.body!.getReader();
  let received = (await reader.read()).value?.length ?? 0;
  truncateSync(await store.localPath(images.shrinking.digest!), 1 << 20);
  let broken: string | undefined;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      received += value.length;
    }
  } catch (e) {
    const err = e as Error & { cause?: Error };
    assert.notEqual(err.name, 'TimeoutError', 'the transfer hung instead of breaking');
    broken = err.cause?.message ?? err.message;
  }
  assert.ok(broken !== undefined, `the client must see the transfer broken (received ${received} of ${32 << 20} bytes)`);
  assert.ok(received < 32 << 20);
  await assertServing();
});

test('a URL import whose source drops the connection mid-way fails that image with the reason; the server keeps serving', async () => {
  const created = await request('/api/v1/images', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'dropped', type: 'OS' }),
  });
  assert.equal(created.status, 201);
  const { id } = (await created.json()) as { id: string };
  const started = await request(`/api/v1/images/${id}/import`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ url: `${filesUrl}/disk.raw` }),
  });
  assert.equal(started.status, 202, await started.text());
  let img: { state: string; stateReason?: string } = { state: 'importing' };
  for (const end = Date.now() + 30_000; img.state === 'importing' || img.state === 'pending';) {
    assert.ok(Date.now() < end, `the import did not end: ${JSON.stringify(img)}`);
    await new Promise((r) => setTimeout(r, 100));
    img = (await (await request(`/api/v1/images/${id}`)).json()) as typeof img;
  }
  assert.equal(img.state, 'error', JSON.stringify(img));
  assert.match(img.stateReason ?? '', /dropped after \d+ of 8388608 bytes/);
  await assertServing();
});

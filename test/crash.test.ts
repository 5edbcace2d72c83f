/**
 * kill -9 at any moment: the real `imago serve` process is killed mid-upload (and at random points),
 * restarted on the same data directory, and the invariants checked: no image is ready without its
 * complete, verified blob; interrupted uploads are in error ("upload again"); staging is swept; no
 * committed image is lost.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { patternedRaw } from './support/qemu.js';
import { adminFetch as fetch } from './support/server.js';
import { spawnServer, type SpawnedServer } from './support/spawned-server.js';

const dataDir = mkdtempSync(join(tmpdir(), 'imago-crash-'));
after(() => rmSync(dataDir, { recursive: true, force: true }));

const serve = () => spawnServer(dataDir);
const kill9 = (s: SpawnedServer) => s.kill9();

async function json(url: string, init?: RequestInit) {
  const r = await fetch(url, init);
  return (await r.json()) as Record<string, any>;
}

/** Uploads with a slow, chunked body so that the server can be killed in the middle. */
function slowUpload(url: string, bytes: Uint8Array, chunk: number, delayMs: number): Promise<Response | Error> {
  let off = 0;
  const body = new ReadableStream<Uint8Array>({
    async pull(ctrl) {
      if (off >= bytes.length) return ctrl.close();
      await new Promise((r) => setTimeout(r, delayMs));
      ctrl.enqueue(bytes.subarray(off, off + chunk));
      off += chunk;
    },
  });
  return fetch(url, { method: 'PUT', body, duplex: 'half', headers: { 'content-type': 'application/octet-stream' } } as RequestInit).catch((e: Error) => e);
}

async function checkInvariants(url: string): Promise<Record<string, any>[]> {
  const { images } = await json(`${url}/api/v1/images?limit=1000`);
  for (const img of images as Record<string, any>[]) {
    assert.notEqual(img.state, 'importing', `image ${img.name} still importing after restart`);
    if (img.state === 'ready') {
      const r = await fetch(`${url}/api/v1/images/${img.id}/file`);
      assert.equal(r.status, 200, `ready image ${img.name} must be downloadable`);
      const got = createHash('sha256')
        .update(new Uint8Array(await r.arrayBuffer()))
        .digest('hex');
      assert.equal(`sha256:${got}`, img.digest, `ready image ${img.name} has its complete, verified blob`);
    }
  }
  const uploads = join(dataDir, 'uploads');
  assert.deepEqual(existsSync(uploads) ? readdirSync(uploads) : [], [], 'staging debris is removed at start');
  return images;
}

test('kill -9 mid-upload: restart is consistent, committed images survive, the interrupted one is in error', async () => {
  const file = readFileSync(await patternedRaw('crash-16m.raw', 16 << 20));
  let s = await serve();
  const keep = await json(`${s.url}/api/v1/images`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'committed' }),
  });
  const up = await fetch(`${s.url}/api/v1/images/${keep.id}/file`, { method: 'PUT', body: file, headers: { 'content-type': 'application/octet-stream' } });
  assert.equal(up.status, 200);
  const victim = await json(`${s.url}/api/v1/images`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'interrupted' }),
  });
  const pending = slowUpload(`${s.url}/api/v1/images/${victim.id}/file`, file, 256 << 10, 20);
  // wait until the server is visibly mid-upload (staging holds bytes)
  for (let i = 0; i < 200; i++) {
    const st = await json(`${s.url}/api/v1/images/${victim.id}`);
    if (st.state === 'importing' && existsSync(join(dataDir, 'uploads')) && readdirSync(join(dataDir, 'uploads')).length > 0) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  await kill9(s);
  await pending;
  s = await serve();
  try {
    const images = await checkInvariants(s.url);
    const v = images.find((i) => i.id === victim.id)!;
    assert.equal(v.state, 'error');
    assert.match(v.stateReason, /interrupted.*upload the image again/);
    const k = images.find((i) => i.id === keep.id)!;
    assert.equal(k.state, 'ready');
    // the interrupted image can be uploaded again
    const again = await fetch(`${s.url}/api/v1/images/${victim.id}/file`, {
      method: 'PUT',
      body: file,
      headers: { 'content-type': 'application/octet-stream' },
    });
    assert.equal(again.status, 200, await again.clone().text());
    assert.equal(((await again.json()) as { state: string }).state, 'ready');
  } finally {
    await kill9(s);
  }
});

test('kill -9 at random moments during uploads, repeatedly: every restart is consistent', async () => {
  const file = readFileSync(await patternedRaw('crash-4m.raw', 4 << 20));
  for (let round = 0; round < 4; round++) {
    const s = await serve();
    const uploads: Promise<unknown>[] = [];
    for (let i = 0; i < 3; i++) {
      const img = await json(`${s.url}/api/v1/images`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ name: `r${round}-${i}` }),
      });
      uploads.push(slowUpload(`${s.url}/api/v1/images/${img.id}/file`, file, 512 << 10, 5 + i * 5));
    }
    await new Promise((r) => setTimeout(r, 20 + Math.floor(Math.random() * 150)));
    await kill9(s);
    await Promise.all(uploads);
    const s2 = await serve();
    try {
      await checkInvariants(s2.url);
    } finally {
      await kill9(s2);
    }
  }
});

/**
 * Resumable uploads (tus 1.0.0 at /api/v1/uploads) and upload URLs, over real HTTP against a real
 * Imago (SQLite and PostgreSQL): the bytes go through the one ingest path (sha256 equal to the
 * file's), a cut connection resumes from the server's offset, a killed `imago serve` resumes after
 * its restart, a hostile image is refused, protocol errors (offset, expiry, scope) are answered.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, describe, test } from 'node:test';
import { seededRandom } from './support/prng.js';
import { qemuCreate } from './support/qemu.js';
import { adminFetch as fetch, apiRequest, freshPgDatabase, startTestServer, type Dialect, type TestServer } from './support/server.js';
import { spawnServer } from './support/spawned-server.js';

const work = mkdtempSync(join(tmpdir(), 'imago-tus-'));
after(() => rmSync(work, { recursive: true, force: true }));

/** Incompressible, deterministic bytes (a raw disk as far as the inspector can tell). */
function randomFile(name: string, size: number, seed: number): { path: string; bytes: Buffer; sha256: string } {
  const next = seededRandom(seed);
  const bytes = Buffer.alloc(size);
  for (let i = 0; i < size; i += 4) bytes.writeUInt32LE(Math.floor(next() * 0x100000000), i);
  const path = join(work, name);
  writeFileSync(path, bytes);
  return { path, bytes, sha256: createHash('sha256').update(bytes).digest('hex') };
}

const b64 = (s: string) => Buffer.from(s).toString('base64');

async function createImage(url: string, name: string): Promise<string> {
  const r = await fetch(`${url}/api/v1/images`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name }) });
  assert.equal(r.status, 201, await r.clone().text());
  return ((await r.json()) as { id: string }).id;
}

const TUS = { 'tus-resumable': '1.0.0' };

async function tusCreate(url: string, imageId: string, size: number, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${url}/api/v1/uploads`, {
    method: 'POST',
    headers: { ...TUS, 'upload-length': String(size), 'upload-metadata': `image_id ${b64(imageId)},filename ${b64('disk.raw')}`, ...headers },
  });
}

async function tusHead(url: string, location: string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(new URL(location, url), { method: 'HEAD', headers: { ...TUS, ...headers } });
}

function tusPatch(
  url: string,
  location: string,
  offset: number,
  body: Uint8Array | ReadableStream<Uint8Array>,
  headers: Record<string, string> = {},
): Promise<Response> {
  return fetch(new URL(location, url), {
    method: 'PATCH',
    headers: { ...TUS, 'upload-offset': String(offset), 'content-type': 'application/offset+octet-stream', ...headers },
    body,
    duplex: 'half',
  } as RequestInit);
}

/** A body that sends `bytes` in `chunk`-sized pieces, each after `delayMs`, and counts what it handed over; `cutAt`: fails there (a dropped connection). */
function paced(bytes: Uint8Array, opts: { chunk: number; delayMs: number; cutAt?: number }): { body: ReadableStream<Uint8Array>; sent: () => number } {
  let off = 0;
  const body = new ReadableStream<Uint8Array>({
    async pull(ctrl) {
      if (opts.cutAt !== undefined && off >= opts.cutAt) return ctrl.error(new Error('network cut (test)'));
      if (off >= bytes.length) return ctrl.close();
      if (opts.delayMs) await new Promise((r) => setTimeout(r, opts.delayMs));
      const n = Math.min(opts.chunk, bytes.length - off);
      ctrl.enqueue(bytes.slice(off, off + n));
      off += n;
    },
  });
  return { body, sent: () => off };
}

async function waitFor<T>(what: string, f: () => Promise<T | undefined> | T | undefined, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

for (const dialect of ['sqlite', 'postgres'] as Dialect[]) {
  describe(`tus uploads (${dialect})`, () => {
    let s: TestServer;
    test('start', async () => {
      s = await startTestServer({ dialect, env: { IMAGO_UPLOAD_TTL: '3600' } });
    });
    after(() => s?.stop());

    test('create + upload in two PATCHes: ready, sha256 of the file, progress events, offset answered by HEAD', async () => {
      const f = randomFile(`two-${dialect}.raw`, 8 * 1024 * 1024, 1);
      const id = await createImage(s.url, `tus-two-${dialect}`);
      const created = await tusCreate(s.url, id, f.bytes.length);
      assert.equal(created.status, 201, await created.clone().text());
      assert.equal(created.headers.get('tus-resumable'), '1.0.0');
      assert.ok(created.headers.get('upload-expires'), 'expiration extension: Upload-Expires');
      const loc = created.headers.get('location')!;
      assert.match(loc, /^\/api\/v1\/uploads\/[0-9a-f-]{36}$/);
      // the image's event stream, as the console follows it
      const ac = new AbortController();
      const events = await fetch(`${s.url}/api/v1/events?image=${id}`, { signal: ac.signal });
      const seen: { type: string; state: string; progress?: number }[] = [];
      const reading = (async () => {
        let buf = '';
        for await (const chunk of events.body!.pipeThrough(new TextDecoderStream())) {
          buf += chunk;
          for (let i = buf.indexOf('\n\n'); i >= 0; i = buf.indexOf('\n\n')) {
            const data = /^data: (.*)$/m.exec(buf.slice(0, i))?.[1];
            buf = buf.slice(i + 2);
            if (data) {
              const e = JSON.parse(data) as { type: string; image: { state: string; progress?: number } };
              seen.push({ type: e.type, state: e.image.state, progress: e.image.progress });
            }
          }
        }
      })().catch(() => undefined);
      assert.equal((await apiRequest(s, 'GET', `/api/v1/images/${id}`)).json!.state, 'importing', 'the image is importing from the creation on');
      const half = 3 * 1024 * 1024 + 17;
      const p1 = await tusPatch(s.url, loc, 0, f.bytes.subarray(0, half));
      assert.equal(p1.status, 204, await p1.clone().text());
      assert.equal(p1.headers.get('upload-offset'), String(half));
      const h = await tusHead(s.url, loc);
      assert.equal(h.status, 200);
      assert.equal(h.headers.get('upload-offset'), String(half));
      // GC knows the upload in flight (its bytes are scratch, not blobs) and leaves it alone
      const gc = await s.app.gc({ dryRun: false });
      assert.ok(gc.resumable.count >= 1 && gc.resumable.bytes >= half, JSON.stringify(gc.resumable));
      assert.equal((await tusHead(s.url, loc)).headers.get('upload-offset'), String(half));
      assert.equal(h.headers.get('upload-length'), String(f.bytes.length));
      assert.equal(h.headers.get('cache-control'), 'no-store');
      const p2 = await tusPatch(s.url, loc, half, f.bytes.subarray(half));
      assert.equal(p2.status, 204, await p2.clone().text());
      assert.equal(p2.headers.get('upload-offset'), String(f.bytes.length));
      assert.equal(p2.headers.get('imago-image-state'), 'ready');
      const img = (await apiRequest(s, 'GET', `/api/v1/images/${id}`)).json!;
      assert.equal(img.state, 'ready');
      assert.equal(img.digest, `sha256:${f.sha256}`);
      assert.equal(img.storedSize, f.bytes.length);
      await waitFor('the ready event', () => (seen.some((e) => e.state === 'ready') ? true : undefined));
      ac.abort();
      await reading;
      assert.ok(
        seen.some((e) => e.type === 'progress' && e.state === 'importing' && (e.progress ?? 0) > 0),
        `progress events while importing: ${JSON.stringify(seen)}`,
      );
      assert.equal(seen.at(-1)!.state, 'ready');
      // the finished upload's bytes are gone; HEAD still says it is complete (a client that lost the
      // last answer sees it done), and a repeated last PATCH answers the image again
      const done = await tusHead(s.url, loc);
      assert.equal(done.status, 200);
      assert.equal(done.headers.get('upload-offset'), String(f.bytes.length));
      const again = await tusPatch(s.url, loc, f.bytes.length, new Uint8Array(0));
      assert.equal(again.status, 204, await again.clone().text());
      assert.equal(again.headers.get('imago-image-state'), 'ready');
      assert.deepEqual(readdirSync(join(s.dataDir, 'uploads-resumable')), [], 'no part file left');
      const dl = await fetch(`${s.url}/api/v1/images/${id}/file`);
      assert.equal(
        createHash('sha256')
          .update(Buffer.from(await dl.arrayBuffer()))
          .digest('hex'),
        f.sha256,
      );
    });

    test('creation-with-upload: the whole file in the POST', async () => {
      const f = randomFile(`cwu-${dialect}.raw`, 1024 * 1024, 2);
      const id = await createImage(s.url, `tus-cwu-${dialect}`);
      const r = await fetch(`${s.url}/api/v1/uploads`, {
        method: 'POST',
        headers: {
          ...TUS,
          'upload-length': String(f.bytes.length),
          'upload-metadata': `image_id ${b64(id)}`,
          'content-type': 'application/offset+octet-stream',
        },
        body: f.bytes,
      });
      assert.equal(r.status, 201, await r.clone().text());
      assert.equal(r.headers.get('upload-offset'), String(f.bytes.length));
      const img = (await apiRequest(s, 'GET', `/api/v1/images/${id}`)).json!;
      assert.equal(img.digest, `sha256:${f.sha256}`);
      assert.equal(img.state, 'ready');
    });

    test('a connection cut mid-upload: HEAD gives the offset, PATCH from there; less than 10% sent twice', async () => {
      const size = 24 * 1024 * 1024;
      const f = randomFile(`cut-${dialect}.raw`, size, 3);
      const id = await createImage(s.url, `tus-cut-${dialect}`);
      const loc = (await tusCreate(s.url, id, size)).headers.get('location')!;
      const first = paced(f.bytes, { chunk: 256 * 1024, delayMs: 0, cutAt: 10 * 1024 * 1024 });
      await tusPatch(s.url, loc, 0, first.body).then(
        (r) => r.text(),
        () => undefined,
      );
      // the server notices the cut, keeps what arrived
      const offset = await waitFor('the offset after the cut', async () => {
        const h = await tusHead(s.url, loc);
        assert.equal(h.status, 200);
        const o = Number(h.headers.get('upload-offset'));
        return o > 0 ? o : undefined;
      });
      assert.ok(offset <= first.sent(), `offset ${offset} ≤ sent ${first.sent()}`);
      const rest = paced(f.bytes.subarray(offset), { chunk: 1024 * 1024, delayMs: 0 });
      const r = await tusPatch(s.url, loc, offset, rest.body);
      assert.equal(r.status, 204, await r.clone().text());
      const resent = first.sent() + rest.sent() - size;
      assert.ok(resent < size * 0.1, `bytes sent twice: ${resent} (< 10% of ${size})`);
      const img = (await apiRequest(s, 'GET', `/api/v1/images/${id}`)).json!;
      assert.equal(img.state, 'ready');
      assert.equal(img.digest, `sha256:${f.sha256}`);
    });

    test('a hostile image through tus: refused with the finding, the image in error with the reason', async () => {
      const base = await qemuCreate('tus-base.qcow2', 'qcow2', '16M');
      const overlay = await qemuCreate('tus-overlay.qcow2', 'qcow2', '16M', [`backing_file=${base}`, 'backing_fmt=qcow2']);
      const bytes = readFileSync(overlay);
      const id = await createImage(s.url, `tus-hostile-${dialect}`);
      const loc = (await tusCreate(s.url, id, bytes.length)).headers.get('location')!;
      const r = await tusPatch(s.url, loc, 0, bytes);
      assert.equal(r.status, 422);
      assert.match(r.headers.get('content-type') ?? '', /^application\/problem\+json/);
      assert.equal(r.headers.get('tus-resumable'), '1.0.0');
      const p = (await r.json()) as { code: string; detail: string };
      assert.equal(p.code, 'UNSAFE_IMAGE');
      assert.match(p.detail, /backing/i);
      const img = (await apiRequest(s, 'GET', `/api/v1/images/${id}`)).json!;
      assert.equal(img.state, 'error');
      assert.match(img.stateReason, /backing/i);
      assert.equal(img.digest, undefined, 'nothing stored');
    });

    test('a PATCH at the wrong offset is 409 and changes nothing', async () => {
      const f = randomFile(`off-${dialect}.raw`, 256 * 1024, 4);
      const id = await createImage(s.url, `tus-off-${dialect}`);
      const loc = (await tusCreate(s.url, id, f.bytes.length)).headers.get('location')!;
      assert.equal((await tusPatch(s.url, loc, 0, f.bytes.subarray(0, 1000))).status, 204);
      const r = await tusPatch(s.url, loc, 500, f.bytes.subarray(500));
      assert.equal(r.status, 409);
      assert.equal((await tusHead(s.url, loc)).headers.get('upload-offset'), '1000');
      // terminated: the image fails (upload again), the upload is gone
      const d = await fetch(new URL(loc, s.url), { method: 'DELETE', headers: TUS });
      assert.equal(d.status, 204);
      assert.equal((await tusHead(s.url, loc)).status, 404);
      const img = (await apiRequest(s, 'GET', `/api/v1/images/${id}`)).json!;
      assert.equal(img.state, 'error');
      assert.match(img.stateReason, /terminated/);
    });

    test('upload URL: curl -T to it works; its token is refused for another image (403) and by the rest of the API (401)', async () => {
      const f = randomFile(`url-${dialect}.raw`, 2 * 1024 * 1024, 5);
      const a = await createImage(s.url, `tus-url-a-${dialect}`);
      const b = await createImage(s.url, `tus-url-b-${dialect}`);
      const made = await apiRequest(s, 'POST', `/api/v1/images/${a}/upload-url`, { expiresIn: 600 });
      assert.equal(made.status, 201, made.text);
      const { url, token, tusEndpoint, expiresAt } = made.json as { url: string; token: string; tusEndpoint: string; expiresAt: string };
      assert.ok(url.includes(token) && token.startsWith('imagoup_'));
      assert.equal(tusEndpoint, `${s.url}/api/v1/uploads`);
      assert.ok(Date.parse(expiresAt) > Date.now() + 500_000 && Date.parse(expiresAt) <= Date.now() + 600_000);
      const auth = { authorization: `Bearer ${token}` };
      // another image through tus with this token: 403, image b untouched
      const other = await tusCreate(s.url, b, f.bytes.length, auth);
      assert.equal(other.status, 403, await other.clone().text());
      assert.equal((await apiRequest(s, 'GET', `/api/v1/images/${b}`)).json!.state, 'pending');
      // not an API token
      assert.equal((await fetch(`${s.url}/api/v1/images/${a}`, { headers: auth })).status, 401);
      const { stdout } = await promisify(execFile)('curl', ['-sS', '--fail-with-body', '-T', f.path, url]);
      const img = JSON.parse(stdout) as { state: string; digest: string };
      assert.equal(img.state, 'ready');
      assert.equal(img.digest, `sha256:${f.sha256}`);
      // the tus endpoint takes the token for its own image (a new image: a has its bytes now)
      // created "for upload" (Deckhouse's imageUploadURLs): the answer carries the upload URL
      const cMade = await apiRequest(s, 'POST', '/api/v1/images', { name: `tus-url-c-${dialect}`, upload: true });
      assert.equal(cMade.status, 201, cMade.text);
      const c = cMade.json!.id as string;
      const cTok = cMade.json!.uploadUrl.token as string;
      assert.equal(cMade.json!.uploadUrl.url, `${s.url}/api/v1/upload/${cTok}`);
      const created = await tusCreate(s.url, c, f.bytes.length, { authorization: `Bearer ${cTok}` });
      assert.equal(created.status, 201, await created.clone().text());
      const r = await tusPatch(s.url, created.headers.get('location')!, 0, f.bytes, { authorization: `Bearer ${cTok}` });
      assert.equal(r.status, 204, await r.clone().text());
      assert.equal((await apiRequest(s, 'GET', `/api/v1/images/${c}`)).json!.digest, `sha256:${f.sha256}`);
    });

    test('deleting the image removes its resumable upload and the received bytes', async () => {
      const f = randomFile(`del-${dialect}.raw`, 256 * 1024, 8);
      const id = await createImage(s.url, `tus-del-${dialect}`);
      const loc = (await tusCreate(s.url, id, f.bytes.length)).headers.get('location')!;
      assert.equal((await tusPatch(s.url, loc, 0, f.bytes.subarray(0, 4096))).status, 204);
      const part = join(s.dataDir, 'uploads-resumable', loc.split('/').pop()!);
      assert.ok(existsSync(part));
      assert.equal((await apiRequest(s, 'DELETE', `/api/v1/images/${id}`)).status, 204);
      await waitFor('the part file and the upload removed', async () =>
        existsSync(part) || (await s.app.resumable.inFlight()).has(loc.split('/').pop()!) ? undefined : true,
      );
      assert.equal((await tusHead(s.url, loc)).status, 404);
    });

    test('OPTIONS lists the extensions (no credentials needed, no CORS headers); no credentials: 401; Upload-Metadata without image_id: 400', async () => {
      const o = await fetch(`${s.url}/api/v1/uploads`, { method: 'OPTIONS', headers: { authorization: '' } });
      assert.equal(o.status, 204);
      assert.equal(o.headers.get('tus-version'), '1.0.0');
      assert.deepEqual(o.headers.get('tus-extension')!.split(',').sort(), ['creation', 'creation-with-upload', 'expiration', 'termination']);
      assert.equal(o.headers.get('access-control-allow-origin'), null);
      const id = await createImage(s.url, `tus-noauth-${dialect}`);
      assert.equal((await tusCreate(s.url, id, 10, { authorization: '' })).status, 401);
      const r = await fetch(`${s.url}/api/v1/uploads`, { method: 'POST', headers: { ...TUS, 'upload-length': '10' } });
      assert.equal(r.status, 400);
      assert.match(((await r.json()) as { detail: string }).detail, /image_id/);
    });
  });
}

test('an idle upload has its ingest suspended (staging deleted, image still importing) and rebuilt from the received bytes on the next PATCH', async () => {
  const s = await startTestServer({ env: { IMAGO_UPLOAD_IDLE_SUSPEND: '1s' } });
  try {
    const f = randomFile('idle.raw', 4 * 1024 * 1024, 9);
    const id = await createImage(s.url, 'tus-idle');
    const loc = (await tusCreate(s.url, id, f.bytes.length)).headers.get('location')!;
    const half = 2 * 1024 * 1024 + 5;
    const staging = join(s.dataDir, 'uploads');
    const stagingEntries = () => (existsSync(staging) ? readdirSync(staging) : []);
    assert.equal((await tusPatch(s.url, loc, 0, f.bytes.subarray(0, half))).status, 204);
    assert.equal(stagingEntries().length, 1, 'the live ingest stages what it received');
    await waitFor('the staging of the idle ingest deleted', () => (stagingEntries().length === 0 ? true : undefined));
    await new Promise((r) => setTimeout(r, 300));
    assert.equal((await apiRequest(s, 'GET', `/api/v1/images/${id}`)).json!.state, 'importing', 'suspended, not failed');
    assert.equal((await tusHead(s.url, loc)).headers.get('upload-offset'), String(half));
    const r = await tusPatch(s.url, loc, half, f.bytes.subarray(half));
    assert.equal(r.status, 204, await r.clone().text());
    const img = (await apiRequest(s, 'GET', `/api/v1/images/${id}`)).json!;
    assert.equal(img.state, 'ready');
    assert.equal(img.digest, `sha256:${f.sha256}`);
  } finally {
    await s.stop();
  }
});

test('an expired upload: 410 or 404, its image fails, its bytes are removed', async () => {
  const s = await startTestServer({ env: { IMAGO_UPLOAD_TTL: '1' } });
  try {
    const f = randomFile('exp.raw', 64 * 1024, 6);
    const id = await createImage(s.url, 'tus-expire');
    const loc = (await tusCreate(s.url, id, f.bytes.length)).headers.get('location')!;
    assert.equal((await tusPatch(s.url, loc, 0, f.bytes.subarray(0, 1000))).status, 204);
    await new Promise((r) => setTimeout(r, 1200));
    const h = await tusHead(s.url, loc);
    assert.ok([404, 410].includes(h.status), `HEAD after expiry: ${h.status}`);
    const p = await tusPatch(s.url, loc, 1000, f.bytes.subarray(1000));
    assert.ok([404, 410].includes(p.status), `PATCH after expiry: ${p.status}`);
    assert.equal(await s.app.resumable.expire(), 1);
    const img = (await apiRequest(s, 'GET', `/api/v1/images/${id}`)).json!;
    assert.equal(img.state, 'error');
    assert.match(img.stateReason, /expired/);
    assert.equal((await tusHead(s.url, loc)).status, 404);
    assert.equal(existsSync(join(s.dataDir, 'uploads-resumable', loc.split('/').pop()!)), false, 'the part file is removed');
  } finally {
    await s.stop();
  }
});

for (const dialect of ['sqlite', 'postgres'] as Dialect[]) {
  test(`imago serve killed (SIGKILL) mid-upload, restarted: HEAD answers the stored offset, the upload resumes and ends ready (${dialect})`, async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'imago-tus-kill-'));
    after(() => rmSync(dataDir, { recursive: true, force: true }));
    const env: Record<string, string> = {};
    if (dialect === 'postgres') {
      const db = await freshPgDatabase();
      env.IMAGO_DATABASE_URL = db.url;
      after(() => db.drop());
    }
    const size = 16 * 1024 * 1024;
    const f = randomFile(`kill-${dialect}.raw`, size, 7);
    let srv = await spawnServer(dataDir, { env });
    try {
      const id = await createImage(srv.url, 'tus-kill');
      const loc = (await tusCreate(srv.url, id, size)).headers.get('location')!;
      const part = join(dataDir, 'uploads-resumable', loc.split('/').pop()!);
      const slow = paced(f.bytes, { chunk: 256 * 1024, delayMs: 20 });
      const patching = tusPatch(srv.url, loc, 0, slow.body).catch((e: unknown) => e);
      await waitFor('a few MiB on the server', () => (statSync(part).size >= 3 * 1024 * 1024 ? true : undefined));
      await srv.kill9();
      await patching;
      const onDisk = statSync(part).size;
      assert.ok(onDisk > 0 && onDisk < size, `part file holds ${onDisk} bytes`);
      srv = await spawnServer(dataDir, { env });
      const img0 = (await (await fetch(`${srv.url}/api/v1/images/${id}`)).json()) as { state: string };
      assert.equal(img0.state, 'importing', 'the restart leaves a resumable upload importing');
      const h = await tusHead(srv.url, loc);
      assert.equal(h.status, 200);
      const offset = Number(h.headers.get('upload-offset'));
      assert.equal(offset, onDisk, 'the offset is what the server stored');
      const r = await tusPatch(srv.url, loc, offset, f.bytes.subarray(offset));
      assert.equal(r.status, 204, await r.clone().text());
      const img = (await (await fetch(`${srv.url}/api/v1/images/${id}`)).json()) as { state: string; digest: string };
      assert.equal(img.state, 'ready');
      assert.equal(img.digest, `sha256:${f.sha256}`);
      assert.ok(srv.alive());
    } finally {
      await srv.stop();
    }
  });
}

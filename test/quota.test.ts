/**
 * Quotas at, below and above each limit, over the REST API of a real server (SQLite and
 * PostgreSQL): image count, stored bytes (announced and unannounced uploads, dedup counted in
 * full), staging bytes, concurrent imports; concurrent uploads racing for the last bytes; the
 * explanation `quota show` gives. Also: a token valid when an upload starts carries it to its
 * end, and the audit log records who did what, allowed or refused.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startTestServer, type Dialect, type TestServer } from './support/server.js';

const MiB = 1024 * 1024;

for (const dialect of ['sqlite', 'postgres'] as Dialect[]) {
  describe(`quotas (${dialect})`, () => {
    let s: TestServer;
    let writer: string;
    let source: http.Server;
    let sourceUrl: string;

    async function call(token: string | undefined, method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
      const headers: Record<string, string> = {};
      if (token) headers.authorization = `Bearer ${token}`;
      if (body !== undefined) headers['content-type'] = 'application/json';
      const r = await fetch(`${s.url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) }).catch((e: Error) => {
        throw new Error(`${method} ${path}: ${e.message} (${String((e as { cause?: unknown }).cause)})`);
      });
      const text = await r.text();
      return { status: r.status, json: text ? JSON.parse(text) : undefined };
    }
    const admin = (method: string, path: string, body?: unknown) => call(s.token, method, path, body);

    /** PUT bytes; `announce: false` sends them chunked without a length. */
    async function upload(token: string, id: string, bytes: Uint8Array, opts: { announce?: boolean; delayMs?: number } = {}) {
      const announce = opts.announce ?? true;
      const chunk = 256 * 1024;
      let off = 0;
      const body = new ReadableStream<Uint8Array>({
        async pull(ctrl) {
          if (off >= bytes.length) return ctrl.close();
          if (opts.delayMs) await new Promise((r) => setTimeout(r, opts.delayMs));
          ctrl.enqueue(bytes.subarray(off, off + chunk));
          off += chunk;
        },
      });
      const headers: Record<string, string> = { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream' };
      if (announce) headers['x-image-size'] = String(bytes.length);
      const r = await fetch(`${s.url}/api/v1/images/${id}/file`, { method: 'PUT', headers, body, duplex: 'half' } as RequestInit).catch((e: Error) => e);
      if (r instanceof Error) return { status: 0, json: { detail: r.message } as any };
      const text = await r.text();
      return { status: r.status, json: text ? JSON.parse(text) : undefined };
    }

    async function newImage(project: string, name = 'img'): Promise<string> {
      const r = await call(writer, 'POST', '/api/v1/images', { name, project });
      assert.equal(r.status, 201, JSON.stringify(r.json));
      return r.json.id;
    }
    const usage = async (p: string) => (await admin('GET', `/api/v1/projects/${p}/quota`)).json.usage;

    before(async () => {
      // a slow URL source for the imports limit: 4 MiB over ~2 s
      source = http.createServer((req, res) => {
        const total = 4 * MiB;
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(total) });
        let sent = 0;
        const t = setInterval(() => {
          if (sent >= total || res.destroyed) {
            clearInterval(t);
            res.end();
            return;
          }
          res.write(Buffer.alloc(256 * 1024, 1));
          sent += 256 * 1024;
        }, 120);
      });
      await new Promise<void>((r) => source.listen(0, '127.0.0.1', r));
      sourceUrl = `http://127.0.0.1:${(source.address() as AddressInfo).port}/disk.raw`;
      s = await startTestServer({ dialect, env: { IMAGO_IMPORT_ALLOW: '127.0.0.1' } });
      for (const p of ['q-images', 'q-bytes', 'q-race', 'q-staging', 'q-imports', 'q-count'])
        assert.equal((await admin('POST', '/api/v1/projects', { name: p })).status, 201);
      const projects = ['q-images', 'q-bytes', 'q-race', 'q-staging', 'q-imports', 'q-count'];
      // one user, writer everywhere (grants), with a token per project would be one role only: use OIDC-less grants + a token each
      writer = '';
      const tokens: Record<string, string> = {};
      for (const p of projects) tokens[p] = (await admin('POST', '/api/v1/tokens', { name: `w-${p}`, project: p, role: 'writer', user: 'wendy' })).json.token;
      // the tests pick the token of the project they work in
      writerFor = (p: string) => tokens[p]!;
    });
    let writerFor: (p: string) => string;
    after(async () => {
      await s?.stop();
      await new Promise((r) => source?.close(r));
    });

    test('image count: at the limit creates, above it refuses naming limit and use; delete frees a slot', async () => {
      writer = writerFor('q-images');
      assert.equal((await admin('PUT', '/api/v1/projects/q-images/quota', { images: 2 })).status, 200);
      const a = await newImage('q-images', 'a');
      await newImage('q-images', 'b');
      const r = await call(writer, 'POST', '/api/v1/images', { name: 'c', project: 'q-images' });
      assert.equal(r.status, 413);
      assert.equal(r.json.code, 'QUOTA_EXCEEDED');
      assert.match(r.json.detail, /image count quota: adding 1 to 2 in use exceeds the limit of 2/);
      assert.equal(r.json.limit, 'images');
      assert.equal((await call(writer, 'DELETE', `/api/v1/images/${a}`)).status, 204);
      await newImage('q-images', 'c');
      assert.equal((await usage('q-images')).images, 2);
    });

    test('stored bytes: below and exactly at the limit pass; one byte over is refused before any byte is accepted', async () => {
      writer = writerFor('q-bytes');
      await admin('PUT', '/api/v1/projects/q-bytes/quota', { storedBytes: 3 * MiB });
      const one = await newImage('q-bytes');
      assert.equal((await upload(writer, one, randomBytes(MiB))).status, 200);
      const two = await newImage('q-bytes');
      assert.equal((await upload(writer, two, randomBytes(2 * MiB))).status, 200, 'exactly at the limit');
      assert.equal((await usage('q-bytes')).storedBytes, 3 * MiB);
      // over: refused up front (the image never starts importing), naming the limit and the use
      await admin('PUT', '/api/v1/projects/q-bytes/quota', { storedBytes: 3 * MiB + 10 });
      const three = await newImage('q-bytes');
      const r = await upload(writer, three, randomBytes(11));
      assert.equal(r.status, 413);
      assert.equal(r.json.code, 'QUOTA_EXCEEDED');
      assert.match(r.json.detail, /stored bytes quota: adding 11 bytes to 3145728 bytes in use exceeds the limit of 3145738 bytes/);
      const img = (await call(writer, 'GET', `/api/v1/images/${three}`)).json;
      assert.equal(img.state, 'pending', 'no byte was accepted: the image is as before');
      assert.equal((await upload(writer, three, randomBytes(10))).status, 200, 'the remaining 10 bytes fit');
      // unannounced (chunked) upload over the limit: stopped while streaming, nothing counted
      await admin('PUT', '/api/v1/projects/q-bytes/quota', { storedBytes: 4 * MiB });
      const four = await newImage('q-bytes');
      const before = (await usage('q-bytes')).storedBytes;
      const big = await upload(writer, four, randomBytes(2 * MiB), { announce: false });
      assert.equal(big.status, 413, JSON.stringify(big.json));
      assert.equal(big.json.code, 'QUOTA_EXCEEDED');
      assert.equal((await call(writer, 'GET', `/api/v1/images/${four}`)).json.state, 'error');
      assert.equal((await usage('q-bytes')).storedBytes, before);
      // dedup: the same bytes in two images count twice, and are shown as shared
      await admin('PUT', '/api/v1/projects/q-bytes/quota', { storedBytes: null });
      const same = randomBytes(MiB / 2);
      const d1 = await newImage('q-bytes');
      const d2 = await newImage('q-bytes');
      await upload(writer, d1, same);
      await upload(writer, d2, same);
      const u = await usage('q-bytes');
      assert.equal(u.storedBytes, before + MiB);
      assert.equal(u.sharedBytes, MiB);
      // deleting one: counted no more
      await call(writer, 'DELETE', `/api/v1/images/${d2}`);
      assert.equal((await usage('q-bytes')).storedBytes, before + MiB / 2);
    });

    test('concurrent uploads racing for the last bytes: exactly one wins', async () => {
      writer = writerFor('q-race');
      await admin('PUT', '/api/v1/projects/q-race/quota', { storedBytes: 10 * MiB });
      const ids = await Promise.all([1, 2, 3, 4].map((i) => newImage('q-race', `r${i}`)));
      const results = await Promise.all(ids.map((id) => upload(writer, id, randomBytes(6 * MiB), { delayMs: 5 })));
      const statuses = results.map((r) => r.status).sort();
      assert.deepEqual(statuses, [200, 413, 413, 413], JSON.stringify(results.map((r) => r.json?.detail)));
      const u = await usage('q-race');
      assert.equal(u.storedBytes, 6 * MiB);
      assert.equal(u.stagingBytes, 0);
    });

    test('staging bytes: a running upload holds its reservation; released when it ends', async () => {
      writer = writerFor('q-staging');
      await admin('PUT', '/api/v1/projects/q-staging/quota', { stagingBytes: 5 * MiB });
      const slow = await newImage('q-staging', 'slow');
      const other = await newImage('q-staging', 'other');
      const running = upload(writer, slow, randomBytes(4 * MiB), { delayMs: 100 });
      for (let i = 0; i < 100 && (await usage('q-staging')).stagingBytes === 0; i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal((await usage('q-staging')).stagingBytes, 4 * MiB);
      const r = await upload(writer, other, randomBytes(2 * MiB));
      assert.equal(r.status, 413);
      assert.match(r.json.detail, /bytes in staging/);
      assert.equal((await running).status, 200);
      assert.equal((await usage('q-staging')).stagingBytes, 0);
      assert.equal((await upload(writer, other, randomBytes(2 * MiB))).status, 200);
    });

    test('concurrent imports: the second import is refused while the first runs', async () => {
      writer = writerFor('q-imports');
      await admin('PUT', '/api/v1/projects/q-imports/quota', { imports: 1 });
      const a = await newImage('q-imports', 'a');
      const b = await newImage('q-imports', 'b');
      const first = await call(writer, 'POST', `/api/v1/images/${a}/import`, { url: sourceUrl });
      assert.equal(first.status, 202, JSON.stringify(first.json));
      const second = await call(writer, 'POST', `/api/v1/images/${b}/import`, { url: sourceUrl });
      assert.equal(second.status, 413);
      assert.match(second.json.detail, /concurrent imports/);
      for (let i = 0; i < 200; i++) {
        if ((await call(writer, 'GET', `/api/v1/images/${a}`)).json.state === 'ready') break;
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal((await call(writer, 'GET', `/api/v1/images/${a}`)).json.state, 'ready');
      assert.equal((await call(writer, 'POST', `/api/v1/images/${b}/import`, { url: sourceUrl })).status, 202);
    });

    test('quota show explains the numbers; only server admins set limits', async () => {
      writer = writerFor('q-count');
      const q = await call(writer, 'GET', '/api/v1/projects/q-count/quota');
      assert.equal(q.status, 200);
      assert.ok(q.json.rules.some((r: string) => /counted in full for each image/.test(r)));
      assert.deepEqual(q.json.limits, {});
      assert.equal((await call(writer, 'PUT', '/api/v1/projects/q-count/quota', { images: 1000 })).status, 403);
      assert.equal((await call(writer, 'GET', '/api/v1/projects/q-bytes/quota')).status, 404, 'another project is not even known');
      assert.equal((await admin('PUT', '/api/v1/projects/q-count/quota', { images: -1 })).status, 400);
    });

    test('a token valid when the upload starts carries it to the end, then stops working', async () => {
      writer = writerFor('q-count');
      const expiresAt = Date.now() + 3000;
      const short = (
        await admin('POST', '/api/v1/tokens', {
          name: 'short',
          project: 'q-count',
          role: 'writer',
          user: 'wendy',
          expiresAt: new Date(expiresAt).toISOString(),
        })
      ).json;
      const id = (await call(short.token, 'POST', '/api/v1/images', { name: 'long-upload' })).json.id;
      const r = await upload(short.token, id, randomBytes(4 * MiB), { delayMs: 250 });
      assert.ok(Date.now() > expiresAt, 'the upload outlived the token');
      assert.equal(r.status, 200, JSON.stringify(r.json));
      assert.equal(r.json.state, 'ready');
      const after = await call(short.token, 'GET', `/api/v1/images/${id}`);
      assert.equal(after.status, 401);
      assert.match(after.json.detail, /expired/);
    });

    test('audit: who, what, target, when, from where, result — refusals included; project admins see their project', async () => {
      const id = (await call(writerFor('q-count'), 'POST', '/api/v1/images', { name: 'audited' })).json.id;
      const reader = (await admin('POST', '/api/v1/tokens', { name: 'rd', project: 'q-count', role: 'reader', user: 'rex' })).json.token;
      assert.equal((await call(reader, 'DELETE', `/api/v1/images/${id}`)).status, 403);
      assert.equal((await call(writerFor('q-count'), 'DELETE', `/api/v1/images/${id}`)).status, 204);
      const log = (await admin('GET', `/api/v1/audit?target=${id}`)).json.entries as any[];
      const summary = log.map((e) => `${e.action} ${e.result} ${e.actor.split(' ')[0]}`).reverse();
      assert.deepEqual(summary, ['image.delete FORBIDDEN rex', 'image.delete ok wendy']);
      for (const e of log) {
        assert.equal(e.project, 'q-count');
        assert.equal(e.remote, '127.0.0.1');
        assert.ok(Date.now() - Date.parse(e.at) < 60_000);
      }
      const created = (await admin('GET', `/api/v1/audit?action=image.create&project=q-count`)).json.entries as any[];
      assert.ok(created.some((e) => e.target === 'audited' && e.detail?.id === id));
      // a project admin reads its project's entries, a reader does not
      const pa = (await admin('POST', '/api/v1/tokens', { name: 'pa', project: 'q-count', role: 'admin', user: 'pat' })).json.token;
      assert.equal((await call(pa, 'GET', '/api/v1/audit?project=q-count')).status, 200);
      assert.equal((await call(pa, 'GET', '/api/v1/audit')).status, 403);
      assert.equal((await call(reader, 'GET', '/api/v1/audit?project=q-count')).status, 403);
    });
  });
}

/**
 * The OCI distribution spec v1.1 conformance workflows (pull, push, content discovery, content
 * management) over real HTTP against a real server, SQLite and PostgreSQL: monolithic and chunked
 * pushes (out of order → 416, status, resume after a restart, expiry), cross-repository mount and
 * its fallback, manifests of the four media types with Accept negotiation, tags and catalog
 * pagination, referrers, auth through the one access model (challenge, token endpoint, Basic,
 * Bearer, reader/writer/outsider), quotas, one store with the REST API, GC, and hostile input.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import { startApp } from '../src/app.js';
import { DomainError } from '../src/domain/errors.js';
import { apiRequest, startTestServer, type Dialect, type TestServer } from './support/server.js';
import { DOCKER_LIST, DOCKER_MANIFEST, imageManifest, OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, OciClient, sha256 } from './support/oci-client.js';

async function countBlobs(s: TestServer): Promise<number> {
  let n = 0;
  for await (const b of s.app.store.list()) if (b) n++;
  return n;
}

for (const dialect of ['sqlite', 'postgres'] as Dialect[]) {
  describe(`OCI distribution (${dialect})`, () => {
    let s: TestServer;
    let admin: OciClient;
    let writer: OciClient;
    let reader: OciClient;
    let outsider: OciClient;
    let anon: OciClient;

    const token = async (project: string, role: string, user: string) =>
      (await apiRequest(s, 'POST', '/api/v1/tokens', { name: `${user}-${project}`, project, role, user })).json!.token as string;

    before(async () => {
      s = await startTestServer({ dialect });
      for (const p of ['proj', 'other', 'quota']) assert.equal((await apiRequest(s, 'POST', '/api/v1/projects', { name: p })).status, 201);
      admin = new OciClient(s.url, s.token);
      writer = admin.as(await token('proj', 'writer', 'wendy'));
      reader = admin.as(await token('proj', 'reader', 'rita'));
      outsider = admin.as(await token('other', 'writer', 'otto'));
      anon = admin.as(undefined);
    });
    after(async () => {
      await s?.stop();
    });

    describe('auth', () => {
      test('anonymous gets a Bearer challenge; the token endpoint takes Basic and its token works as Bearer', async () => {
        const r = await anon.req('GET', '/v2/');
        assert.equal(r.status, 401);
        assert.equal(r.json.errors[0].code, 'UNAUTHORIZED');
        const ch = r.headers.get('www-authenticate')!;
        assert.match(ch, /^Bearer realm="http:\/\/127\.0\.0\.1:\d+\/v2\/token",service="imago"$/);
        const pull = await anon.req('GET', '/v2/proj/x/manifests/latest');
        assert.equal(pull.status, 401);
        assert.match(pull.headers.get('www-authenticate')!, /scope="repository:proj\/x:pull"/);
        const push = await anon.req('POST', '/v2/proj/x/blobs/uploads/');
        assert.match(push.headers.get('www-authenticate')!, /scope="repository:proj\/x:pull,push"/);

        const noCreds = await anon.req('GET', '/v2/token?service=imago&scope=repository:proj/x:pull');
        assert.equal(noCreds.status, 401);
        assert.match(noCreds.headers.get('www-authenticate')!, /^Basic /);
        const t = await writer.req('GET', '/v2/token?service=imago&scope=repository:proj/x:pull,push');
        assert.equal(t.status, 200);
        assert.equal(typeof t.json.token, 'string');
        assert.equal(t.json.access_token, t.json.token);
        const bearer = await anon.req('GET', '/v2/', { headers: { authorization: `Bearer ${t.json.token}` } });
        assert.equal(bearer.status, 200);
        assert.equal(bearer.headers.get('docker-distribution-api-version'), 'registry/2.0');
        assert.equal((await writer.req('GET', '/v2/')).status, 200);

        const bad = await anon.req('GET', '/v2/token', {
          headers: { authorization: `Basic ${Buffer.from('u:imago_0123456789abcdef_nope').toString('base64')}` },
        });
        assert.equal(bad.status, 401);
        const badBasic = await anon.req('GET', '/v2/', { headers: { authorization: `Basic ${Buffer.from('u:wrong').toString('base64')}` } });
        assert.equal(badBasic.status, 401);
        assert.ok(badBasic.headers.get('www-authenticate'));
      });

      test("docker's OAuth2 token endpoint (POST /v2/token): password and refresh_token grants, RFC 6749 refusals", async () => {
        const writerToken = await token('proj', 'writer', 'wanda');
        const post = (form: Record<string, string>, contentType = 'application/x-www-form-urlencoded') =>
          anon.req('POST', '/v2/token', { body: new URLSearchParams(form).toString(), headers: { 'content-type': contentType } });
        // as docker sends it at login with a refresh token wanted
        const login = await post({
          grant_type: 'password',
          username: 'wanda',
          password: writerToken,
          service: 'imago',
          client_id: 'docker',
          access_type: 'offline',
        });
        assert.equal(login.status, 200, login.body.toString());
        assert.equal(login.headers.get('cache-control'), 'no-store');
        assert.equal(typeof login.json.access_token, 'string');
        assert.equal(typeof login.json.refresh_token, 'string');
        assert.ok(login.json.expires_in >= 60, 'never under 60 s (the spec)');
        assert.equal(login.json.scope, '');
        assert.ok(!Number.isNaN(Date.parse(login.json.issued_at)));
        const asBearer = (t: string) => ({ headers: { authorization: `Bearer ${t}` } });
        assert.equal((await anon.req('GET', '/v2/', asBearer(login.json.access_token))).status, 200);
        assert.equal((await anon.req('POST', '/v2/proj/oauth/blobs/uploads/', asBearer(login.json.access_token))).status, 202, 'the access token pushes');
        // without access_type=offline: no refresh token
        const online = await post({ grant_type: 'password', username: 'wanda', password: writerToken, service: 'imago', client_id: 'docker' });
        assert.equal(online.status, 200);
        assert.equal(online.json.refresh_token, undefined);
        // the refresh grant, as docker sends it for a scope: an access token, the same refresh token
        const scope = 'repository:proj/oauth:pull,push';
        const refreshed = await post({ grant_type: 'refresh_token', refresh_token: login.json.refresh_token, service: 'imago', client_id: 'docker', scope });
        assert.equal(refreshed.status, 200, refreshed.body.toString());
        assert.equal(refreshed.json.refresh_token, login.json.refresh_token);
        assert.equal(refreshed.json.scope, scope);
        assert.equal((await anon.req('GET', '/v2/', asBearer(refreshed.json.access_token))).status, 200);
        // refusals (RFC 6749 §5.2), each naming what is wrong
        const badPassword = await post({
          grant_type: 'password',
          username: 'wanda',
          password: 'imago_0123456789abcdef_nope',
          service: 'imago',
          client_id: 'x',
        });
        assert.equal(badPassword.status, 400);
        assert.equal(badPassword.json.error, 'invalid_grant');
        assert.match(badPassword.json.error_description, /password/);
        const badRefresh = await post({ grant_type: 'refresh_token', refresh_token: 'nope', service: 'imago', client_id: 'x' });
        assert.equal(badRefresh.json.error, 'invalid_grant');
        assert.match(badRefresh.json.error_description, /refresh token/);
        const code = await post({ grant_type: 'authorization_code', code: 'x', service: 'imago', client_id: 'x' });
        assert.equal(code.status, 400);
        assert.equal(code.json.error, 'unsupported_grant_type');
        const noGrant = await post({ username: 'wanda', password: writerToken });
        assert.equal(noGrant.json.error, 'invalid_request');
        assert.match(noGrant.json.error_description, /grant_type/);
        const noPassword = await post({ grant_type: 'password', username: 'wanda' });
        assert.equal(noPassword.json.error, 'invalid_request');
        assert.match(noPassword.json.error_description, /password/);
        const otherService = await post({ grant_type: 'password', password: writerToken, service: 'registry.docker.io' });
        assert.equal(otherService.json.error, 'invalid_request');
        assert.match(otherService.json.error_description, /service/);
        const json = await anon.req('POST', '/v2/token', { body: JSON.stringify({ grant_type: 'password' }), headers: { 'content-type': 'application/json' } });
        assert.equal(json.status, 400);
        assert.match(json.json.error_description, /x-www-form-urlencoded/);
        const huge = await post({ grant_type: 'password', password: 'x'.repeat(70_000) });
        assert.equal(huge.status, 400);
        assert.match(huge.json.error_description, /over/);
      });

      test('readers pull, writers push; outsiders see NAME_UNKNOWN whether or not the repository exists', async () => {
        const layer = await writer.pushBlob('proj/auth', 'auth layer');
        const cfg = await writer.pushBlob('proj/auth', '{}');
        const put = await writer.putManifest('proj/auth', 'v1', imageManifest({ digest: cfg, size: 2 }, [{ digest: layer, size: 10 }]), OCI_MANIFEST);
        assert.equal(put.status, 201);
        assert.equal((await reader.req('GET', '/v2/proj/auth/manifests/v1')).status, 200);
        assert.equal((await reader.req('GET', `/v2/proj/auth/blobs/${layer}`)).status, 200);
        const denied = await reader.req('POST', '/v2/proj/auth/blobs/uploads/');
        assert.equal(denied.status, 403);
        assert.equal(denied.json.errors[0].code, 'DENIED');
        assert.equal((await reader.req('DELETE', '/v2/proj/auth/manifests/v1')).status, 403);
        assert.equal((await reader.req('PUT', '/v2/proj/auth/manifests/v2', { body: '{}', headers: { 'content-type': OCI_MANIFEST } })).status, 403);

        const existing = await outsider.req('GET', '/v2/proj/auth/manifests/v1');
        const missing = await outsider.req('GET', '/v2/proj/nothing/manifests/v1');
        const noProject = await outsider.req('GET', '/v2/noproject/x/manifests/v1');
        for (const r of [existing, missing, noProject]) {
          assert.equal(r.status, 404);
          assert.equal(r.json.errors[0].code, 'NAME_UNKNOWN');
        }
        assert.equal(existing.json.errors[0].message.replace('auth', 'X'), missing.json.errors[0].message.replace('nothing', 'X'));
        assert.equal((await outsider.req('HEAD', `/v2/proj/auth/blobs/${layer}`)).status, 404);
        assert.equal((await outsider.req('POST', '/v2/proj/auth/blobs/uploads/')).status, 404);
        assert.equal((await outsider.req('GET', '/v2/proj/auth/tags/list')).status, 404);
      });
    });

    describe('push and pull', () => {
      test('monolithic POST + PUT, then HEAD and GET with Range', async () => {
        const bytes = Buffer.alloc(300_000);
        for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7) & 0xff;
        const digest = await writer.pushBlob('proj/mono', bytes);
        const head = await writer.req('HEAD', `/v2/proj/mono/blobs/${digest}`);
        assert.equal(head.status, 200);
        assert.equal(head.headers.get('content-length'), String(bytes.length));
        assert.equal(head.headers.get('docker-content-digest'), digest);
        assert.equal(head.body.length, 0);
        const get = await writer.req('GET', `/v2/proj/mono/blobs/${digest}`);
        assert.equal(get.status, 200);
        assert.ok(get.body.equals(bytes));
        const part = await writer.req('GET', `/v2/proj/mono/blobs/${digest}`, { headers: { range: 'bytes=1000-1999' } });
        assert.equal(part.status, 206);
        assert.equal(part.headers.get('content-range'), `bytes 1000-1999/${bytes.length}`);
        assert.ok(part.body.equals(bytes.subarray(1000, 2000)));
        const unknown = await writer.req('GET', `/v2/proj/mono/blobs/${sha256('never pushed')}`);
        assert.equal(unknown.status, 404);
        assert.equal(unknown.json.errors[0].code, 'BLOB_UNKNOWN');
        // a blob pushed to one repository is not readable through another
        assert.equal((await writer.req('HEAD', `/v2/proj/auth/blobs/${digest}`)).status, 404);
      });

      test('single POST with ?digest= stores the blob; a wrong digest stores nothing', async () => {
        const bytes = Buffer.from('one request, one blob');
        const digest = sha256(bytes);
        const r = await writer.req('POST', `/v2/proj/single/blobs/uploads/?digest=${digest}`, {
          body: bytes,
          headers: { 'content-type': 'application/octet-stream' },
        });
        assert.equal(r.status, 201);
        assert.equal(r.headers.get('location'), `/v2/proj/single/blobs/${digest}`);
        assert.equal(r.headers.get('docker-content-digest'), digest);
        assert.equal((await writer.req('HEAD', `/v2/proj/single/blobs/${digest}`)).status, 200);

        const before = await countBlobs(s);
        const other = Buffer.from('these bytes hash to something else');
        const wrong = await writer.req('POST', `/v2/proj/single/blobs/uploads/?digest=${sha256('not these')}`, { body: other });
        assert.equal(wrong.status, 400);
        assert.equal(wrong.json.errors[0].code, 'DIGEST_INVALID');
        assert.equal(await countBlobs(s), before, 'nothing kept');
        assert.equal((await writer.req('HEAD', `/v2/proj/single/blobs/${sha256(other)}`)).status, 404);
        const bad = await writer.req('POST', '/v2/proj/single/blobs/uploads/?digest=md5:abc', { body: other });
        assert.equal(bad.status, 400);
        assert.equal(bad.json.errors[0].code, 'DIGEST_INVALID');
      });

      test('chunked: PATCH with Content-Range, GET reports Range, out of order → 416, PUT closes', async () => {
        const bytes = Buffer.alloc(200_000);
        for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 13 + 5) & 0xff;
        const digest = sha256(bytes);
        const start = await writer.req('POST', '/v2/proj/chunked/blobs/uploads/');
        assert.equal(start.status, 202);
        const loc = start.headers.get('location')!;
        assert.match(loc, /^\/v2\/proj\/chunked\/blobs\/uploads\/[0-9a-f-]{36}$/);
        assert.ok(start.headers.get('docker-upload-uuid'));

        const c1 = await writer.req('PATCH', loc, {
          body: bytes.subarray(0, 65_536),
          headers: { 'content-range': '0-65535', 'content-type': 'application/octet-stream' },
        });
        assert.equal(c1.status, 202);
        assert.equal(c1.headers.get('range'), '0-65535');
        const status = await writer.req('GET', loc);
        assert.equal(status.status, 204);
        assert.equal(status.headers.get('range'), '0-65535');

        const gap = await writer.req('PATCH', loc, { body: bytes.subarray(100_000, 120_000), headers: { 'content-range': '100000-119999' } });
        assert.equal(gap.status, 416);
        assert.equal(gap.headers.get('range'), '0-65535');
        assert.equal(gap.json.errors[0].code, 'BLOB_UPLOAD_INVALID');
        const again = await writer.req('PATCH', loc, { body: bytes.subarray(0, 10), headers: { 'content-range': '0-9' } });
        assert.equal(again.status, 416);

        const c2 = await writer.req('PATCH', loc, { body: bytes.subarray(65_536, 150_000), headers: { 'content-range': `65536-149999` } });
        assert.equal(c2.status, 202);
        assert.equal(c2.headers.get('range'), '0-149999');
        // the last chunk comes with the PUT
        const put = await writer.req('PUT', `${loc}?digest=${digest}`, {
          body: bytes.subarray(150_000),
          headers: { 'content-type': 'application/octet-stream' },
        });
        assert.equal(put.status, 201, put.body.toString());
        assert.equal(put.headers.get('location'), `/v2/proj/chunked/blobs/${digest}`);
        const get = await writer.req('GET', `/v2/proj/chunked/blobs/${digest}`);
        assert.ok(get.body.equals(bytes));
        // the session is gone once closed
        const closed = await writer.req('GET', loc);
        assert.equal(closed.status, 404);
        assert.equal(closed.json.errors[0].code, 'BLOB_UPLOAD_UNKNOWN');
      });

      test('a chunk announced with one length and sent with another is refused; a wrong digest on PUT keeps the session', async () => {
        const start = await writer.req('POST', '/v2/proj/chunked/blobs/uploads/');
        const loc = start.headers.get('location')!;
        const mismatch = await writer.req('PATCH', loc, { body: Buffer.alloc(10), headers: { 'content-range': '0-19' } });
        assert.equal(mismatch.status, 400);
        assert.equal(mismatch.json.errors[0].code, 'BLOB_UPLOAD_INVALID');
        const bytes = Buffer.from('streamed chunk without Content-Range');
        assert.equal((await writer.req('PATCH', loc, { body: bytes })).status, 202);
        const wrong = await writer.req('PUT', `${loc}?digest=${sha256('other')}`);
        assert.equal(wrong.status, 400);
        assert.equal(wrong.json.errors[0].code, 'DIGEST_INVALID');
        assert.equal((await writer.req('GET', loc)).status, 204);
        assert.equal((await writer.req('PUT', `${loc}?digest=${sha256(bytes)}`)).status, 201);
      });

      test('a chunk cut off by the client is not kept: the session resumes at its last whole chunk', async () => {
        const bytes = Buffer.alloc(400_000);
        for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 17 + 3) & 0xff;
        const loc = (await writer.req('POST', '/v2/proj/cutoff/blobs/uploads/')).headers.get('location')!;
        assert.equal((await writer.req('PATCH', loc, { body: bytes.subarray(0, 100_000), headers: { 'content-range': '0-99999' } })).status, 202);
        const blobs = await countBlobs(s);
        // the second chunk announces 300,000 bytes, sends 150,000 and the connection drops
        await new Promise<void>((resolve) => {
          const u = new URL(`${s.url}${loc}`);
          const r = http.request({
            host: u.hostname,
            port: u.port,
            path: u.pathname,
            method: 'PATCH',
            headers: {
              authorization: `Basic ${Buffer.from(`u:${writer.token}`).toString('base64')}`,
              'content-range': '100000-399999',
              'content-length': '300000',
            },
          });
          r.on('error', () => resolve());
          r.write(bytes.subarray(100_000, 250_000), () => setTimeout(() => r.destroy(), 200));
          r.on('close', () => resolve());
        });
        await new Promise((r) => setTimeout(r, 300));
        assert.equal(await countBlobs(s), blobs, 'nothing half-written in the store');
        const status = await writer.req('GET', loc);
        assert.equal(status.headers.get('range'), '0-99999');
        assert.equal((await writer.req('PATCH', loc, { body: bytes.subarray(100_000), headers: { 'content-range': '100000-399999' } })).status, 202);
        assert.equal((await writer.req('PUT', `${loc}?digest=${sha256(bytes)}`)).status, 201);
        assert.ok((await writer.req('GET', `/v2/proj/cutoff/blobs/${sha256(bytes)}`)).body.equals(bytes));
      });

      test('two chunks racing for one offset: one is appended, the other is 416', async () => {
        const loc = (await writer.req('POST', '/v2/proj/race/blobs/uploads/')).headers.get('location')!;
        const a = Buffer.alloc(200_000, 0xaa);
        const b = Buffer.alloc(200_000, 0xbb);
        const results = await Promise.all([a, b].map((body) => writer.req('PATCH', loc, { body, headers: { 'content-range': '0-199999' } })));
        assert.deepEqual(results.map((r) => r.status).sort(), [202, 416]);
        const winner = results[0]!.status === 202 ? a : b;
        assert.equal((await writer.req('GET', loc)).headers.get('range'), '0-199999');
        assert.equal((await writer.req('PUT', `${loc}?digest=${sha256(winner)}`)).status, 201);
      });

      test('cancel: DELETE on the session, then BLOB_UPLOAD_UNKNOWN', async () => {
        const loc = (await writer.req('POST', '/v2/proj/cancel/blobs/uploads/')).headers.get('location')!;
        assert.equal((await writer.req('PATCH', loc, { body: 'abc' })).status, 202);
        assert.equal((await writer.req('DELETE', loc)).status, 204);
        for (const method of ['GET', 'PATCH', 'PUT', 'DELETE']) {
          const r = await writer.req(method, method === 'PUT' ? `${loc}?digest=${sha256('abc')}` : loc, method === 'PATCH' ? { body: 'def' } : {});
          assert.equal(r.status, 404, method);
          assert.equal(r.json.errors[0].code, 'BLOB_UPLOAD_UNKNOWN');
        }
        const unknown = await writer.req('GET', '/v2/proj/cancel/blobs/uploads/not-a-session');
        assert.equal(unknown.status, 404);
        // a session is its repository's: another repository's name does not reach it
        const loc2 = (await writer.req('POST', '/v2/proj/cancel/blobs/uploads/')).headers.get('location')!;
        assert.equal((await writer.req('GET', loc2.replace('/proj/cancel/', '/proj/elsewhere/'))).status, 404);
      });

      test('an upload idle past its lifetime expires: BLOB_UPLOAD_UNKNOWN, and its chunk is garbage for GC', async () => {
        const loc = (await writer.req('POST', '/v2/proj/expiry/blobs/uploads/')).headers.get('location')!;
        const chunk = Buffer.from(`chunk of a session that expires ${dialect}`);
        assert.equal((await writer.req('PATCH', loc, { body: chunk })).status, 202);
        const id = loc.split('/').pop()!;
        assert.ok((await s.app.uploads.referencedDigests()).has(sha256(chunk) as `sha256:${string}`), 'an open session keeps its chunk');
        // a day passes (the default lifetime is 24 h)
        await s.app.db.kysely
          .updateTable('oci_uploads')
          .set({ updated_at: Date.now() - 25 * 3600_000 })
          .where('id', '=', id)
          .execute();
        const r = await writer.req('PATCH', loc, { body: 'more' });
        assert.equal(r.status, 404);
        assert.equal(r.json.errors[0].code, 'BLOB_UPLOAD_UNKNOWN');
        assert.match(r.json.errors[0].message, /expired/);
        assert.ok(!(await s.app.uploads.referencedDigests()).has(sha256(chunk) as `sha256:${string}`));
        const plan = (await s.app.gc({ dryRun: true })).plan;
        assert.ok(
          plan.candidates.some((b) => b.digest === sha256(chunk)),
          'gc --check lists the expired chunk',
        );
        // a session that expired and was never touched again: gc --check lists its chunk too
        const loc2 = (await writer.req('POST', '/v2/proj/expiry/blobs/uploads/')).headers.get('location')!;
        const chunk2 = Buffer.from(`chunk of a session nobody comes back to ${dialect}`);
        assert.equal((await writer.req('PATCH', loc2, { body: chunk2 })).status, 202);
        assert.ok(!(await s.app.gc({ dryRun: true })).plan.candidates.some((b) => b.digest === sha256(chunk2)), 'live: kept');
        await s.app.db.kysely
          .updateTable('oci_uploads')
          .set({ updated_at: Date.now() - 25 * 3600_000 })
          .where('id', '=', loc2.split('/').pop()!)
          .execute();
        assert.ok(
          (await s.app.gc({ dryRun: true })).plan.candidates.some((b) => b.digest === sha256(chunk2)),
          'expired: listed',
        );
      });

      test('cross-repository mount from a readable repository; fallback to an upload otherwise', async () => {
        const bytes = Buffer.from('mount me');
        const digest = await writer.pushBlob('proj/src', bytes);
        const m = await writer.req('POST', `/v2/proj/dst/blobs/uploads/?mount=${digest}&from=proj/src`);
        assert.equal(m.status, 201);
        assert.equal(m.headers.get('location'), `/v2/proj/dst/blobs/${digest}`);
        assert.ok((await writer.req('GET', `/v2/proj/dst/blobs/${digest}`)).body.equals(bytes));

        // the outsider's own repository holds a blob the writer of proj may not read
        const secret = await outsider.pushBlob('other/private', 'secret bytes');
        const fallback = await writer.req('POST', `/v2/proj/dst/blobs/uploads/?mount=${secret}&from=other/private`);
        assert.equal(fallback.status, 202, 'not readable: a normal upload session instead');
        assert.match(fallback.headers.get('location')!, /\/blobs\/uploads\//);
        assert.equal((await writer.req('HEAD', `/v2/proj/dst/blobs/${secret}`)).status, 404);
        // a blob the source does not hold: an upload too
        assert.equal((await writer.req('POST', `/v2/proj/dst/blobs/uploads/?mount=${sha256('absent')}&from=proj/src`)).status, 202);
      });

      test('blob delete unlinks it from the repository', async () => {
        const digest = await writer.pushBlob('proj/del', 'delete me');
        assert.equal((await writer.req('DELETE', `/v2/proj/del/blobs/${digest}`)).status, 202);
        const gone = await writer.req('HEAD', `/v2/proj/del/blobs/${digest}`);
        assert.equal(gone.status, 404);
        assert.equal((await writer.req('DELETE', `/v2/proj/del/blobs/${digest}`)).status, 404);
      });
    });

    describe('manifests', () => {
      let cfg: string;
      let layer: string;
      const layerBytes = Buffer.from('a layer of bytes');

      before(async () => {
        cfg = await writer.pushBlob('proj/app', '{}');
        layer = await writer.pushBlob('proj/app', layerBytes);
      });

      test('PUT by tag, GET/HEAD by tag and digest with Accept, byte-identical', async () => {
        const body = JSON.stringify(
          imageManifest({ digest: cfg, size: 2 }, [{ digest: layer, size: layerBytes.length }], { annotations: { 'org.opencontainers.image.title': 'app' } }),
        );
        const put = await writer.putManifest('proj/app', 'v1', body, OCI_MANIFEST);
        assert.equal(put.status, 201, put.body.toString());
        const digest = sha256(body);
        assert.equal(put.headers.get('docker-content-digest'), digest);
        assert.equal(put.headers.get('location'), `/v2/proj/app/manifests/${digest}`);
        for (const ref of ['v1', digest]) {
          const get = await reader.req('GET', `/v2/proj/app/manifests/${ref}`, { headers: { accept: `${DOCKER_MANIFEST}, ${OCI_MANIFEST};q=0.9` } });
          assert.equal(get.status, 200);
          assert.equal(get.headers.get('content-type'), OCI_MANIFEST);
          assert.equal(get.headers.get('docker-content-digest'), digest);
          assert.equal(get.body.toString(), body);
          const head = await reader.req('HEAD', `/v2/proj/app/manifests/${ref}`);
          assert.equal(head.status, 200);
          assert.equal(head.headers.get('content-length'), String(Buffer.byteLength(body)));
        }
        const notAccepted = await reader.req('GET', '/v2/proj/app/manifests/v1', { headers: { accept: DOCKER_MANIFEST } });
        assert.equal(notAccepted.status, 404);
        assert.equal(notAccepted.json.errors[0].code, 'MANIFEST_UNKNOWN');
        assert.match(notAccepted.json.errors[0].message, /Accept/);
        const missing = await reader.req('GET', '/v2/proj/app/manifests/nope');
        assert.equal(missing.json.errors[0].code, 'MANIFEST_UNKNOWN');
      });

      test('PUT by digest is verified; missing blobs → MANIFEST_BLOB_UNKNOWN; a wrong size → MANIFEST_INVALID', async () => {
        const body = JSON.stringify(imageManifest({ digest: cfg, size: 2 }, [{ digest: layer, size: layerBytes.length }], { annotations: { n: '2' } }));
        const wrong = await writer.putManifest('proj/app', sha256('something else'), body, OCI_MANIFEST);
        assert.equal(wrong.status, 400);
        assert.equal(wrong.json.errors[0].code, 'DIGEST_INVALID');
        const right = await writer.putManifest('proj/app', sha256(body), body, OCI_MANIFEST);
        assert.equal(right.status, 201);

        const absent = sha256('never pushed layer');
        const dangling = await writer.putManifest('proj/app', 'dangling', imageManifest({ digest: cfg, size: 2 }, [{ digest: absent, size: 5 }]), OCI_MANIFEST);
        assert.equal(dangling.status, 400);
        assert.equal(dangling.json.errors[0].code, 'MANIFEST_BLOB_UNKNOWN');
        assert.equal((await writer.req('GET', '/v2/proj/app/manifests/dangling')).status, 404, 'nothing tagged');
        const size = await writer.putManifest('proj/app', 'size', imageManifest({ digest: cfg, size: 2 }, [{ digest: layer, size: 999 }]), OCI_MANIFEST);
        assert.equal(size.status, 400);
        assert.equal(size.json.errors[0].code, 'MANIFEST_INVALID');
      });

      test('Docker schema 2 manifest and manifest list; OCI index; tags move', async () => {
        const docker = {
          schemaVersion: 2,
          mediaType: DOCKER_MANIFEST,
          config: { mediaType: 'application/vnd.docker.container.image.v1+json', digest: cfg, size: 2 },
          layers: [{ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', digest: layer, size: layerBytes.length }],
        };
        const dockerBody = JSON.stringify(docker);
        assert.equal((await writer.putManifest('proj/app', 'docker', dockerBody, DOCKER_MANIFEST)).status, 201);
        const got = await reader.req('GET', '/v2/proj/app/manifests/docker', { headers: { accept: DOCKER_MANIFEST } });
        assert.equal(got.headers.get('content-type'), DOCKER_MANIFEST);
        const list = {
          schemaVersion: 2,
          mediaType: DOCKER_LIST,
          manifests: [
            { mediaType: DOCKER_MANIFEST, digest: sha256(dockerBody), size: Buffer.byteLength(dockerBody), platform: { architecture: 'amd64', os: 'linux' } },
          ],
        };
        assert.equal((await writer.putManifest('proj/app', 'list', list, DOCKER_LIST)).status, 201);
        const index = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: list.manifests };
        assert.equal((await writer.putManifest('proj/app', 'index', index, OCI_INDEX)).status, 201);
        const idx = await reader.req('GET', '/v2/proj/app/manifests/index', { headers: { accept: `${OCI_INDEX}, ${OCI_MANIFEST}` } });
        assert.equal(idx.headers.get('content-type'), OCI_INDEX);
        const orphan = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: sha256('no such manifest'), size: 10 }] };
        const r = await writer.putManifest('proj/app', 'orphan', orphan, OCI_INDEX);
        assert.equal(r.status, 400);
        assert.equal(r.json.errors[0].code, 'MANIFEST_BLOB_UNKNOWN');
        // a tag moves to the manifest last put under it
        assert.equal((await writer.putManifest('proj/app', 'moving', dockerBody, DOCKER_MANIFEST)).status, 201);
        assert.equal((await writer.putManifest('proj/app', 'moving', index, OCI_INDEX)).status, 201);
        assert.equal((await reader.req('HEAD', '/v2/proj/app/manifests/moving')).headers.get('content-type'), OCI_INDEX);
      });

      test('DELETE by tag removes the tag; by digest the manifest and its tags', async () => {
        const body = JSON.stringify(imageManifest({ digest: cfg, size: 2 }, [{ digest: layer, size: layerBytes.length }], { annotations: { n: 'delete' } }));
        const digest = sha256(body);
        assert.equal((await writer.putManifest('proj/app', 'del-a', body, OCI_MANIFEST)).status, 201);
        assert.equal((await writer.putManifest('proj/app', 'del-b', body, OCI_MANIFEST)).status, 201);
        assert.equal((await writer.req('DELETE', '/v2/proj/app/manifests/del-a')).status, 202);
        assert.equal((await reader.req('GET', '/v2/proj/app/manifests/del-a')).status, 404);
        assert.equal((await reader.req('GET', `/v2/proj/app/manifests/${digest}`)).status, 200);
        assert.equal((await writer.req('DELETE', `/v2/proj/app/manifests/${digest}`)).status, 202);
        assert.equal((await reader.req('GET', `/v2/proj/app/manifests/${digest}`)).status, 404);
        assert.equal((await reader.req('GET', '/v2/proj/app/manifests/del-b')).status, 404);
        assert.equal((await writer.req('DELETE', `/v2/proj/app/manifests/${digest}`)).status, 404);
      });

      test('DELETE by digest of a manifest an index of the repository lists is refused, naming the index; allowed once the index is gone', async () => {
        const child = JSON.stringify(imageManifest({ digest: cfg, size: 2 }, [{ digest: layer, size: layerBytes.length }], { annotations: { n: 'child' } }));
        assert.equal((await writer.req('POST', `/v2/proj/listed/blobs/uploads/?mount=${cfg}&from=proj/app`)).status, 201);
        assert.equal((await writer.req('POST', `/v2/proj/listed/blobs/uploads/?mount=${layer}&from=proj/app`)).status, 201);
        assert.equal((await writer.putManifest('proj/listed', 'child', child, OCI_MANIFEST)).status, 201);
        const index = JSON.stringify({
          schemaVersion: 2,
          mediaType: OCI_INDEX,
          manifests: [{ mediaType: OCI_MANIFEST, digest: sha256(child), size: Buffer.byteLength(child) }],
        });
        assert.equal((await writer.putManifest('proj/listed', 'index', index, OCI_INDEX)).status, 201);
        const refused = await writer.req('DELETE', `/v2/proj/listed/manifests/${sha256(child)}`);
        assert.equal(refused.status, 400, refused.body.toString());
        assert.match(refused.json.errors[0].message, new RegExp(`listed by index ${sha256(index)}`));
        assert.match(refused.json.errors[0].message, /delete that index first/);
        assert.equal((await reader.req('GET', `/v2/proj/listed/manifests/${sha256(child)}`)).status, 200, 'nothing was deleted');
        assert.equal((await reader.req('GET', '/v2/proj/listed/manifests/child')).status, 200, 'its tag stays');
        // the tag alone may go (the manifest stays, the index still resolves)
        assert.equal((await writer.req('DELETE', '/v2/proj/listed/manifests/child')).status, 202);
        assert.equal((await writer.req('DELETE', `/v2/proj/listed/manifests/${sha256(index)}`)).status, 202);
        assert.equal((await writer.req('DELETE', `/v2/proj/listed/manifests/${sha256(child)}`)).status, 202);
        assert.equal((await reader.req('GET', `/v2/proj/listed/manifests/${sha256(child)}`)).status, 404);
      });

      test('referrers: subject → OCI-Subject; listed with artifactType and annotations; filtered', async () => {
        const subjectBody = JSON.stringify(
          imageManifest({ digest: cfg, size: 2 }, [{ digest: layer, size: layerBytes.length }], { annotations: { n: 'subject' } }),
        );
        const subject = { mediaType: OCI_MANIFEST, digest: sha256(subjectBody), size: Buffer.byteLength(subjectBody) };
        assert.equal((await writer.putManifest('proj/app', 'subject', subjectBody, OCI_MANIFEST)).status, 201);
        const empty = await writer.pushBlob('proj/app', '{}');
        const sig = await writer.pushBlob('proj/app', 'signature bytes');
        const mk = (artifactType: string, n: string) => ({
          schemaVersion: 2,
          mediaType: OCI_MANIFEST,
          artifactType,
          config: { mediaType: OCI_EMPTY, digest: empty, size: 2 },
          layers: [{ mediaType: 'application/octet-stream', digest: sig, size: 15 }],
          subject,
          annotations: { 'org.example.n': n },
        });
        const a = JSON.stringify(mk('application/vnd.example.signature', '1'));
        const b = JSON.stringify(mk('application/spdx+json', '2'));
        const putA = await writer.putManifest('proj/app', sha256(a), a, OCI_MANIFEST);
        assert.equal(putA.status, 201);
        assert.equal(putA.headers.get('oci-subject'), subject.digest);
        assert.equal((await writer.putManifest('proj/app', sha256(b), b, OCI_MANIFEST)).status, 201);

        const all = await reader.req('GET', `/v2/proj/app/referrers/${subject.digest}`);
        assert.equal(all.status, 200);
        assert.equal(all.headers.get('content-type'), OCI_INDEX);
        assert.equal(all.headers.get('oci-filters-applied'), null);
        assert.equal(all.json.mediaType, OCI_INDEX);
        const byDigest = new Map(all.json.manifests.map((m: any) => [m.digest, m]));
        assert.deepEqual(byDigest.get(sha256(a)), {
          mediaType: OCI_MANIFEST,
          digest: sha256(a),
          size: Buffer.byteLength(a),
          artifactType: 'application/vnd.example.signature',
          annotations: { 'org.example.n': '1' },
        });
        assert.equal(all.json.manifests.length, 2);
        const filtered = await reader.req('GET', `/v2/proj/app/referrers/${subject.digest}?artifactType=application/spdx%2Bjson`);
        assert.equal(filtered.headers.get('oci-filters-applied'), 'artifactType');
        assert.deepEqual(
          filtered.json.manifests.map((m: any) => m.digest),
          [sha256(b)],
        );
        const none = await reader.req('GET', `/v2/proj/app/referrers/${sha256('no subject')}`);
        assert.equal(none.status, 200);
        assert.deepEqual(none.json.manifests, []);
        assert.equal((await reader.req('GET', '/v2/proj/app/referrers/sha256:short')).status, 400);
      });
    });

    test('the manifest PUT hook (the seam for VM images) sees the manifest and its layers; throwing refuses the PUT', async () => {
      const cfg = await writer.pushBlob('proj/hooked', '{}');
      const layerBytes = Buffer.from('hooked layer');
      const layer = await writer.pushBlob('proj/hooked', layerBytes);
      const seen: { tag?: string; digest: string; layers: string[]; project: string }[] = [];
      s.app.registry.whenManifestPut(async (e) => {
        if (e.repository.name !== 'proj/hooked') return;
        seen.push({ tag: e.tag, digest: e.digest, layers: e.layers.map((l) => l.digest), project: e.repository.project });
        if (e.tag === 'refused') throw new DomainError('MANIFEST_INVALID', 'layer 0 is a qcow2 with a backing file', { digest: e.layers[0]?.digest });
      });
      const body = JSON.stringify(imageManifest({ digest: cfg, size: 2 }, [{ digest: layer, size: layerBytes.length }]));
      assert.equal((await writer.putManifest('proj/hooked', 'ok', body, OCI_MANIFEST)).status, 201);
      assert.deepEqual(seen[0], { tag: 'ok', digest: sha256(body), layers: [layer], project: 'proj' });
      const other = JSON.stringify(imageManifest({ digest: cfg, size: 2 }, [{ digest: layer, size: layerBytes.length }], { annotations: { a: 'b' } }));
      const r = await writer.putManifest('proj/hooked', 'refused', other, OCI_MANIFEST);
      assert.equal(r.status, 400);
      assert.equal(r.json.errors[0].code, 'MANIFEST_INVALID');
      assert.match(r.json.errors[0].message, /backing file/);
      assert.equal((await writer.req('GET', '/v2/proj/hooked/manifests/refused')).status, 404, 'nothing tagged');
      assert.equal((await writer.req('GET', `/v2/proj/hooked/manifests/${sha256(other)}`)).status, 404, 'nothing recorded');
    });

    describe('content discovery', () => {
      test('tags in lexical order with n, last and Link', async () => {
        const cfg = await writer.pushBlob('proj/tags', '{}');
        const body = JSON.stringify(imageManifest({ digest: cfg, size: 2 }, []));
        const names = ['b', 'a', 'C', 'v1.10', 'v1.2', 'latest', '_x'];
        for (const t of names) assert.equal((await writer.putManifest('proj/tags', t, body, OCI_MANIFEST)).status, 201);
        const sorted = [...names].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
        const all = await reader.req('GET', '/v2/proj/tags/tags/list');
        assert.deepEqual(all.json, { name: 'proj/tags', tags: sorted });
        assert.equal(all.headers.get('link'), null);
        const seen: string[] = [];
        let path: string | undefined = '/v2/proj/tags/tags/list?n=3';
        while (path) {
          const r = await reader.req('GET', path);
          assert.equal(r.status, 200);
          assert.ok(r.json.tags.length <= 3);
          seen.push(...r.json.tags);
          const link = r.headers.get('link');
          path = link ? /^<([^>]+)>; rel="next"$/.exec(link)![1] : undefined;
        }
        assert.deepEqual(seen, sorted);
        assert.deepEqual(
          (await reader.req('GET', '/v2/proj/tags/tags/list?n=2&last=b')).json.tags,
          sorted.slice(sorted.indexOf('b') + 1, sorted.indexOf('b') + 3),
        );
        assert.equal((await reader.req('GET', '/v2/proj/tags/tags/list?n=-1')).status, 400);
        assert.equal((await reader.req('GET', '/v2/proj/never/tags/list')).json.errors[0].code, 'NAME_UNKNOWN');
      });

      test('_catalog lists only what the caller may read, with pagination', async () => {
        await outsider.pushBlob('other/listed', 'x');
        const mine = (await writer.req('GET', '/v2/_catalog')).json.repositories as string[];
        assert.ok(mine.length > 3);
        assert.ok(mine.every((r) => r.startsWith('proj/')));
        const theirs = (await outsider.req('GET', '/v2/_catalog')).json.repositories as string[];
        assert.ok(theirs.every((r) => r.startsWith('other/')));
        assert.ok(theirs.includes('other/listed'));
        const all = (await admin.req('GET', '/v2/_catalog')).json.repositories as string[];
        assert.deepEqual(all, [...all].sort());
        assert.ok(all.includes('other/listed') && all.includes('proj/app'));
        const seen: string[] = [];
        let path: string | undefined = '/v2/_catalog?n=2';
        while (path) {
          const r = await admin.req('GET', path);
          seen.push(...r.json.repositories);
          const link = r.headers.get('link');
          path = link ? /^<([^>]+)>; rel="next"$/.exec(link)![1] : undefined;
        }
        assert.deepEqual(seen, all);
        assert.equal((await anon.req('GET', '/v2/_catalog')).status, 401);
        // a project holding OCI content is not deleted from under it
        const del = await apiRequest(s, 'DELETE', '/api/v1/projects/other');
        assert.equal(del.status, 409);
        assert.match(del.json!.detail, /OCI repositories/);
      });
    });

    describe('one store, quotas, GC', () => {
      test('an OCI blob with the bytes of a REST-uploaded image is stored once', async () => {
        const bytes = Buffer.alloc(1024 * 1024);
        for (let i = 0; i < bytes.length; i += 512) bytes.writeUInt32LE(i, i);
        const img = await apiRequest(s, 'POST', '/api/v1/images', { name: 'same-bytes', project: 'proj' });
        assert.equal(img.status, 201);
        const up = await fetch(`${s.url}/api/v1/images/${img.json!.id}/file`, {
          method: 'PUT',
          headers: { authorization: `Bearer ${s.token}`, 'content-type': 'application/octet-stream' },
          body: bytes,
        });
        assert.equal(up.status, 200, await up.text());
        const blobs = await countBlobs(s);
        const digest = await writer.pushBlob('proj/same', bytes);
        assert.equal(digest, (await apiRequest(s, 'GET', `/api/v1/images/${img.json!.id}`)).json!.digest);
        assert.equal(await countBlobs(s), blobs, 'no second copy');
        // and chunked, the same
        const loc = (await writer.req('POST', '/v2/proj/same2/blobs/uploads/')).headers.get('location')!;
        assert.equal((await writer.req('PATCH', loc, { body: bytes })).status, 202);
        assert.equal((await writer.req('PUT', `${loc}?digest=${digest}`)).status, 201);
        assert.equal(await countBlobs(s), blobs);
      });

      test('quota: OCI blobs count toward the stored-bytes quota; a push past it is DENIED and stores nothing', async () => {
        const q = admin.as(await token('quota', 'writer', 'quinn'));
        assert.equal((await apiRequest(s, 'PUT', '/api/v1/projects/quota/quota', { storedBytes: 100_000 })).status, 200);
        await q.pushBlob('quota/r', Buffer.alloc(60_000, 1));
        const usage = (await apiRequest(s, 'GET', '/api/v1/projects/quota/quota')).json!.usage;
        assert.equal(usage.storedBytes, 60_000);
        const blobs = await countBlobs(s);
        const big = Buffer.alloc(50_000, 2);
        const mono = await q.req('POST', `/v2/quota/r/blobs/uploads/?digest=${sha256(big)}`, { body: big });
        assert.equal(mono.status, 403);
        assert.equal(mono.json.errors[0].code, 'DENIED');
        assert.match(mono.json.errors[0].message, /quota/);
        const loc = (await q.req('POST', '/v2/quota/r/blobs/uploads/')).headers.get('location')!;
        const chunked = await q.req('PATCH', loc, { body: big });
        assert.equal(chunked.status, 403);
        assert.equal(await countBlobs(s), blobs, 'nothing stored');
        // the REST API sees the same quota
        const img = await apiRequest(s, 'POST', '/api/v1/images', { name: 'over', project: 'quota' });
        const up = await fetch(`${s.url}/api/v1/images/${img.json!.id}/file`, {
          method: 'PUT',
          headers: { authorization: `Bearer ${s.token}`, 'content-type': 'application/octet-stream' },
          body: Buffer.alloc(50_000, 3),
        });
        assert.equal(up.status, 413);
      });

      test('GC keeps blobs referenced by manifests, linked blobs and open sessions; gc --check lists what OCI left', async () => {
        const cfg = await writer.pushBlob('proj/gc', '{"gc":1}');
        const layerBytes = Buffer.from(`gc layer ${dialect}`);
        const layer = await writer.pushBlob('proj/gc', layerBytes);
        const body = JSON.stringify(imageManifest({ digest: cfg, size: 8 }, [{ digest: layer, size: layerBytes.length }]));
        assert.equal((await writer.putManifest('proj/gc', 'keep', body, OCI_MANIFEST)).status, 201);
        const loc = (await writer.req('POST', '/v2/proj/gc/blobs/uploads/')).headers.get('location')!;
        const chunk = Buffer.from(`open session chunk ${dialect}`);
        assert.equal((await writer.req('PATCH', loc, { body: chunk })).status, 202);
        const loose = await writer.pushBlob('proj/gc', `loose ${dialect}`);
        assert.equal((await writer.req('DELETE', `/v2/proj/gc/blobs/${loose}`)).status, 202);

        const check = await s.app.gc({ dryRun: true });
        const candidates = new Set(check.plan.candidates.map((b) => b.digest));
        assert.ok(candidates.has(loose as `sha256:${string}`), 'the unlinked blob is garbage');
        for (const d of [cfg, layer, sha256(body), sha256(chunk)]) assert.ok(!candidates.has(d as `sha256:${string}`), `${d} is kept`);
        await s.app.gc({ dryRun: false });
        assert.ok((await writer.req('GET', '/v2/proj/gc/manifests/keep')).body.equals(Buffer.from(body)));
        assert.ok((await writer.req('GET', `/v2/proj/gc/blobs/${layer}`)).body.equals(layerBytes));
        assert.equal((await writer.req('PUT', `${loc}?digest=${sha256(chunk)}`)).status, 201, 'the open session survived GC');
        assert.equal(await s.app.store.stat(loose as `sha256:${string}`), undefined);
      });
    });

    describe('hostile input', () => {
      let cfg: string;
      before(async () => {
        cfg = await writer.pushBlob('proj/hostile', '{}');
      });

      test('a manifest over 4 MiB is refused before it is parsed (413), announced or streamed', async () => {
        const huge = JSON.stringify({ ...imageManifest({ digest: cfg, size: 2 }, []), annotations: { pad: 'x'.repeat(4 * 1024 * 1024) } });
        const r = await writer.putManifest('proj/hostile', 'huge', huge, OCI_MANIFEST);
        assert.equal(r.status, 413);
        assert.equal(r.json.errors[0].code, 'SIZE_INVALID');
        const streamed = await fetch(`${s.url}/v2/proj/hostile/manifests/huge2`, {
          method: 'PUT',
          headers: { authorization: `Basic ${Buffer.from(`u:${writer.token}`).toString('base64')}`, 'content-type': OCI_MANIFEST },
          body: new ReadableStream({
            start(c) {
              for (let i = 0; i < 80; i++) c.enqueue(Buffer.alloc(64 * 1024, 0x20));
              c.close();
            },
          }),
          duplex: 'half',
        } as RequestInit);
        assert.equal(streamed.status, 413);
      });

      test('deeply nested JSON, deeply nested indexes, too many layers, unknown media types, bad names → clear errors', async () => {
        const deep = `{"schemaVersion":2,"mediaType":"${OCI_MANIFEST}","annotations":{"x":"y"},"deep":${'['.repeat(100_000)}${']'.repeat(100_000)}}`;
        const d = await writer.putManifest('proj/hostile', 'deep', deep, OCI_MANIFEST);
        assert.equal(d.status, 400);
        assert.equal(d.json.errors[0].code, 'MANIFEST_INVALID');
        assert.match(d.json.errors[0].message, /nests/);

        // indexes nested over the limit: each level must be stored first, so the 9th is refused
        let child = JSON.stringify(imageManifest({ digest: cfg, size: 2 }, []));
        assert.equal((await writer.putManifest('proj/hostile', sha256(child), child, OCI_MANIFEST)).status, 201);
        let childType = OCI_MANIFEST;
        let refused: any;
        for (let level = 1; level <= 9; level++) {
          const idx = JSON.stringify({
            schemaVersion: 2,
            mediaType: OCI_INDEX,
            manifests: [{ mediaType: childType, digest: sha256(child), size: Buffer.byteLength(child) }],
          });
          const r = await writer.putManifest('proj/hostile', sha256(idx), idx, OCI_INDEX);
          if (level <= 8) assert.equal(r.status, 201, `level ${level}`);
          else refused = r;
          child = idx;
          childType = OCI_INDEX;
        }
        assert.equal(refused.status, 400);
        assert.equal(refused.json.errors[0].code, 'MANIFEST_INVALID');
        assert.match(refused.json.errors[0].message, /nests 9 levels/);

        const many = imageManifest(
          { digest: cfg, size: 2 },
          Array.from({ length: 1001 }, () => ({ digest: cfg, size: 2 })),
        );
        const m = await writer.putManifest('proj/hostile', 'many', many, OCI_MANIFEST);
        assert.equal(m.json.errors[0].code, 'MANIFEST_INVALID');
        assert.match(m.json.errors[0].message, /1001 descriptors/);

        const unknown = await writer.putManifest(
          'proj/hostile',
          'unknown',
          { ...imageManifest({ digest: cfg, size: 2 }, []), mediaType: 'application/x-evil' },
          'application/x-evil',
        );
        assert.equal(unknown.json.errors[0].code, 'MANIFEST_INVALID');
        const differ = await writer.putManifest('proj/hostile', 'differ', imageManifest({ digest: cfg, size: 2 }, []), DOCKER_MANIFEST);
        assert.equal(differ.json.errors[0].code, 'MANIFEST_INVALID');
        for (const bad of [
          'not json',
          '[]',
          '{"schemaVersion":1}',
          JSON.stringify({ ...imageManifest({ digest: cfg, size: 2 }, []), layers: [{ mediaType: 'x', digest: 'sha256:zz', size: 1 }] }),
        ]) {
          const r = await writer.putManifest('proj/hostile', 'bad', bad, OCI_MANIFEST);
          assert.equal(r.status, 400, bad.slice(0, 40));
          assert.equal(r.json.errors[0].code, 'MANIFEST_INVALID');
        }
        const badTag = await writer.putManifest('proj/hostile', '-tag', imageManifest({ digest: cfg, size: 2 }, []), OCI_MANIFEST);
        assert.equal(badTag.json.errors[0].code, 'MANIFEST_INVALID');
        for (const name of ['UPPER/case', 'noproject', 'proj/a..b', 'proj//x', `proj/${'a'.repeat(260)}`]) {
          const r = await writer.req('GET', `/v2/${name}/tags/list`);
          assert.equal(r.status, 400, name);
          assert.equal(r.json.errors[0].code, 'NAME_INVALID');
        }
        const noRoute = await writer.req('GET', '/v2/proj/x/nothing-here');
        assert.equal(noRoute.status, 404);
        assert.ok(noRoute.json.errors);
        const method = await writer.req('PATCH', '/v2/proj/x/manifests/latest');
        assert.equal(method.status, 405);
      });
    });

    test('an upload session survives a restart and resumes where its last whole chunk ended', async () => {
      const bytes = Buffer.alloc(150_000);
      for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 31) & 0xff;
      const loc = (await writer.req('POST', '/v2/proj/restart/blobs/uploads/')).headers.get('location')!;
      assert.equal((await writer.req('PATCH', loc, { body: bytes.subarray(0, 100_000), headers: { 'content-range': '0-99999' } })).status, 202);
      // the same data directory and database, a new process state
      await s.app.close();
      s.app = await startApp({ ...s.config, listen: { host: '127.0.0.1', port: Number(new URL(s.url).port) } });
      const status = await writer.req('GET', loc);
      assert.equal(status.status, 204);
      assert.equal(status.headers.get('range'), '0-99999');
      assert.equal((await writer.req('PATCH', loc, { body: bytes.subarray(100_000), headers: { 'content-range': '100000-149999' } })).status, 202);
      const put = await writer.req('PUT', `${loc}?digest=${sha256(bytes)}`);
      assert.equal(put.status, 201);
      assert.ok((await writer.req('GET', `/v2/proj/restart/blobs/${sha256(bytes)}`)).body.equals(bytes));
    });
  });
}

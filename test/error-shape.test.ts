/**
 * Issue 18 item 8: every error has one shape — problem+json with a stable code — including the
 * ones Fastify and node:http produce before a handler runs (431, malformed requests, a bad URL
 * escape, malformed JSON); wrong Content-Types are 415 naming what is accepted; a 416 carries
 * a Content-Range that names the size; a 0-byte upload is EMPTY_IMAGE; names and body fields are taken
 * as sent (no bidi controls, no `{"name": 5}` turned into "5").
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { adminFetch, apiRequest, startTestServer, type TestServer } from './support/server.js';

/** Sends raw bytes, returns everything the server answered until it closed (or 3 s passed). */
function raw(s: TestServer, bytes: string): Promise<string> {
  const { port } = new URL(s.url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), '127.0.0.1');
    let text = '';
    const timer = setTimeout(() => socket.destroy(), 3000);
    socket.on('data', (d) => (text += d.toString('latin1')));
    socket.on('error', reject);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(text);
    });
    socket.write(bytes);
  });
}

function parse(answer: string): { status: number; headers: string; problem: Record<string, any> } {
  const [head, ...rest] = answer.split('\r\n\r\n');
  const body = rest.join('\r\n\r\n');
  return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head!)?.[1]), headers: head!.toLowerCase(), problem: JSON.parse(body || 'null') };
}

function assertProblem(status: number, headers: string, p: Record<string, any>, expect: { status: number; code: string; detail?: RegExp }) {
  assert.equal(status, expect.status);
  assert.match(headers, /content-type: application\/problem\+json/);
  assert.equal(p.status, expect.status);
  assert.equal(p.code, expect.code);
  assert.equal(typeof p.detail, 'string');
  assert.equal(typeof p.requestId, 'string');
  assert.match(p.type, /^urn:imago:problem:/);
  if (expect.detail) assert.match(p.detail, expect.detail);
}

describe('one error shape', { timeout: 60_000 }, () => {
  let s: TestServer;
  let auth: string;
  let empty: http.Server;

  before(async () => {
    empty = http.createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': '0' }).end());
    await new Promise<void>((r) => empty.listen(0, '127.0.0.1', r));
    s = await startTestServer({ env: { IMAGO_IMPORT_ALLOW: '127.0.0.1' } });
    auth = `Bearer ${s.token}`;
  });
  after(async () => {
    await s?.stop();
    await new Promise((r) => empty?.close(r));
  });

  const newImage = async (name = 'img') => (await apiRequest(s, 'POST', '/api/v1/images', { name })).json!.id as string;

  test('431: headers too large, written by node:http, come as problem+json', async () => {
    const r = parse(await raw(s, `GET /api/v1/healthz HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(20_000)}\r\n\r\n`));
    assertProblem(r.status, r.headers, r.problem, { status: 431, code: 'HEADERS_TOO_LARGE', detail: /headers are larger/ });
  });

  test('400: a malformed request line', async () => {
    const r = parse(await raw(s, 'GARBAGE\r\n\r\n'));
    assertProblem(r.status, r.headers, r.problem, { status: 400, code: 'INVALID_REQUEST', detail: /not valid HTTP/ });
  });

  test('400: a bad URL escape', async () => {
    const r = parse(await raw(s, `GET /api/v1/images/%zz HTTP/1.1\r\nhost: x\r\nauthorization: ${auth}\r\nconnection: close\r\n\r\n`));
    assertProblem(r.status, r.headers, r.problem, { status: 400, code: 'INVALID_REQUEST', detail: /"%" must start an escape/ });
  });

  test('400: malformed JSON', async () => {
    const res = await adminFetch(`${s.url}/api/v1/images`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"name": ' });
    assertProblem(res.status, `content-type: ${res.headers.get('content-type')}`, (await res.json()) as Record<string, any>, {
      status: 400,
      code: 'INVALID_REQUEST',
      detail: /not valid JSON/,
    });
  });

  test('415: a JSON route given another Content-Type names the accepted type', async () => {
    for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'application/octet-stream']) {
      const res = await adminFetch(`${s.url}/api/v1/images`, { method: 'POST', headers: { 'content-type': type }, body: 'name=x' });
      const p = (await res.json()) as Record<string, any>;
      assertProblem(res.status, `content-type: ${res.headers.get('content-type')}`, p, {
        status: 415,
        code: 'UNSUPPORTED_MEDIA_TYPE',
        detail: /application\/json/,
      });
      assert.deepEqual(p.accepted, ['application/json'], type);
    }
  });

  test('415: an upload sent as JSON or text says to send application/octet-stream', async () => {
    const id = await newImage('typed');
    for (const type of ['application/json', 'text/plain']) {
      const res = await adminFetch(`${s.url}/api/v1/images/${id}/file`, {
        method: 'PUT',
        headers: { 'content-type': type },
        body: Buffer.alloc(2 * 1024 * 1024, 1),
      });
      const p = (await res.json()) as Record<string, any>;
      assertProblem(res.status, `content-type: ${res.headers.get('content-type')}`, p, {
        status: 415,
        code: 'UNSUPPORTED_MEDIA_TYPE',
        detail: /application\/octet-stream/,
      });
    }
    assert.equal((await apiRequest(s, 'GET', `/api/v1/images/${id}`)).json!.state, 'pending', 'nothing was read; the image can still be uploaded');
    const ok = await adminFetch(`${s.url}/api/v1/images/${id}/file`, {
      method: 'PUT',
      headers: { 'content-type': 'application/octet-stream' },
      body: Buffer.alloc(4096, 1),
    });
    assert.equal(ok.status, 200);
  });

  test('416 carries Content-Range: bytes */SIZE', async () => {
    const id = await newImage('ranged');
    assert.equal((await adminFetch(`${s.url}/api/v1/images/${id}/file`, { method: 'PUT', body: Buffer.alloc(4096, 2) })).status, 200);
    const res = await adminFetch(`${s.url}/api/v1/images/${id}/file`, { headers: { range: 'bytes=5000-6000' } });
    assert.equal(res.status, 416);
    assert.equal(res.headers.get('content-range'), 'bytes */4096');
    assert.equal(((await res.json()) as Record<string, any>).code, 'RANGE_NOT_SATISFIABLE');
  });

  test('a 0-byte upload is EMPTY_IMAGE, announced or not', async () => {
    const announced = await newImage('empty');
    const a = await adminFetch(`${s.url}/api/v1/images/${announced}/file`, {
      method: 'PUT',
      headers: { 'content-type': 'application/octet-stream' },
      body: Buffer.alloc(0),
    });
    const pa = (await a.json()) as Record<string, any>;
    assertProblem(a.status, `content-type: ${a.headers.get('content-type')}`, pa, {
      status: 422,
      code: 'EMPTY_IMAGE',
      detail: /had no bytes.*qemu-img create/,
    });
    assert.equal((await apiRequest(s, 'GET', `/api/v1/images/${announced}`)).json!.state, 'pending', 'refused before the image changed');
    // chunked, no length: the emptiness is only known at the end
    const chunked = await newImage('empty-chunked');
    const b = parse(
      await raw(
        s,
        `PUT /api/v1/images/${chunked}/file HTTP/1.1\r\nhost: x\r\nauthorization: ${auth}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n0\r\n\r\n`,
      ),
    );
    assertProblem(b.status, b.headers, b.problem, { status: 422, code: 'EMPTY_IMAGE' });
    const img = (await apiRequest(s, 'GET', `/api/v1/images/${chunked}`)).json!;
    assert.equal(img.state, 'error');
    assert.match(img.stateReason, /had no bytes/);
  });

  test("a URL import of 0 bytes ends in error with EMPTY_IMAGE's reason", async () => {
    const id = await newImage('empty-import');
    const url = `http://127.0.0.1:${(empty.address() as AddressInfo).port}/empty.raw`;
    assert.equal((await apiRequest(s, 'POST', `/api/v1/images/${id}/import`, { url })).status, 202);
    let img: Record<string, any> = {};
    for (let i = 0; i < 100; i++) {
      img = (await apiRequest(s, 'GET', `/api/v1/images/${id}`)).json!;
      if (img.state !== 'pending' && img.state !== 'importing') break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(img.state, 'error');
    assert.match(img.stateReason, /the import of image .* had no bytes/);
  });

  test('names refuse control and bidirectional formatting characters', async () => {
    for (const name of ['evil\u202Egnp.exe', 'a\u2066b', 'mark\u200F', 'bell\u0007', 'del\u007F']) {
      const r = await apiRequest(s, 'POST', '/api/v1/images', { name });
      assert.equal(r.status, 400, JSON.stringify(name));
      assert.equal(r.json!.code, 'INVALID_REQUEST');
      assert.match(r.json!.detail, /field "name" contains U\+[0-9A-F]{4}/);
    }
    const id = await newImage('fine');
    const r = await apiRequest(s, 'PATCH', `/api/v1/images/${id}`, { name: 'x\u202Dy' });
    assert.equal(r.status, 400);
    assert.equal((await apiRequest(s, 'POST', '/api/v1/images', { name: 'Ubuntu 24.04 — «noble» 日本' })).status, 201);
  });

  test('body fields are not coerced: {"name": 5} is refused, saying what the field must be', async () => {
    const r = await apiRequest(s, 'POST', '/api/v1/images', { name: 5 });
    assert.equal(r.status, 400);
    assert.match(r.json!.detail, /field "name" must be a string, not a number/);
    const p = await apiRequest(s, 'POST', '/api/v1/projects', { name: true });
    assert.equal(p.status, 400);
    assert.match(p.json!.detail, /field "name" must be a string, not true or false/);
    // querystrings keep their coercion: ?limit=2 is a number, a single ?state= is a list
    const list = await apiRequest(s, 'GET', '/api/v1/images?limit=2&state=pending');
    assert.equal(list.status, 200);
  });
});

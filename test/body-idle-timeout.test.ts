/**
 * Issue 18 item 5: a request body that stops arriving is cut off after the idle timeout
 * (IMAGO_BODY_IDLE_TIMEOUT, here 1 s), the image goes to `error` saying why, the quota
 * reservation is released and the socket closed. A slow but steady body is not cut off: the
 * timeout is on idleness, not on the total time. Raw sockets, so the client can stall at will.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { apiRequest, startTestServer, type TestServer } from './support/server.js';

const MiB = 1024 * 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Opens a raw HTTP/1.1 request; returns the socket and a promise of everything the server sent until it closed. */
function rawRequest(s: TestServer, head: string): { socket: net.Socket; received: Promise<{ text: string; closedAfterMs: number }> } {
  const { port } = new URL(s.url);
  const socket = net.connect(Number(port), '127.0.0.1');
  const startedAt = Date.now();
  socket.write(head);
  const received = new Promise<{ text: string; closedAfterMs: number }>((resolve) => {
    const chunks: Buffer[] = [];
    socket.on('data', (d) => chunks.push(d));
    socket.on('error', () => undefined);
    socket.on('close', () => resolve({ text: Buffer.concat(chunks).toString('utf8'), closedAfterMs: Date.now() - startedAt }));
  });
  return { socket, received };
}

describe('stalled request bodies (idle timeout 1 s)', { timeout: 30_000 }, () => {
  let s: TestServer;
  let token: string;

  before(async () => {
    s = await startTestServer({ env: { IMAGO_BODY_IDLE_TIMEOUT: '1' } });
    assert.equal((await apiRequest(s, 'POST', '/api/v1/projects', { name: 'slow' })).status, 201);
    token = (await apiRequest(s, 'POST', '/api/v1/tokens', { name: 'w', project: 'slow', role: 'writer', user: 'sam' })).json!.token;
  });
  after(() => s?.stop());

  async function newImage(name: string): Promise<string> {
    const r = await apiRequest(s, 'POST', '/api/v1/images', { name }, { authorization: `Bearer ${token}` });
    assert.equal(r.status, 201, r.text);
    return r.json!.id;
  }
  const image = async (id: string) => (await apiRequest(s, 'GET', `/api/v1/images/${id}`)).json!;
  const staging = async () => (await apiRequest(s, 'GET', '/api/v1/projects/slow/quota')).json!.usage.stagingBytes as number;
  const put = (id: string, headers: string) =>
    `PUT /api/v1/images/${id}/file HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${token}\r\ncontent-type: application/octet-stream\r\n${headers}\r\n`;

  test('10 bytes of an announced 9 MiB, then silence: cut off, image in error, reservation released, socket closed', async () => {
    const id = await newImage('stalled');
    const { socket, received } = rawRequest(s, put(id, `content-length: ${9 * MiB}\r\n`));
    socket.write(Buffer.alloc(10, 7));
    for (let i = 0; i < 50 && (await staging()) === 0; i++) await sleep(20);
    assert.equal(await staging(), 9 * MiB, 'the upload reserved its announced size');
    const { text, closedAfterMs } = await received;
    assert.ok(closedAfterMs < 5000, `the server closed the socket after ${closedAfterMs} ms`);
    assert.match(text, /^HTTP\/1\.1 408 /);
    assert.match(text, /application\/problem\+json/);
    assert.match(text, /"code":"REQUEST_TIMEOUT"/);
    const img = await image(id);
    assert.equal(img.state, 'error');
    assert.match(img.stateReason, /no bytes received for 1 s; the upload was cut off — upload again/);
    assert.equal(await staging(), 0, 'the reservation is released');
  });

  test('a chunked body that never ends: cut off the same way', async () => {
    const id = await newImage('endless');
    const { socket, received } = rawRequest(s, put(id, 'transfer-encoding: chunked\r\n'));
    socket.write('a\r\n0123456789\r\n');
    const { text, closedAfterMs } = await received;
    assert.ok(closedAfterMs < 5000, `closed after ${closedAfterMs} ms`);
    assert.match(text, /^HTTP\/1\.1 408 /);
    const img = await image(id);
    assert.equal(img.state, 'error');
    assert.match(img.stateReason, /no bytes received for 1 s/);
    assert.equal(await staging(), 0);
  });

  test('slow but steady (1 byte every 0.3 s for 4.5 s) is not cut off', async () => {
    const id = await newImage('steady');
    const bytes = Buffer.alloc(15, 0x41);
    const { socket, received } = rawRequest(s, put(id, `content-length: ${bytes.length}\r\nconnection: close\r\n`));
    for (const b of bytes) {
      await sleep(300);
      socket.write(Buffer.of(b));
    }
    const { text } = await received;
    assert.match(text, /^HTTP\/1\.1 200 /, text.slice(0, 400));
    assert.equal((await image(id)).state, 'ready');
  });

  test('a JSON body that stops arriving is cut off too (408 problem+json, socket closed)', async () => {
    const { socket, received } = rawRequest(
      s,
      `POST /api/v1/images HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${token}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n`,
    );
    socket.write('{"name": "half');
    const { text, closedAfterMs } = await received;
    assert.ok(closedAfterMs < 5000, `closed after ${closedAfterMs} ms`);
    assert.match(text, /^HTTP\/1\.1 408 /);
    assert.match(text, /"code":"REQUEST_TIMEOUT"/);
    assert.match(text, /the request was cut off — send the request again/);
  });
});

/**
 * Issue 18 item 6: an open `GET /api/v1/events` stream is re-authorized — every
 * IMAGO_EVENTS_RECHECK (here 1 s) and before each event — so revoking its token or deleting its
 * user ends it within seconds with a final `event: error`, and no event after the revocation
 * reaches it.
 */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { apiRequest, startTestServer, type TestServer } from './support/server.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Stream {
  text(): string;
  /** resolves when the server ends the stream, with the time it took after `since` */
  ended: Promise<number>;
  abort(): void;
}

async function openStream(s: TestServer, token: string): Promise<Stream> {
  const ac = new AbortController();
  const res = await fetch(`${s.url}/api/v1/events`, { headers: { authorization: `Bearer ${token}` }, signal: ac.signal });
  assert.equal(res.status, 200);
  let text = '';
  const ended = (async () => {
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) text += Buffer.from(chunk).toString();
    } catch {
      return Infinity; // aborted by the test: the server never ended it
    }
    return Date.now();
  })();
  return { text: () => text, ended, abort: () => ac.abort() };
}

describe('event streams end when their credentials do', { timeout: 60_000 }, () => {
  let s: TestServer;
  const admin = (method: string, path: string, body?: unknown) => apiRequest(s, method, path, body);

  before(async () => {
    s = await startTestServer({ env: { IMAGO_EVENTS_RECHECK: '1' } });
    assert.equal((await admin('POST', '/api/v1/projects', { name: 'ev' })).status, 201);
  });
  after(() => s?.stop());

  async function readerToken(user: string): Promise<{ id: string; token: string }> {
    const r = await admin('POST', '/api/v1/tokens', { name: `t-${user}`, project: 'ev', role: 'reader', user });
    assert.equal(r.status, 201, r.text);
    return { id: r.json!.id, token: r.json!.token };
  }
  const createImage = async (name: string) => (await admin('POST', '/api/v1/images', { name, project: 'ev' })).json!.id as string;

  /** opens a stream as a fresh reader, checks events arrive, `cut`s its credentials, checks it ends */
  async function check(cut: (tokenId: string, user: string) => Promise<void>, reason: RegExp) {
    const user = `u${Date.now()}`;
    const { id, token } = await readerToken(user);
    const stream = await openStream(s, token);
    await sleep(100);
    const before = await createImage('seen');
    for (let i = 0; i < 50 && !stream.text().includes(before); i++) await sleep(20);
    assert.ok(stream.text().includes(before), 'events arrive while the credentials are valid');
    await cut(id, user);
    const cutAt = Date.now();
    const later = await createImage('not-seen');
    const timer = setTimeout(() => stream.abort(), 8000);
    const endedAt = await stream.ended;
    clearTimeout(timer);
    assert.ok(endedAt - cutAt < 4000, `the stream ended ${endedAt - cutAt} ms after the cut`);
    const text = stream.text();
    assert.ok(!text.includes(later), 'no event after the revocation is delivered');
    const last = text.trim().split('\n\n').at(-1)!;
    assert.match(last, /^event: error\ndata: /);
    const problem = JSON.parse(last.split('\ndata: ')[1]!);
    assert.equal(problem.code, 'UNAUTHENTICATED');
    assert.match(problem.detail, reason);
    assert.match(problem.detail, /reconnect with valid credentials/);
  }

  test('revoking the token ends an open stream', () =>
    check(async (id) => assert.equal((await admin('DELETE', `/api/v1/tokens/${id}`)).status, 204), /API token \w+ \("t-u\d+"\) was revoked/));

  test('deleting the user ends an open stream', () =>
    check(async (_id, user) => assert.equal((await admin('DELETE', `/api/v1/users/${user}`)).status, 204), /revoked|not valid/));

  test('with no event at all, the periodic re-check still ends the stream', async () => {
    const { id, token } = await readerToken(`idle${Date.now()}`);
    const stream = await openStream(s, token);
    await sleep(100);
    assert.equal((await admin('DELETE', `/api/v1/tokens/${id}`)).status, 204);
    const cutAt = Date.now();
    const timer = setTimeout(() => stream.abort(), 8000);
    const endedAt = await stream.ended;
    clearTimeout(timer);
    assert.ok(endedAt - cutAt < 3000, `ended ${endedAt - cutAt} ms after the revocation`);
    assert.match(stream.text(), /event: error/);
  });

  test('a client that stops reading is cut off instead of making the server buffer every event', async () => {
    // a raw socket whose reads are paused: the kernel buffers fill, then the server's own buffer
    const sock = connect(new URL(s.url).port ? Number(new URL(s.url).port) : 80, '127.0.0.1');
    await new Promise<void>((r) => sock.once('connect', () => r()));
    sock.write(`GET /api/v1/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${s.token}\r\n\r\n`);
    sock.pause();
    const closed = new Promise<void>((r) => sock.once('close', () => r()));
    let isClosed = false;
    void closed.then(() => (isClosed = true));
    const id = await createImage('chatty');
    // each update is an event of ~600 KB; loopback buffers take several MiB before the server's fills
    const properties = (i: number) => Object.fromEntries(Array.from({ length: 10 }, (_, k) => [`p${k}`, `${i}`.padEnd(60_000, 'x')]));
    for (let i = 0; i < 200 && !isClosed; i++) {
      const r = await admin('PATCH', `/api/v1/images/${id}`, { properties: properties(i) });
      assert.equal(r.status, 200);
    }
    sock.resume();
    sock.on('data', () => undefined);
    const timer = setTimeout(() => sock.destroy(new Error('the server never cut the stalled stream')), 10_000);
    await closed;
    clearTimeout(timer);
    assert.ok(sock.destroyed && !sock.errored, `the server closed the stream itself: ${String(sock.errored)}`);
  });
});

test('a stopping server ends its open event streams instead of waiting for them forever', { timeout: 30_000 }, async () => {
  const s = await startTestServer();
  const res = await fetch(`${s.url}/api/v1/events`, { headers: { authorization: `Bearer ${s.token}` } });
  assert.equal(res.status, 200);
  const text = res.text();
  const stopped = await Promise.race([s.stop().then(() => 'stopped'), sleep(8000).then(() => 'still waiting after 8 s')]);
  assert.equal(stopped, 'stopped');
  assert.match(await text, /event: shutdown/);
});

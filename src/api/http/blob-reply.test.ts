/**
 * sendStoredBytes over real sockets and real files, through the sendfile engine and through the
 * stream fallback: whole bodies, ranges, HEAD, keep-alive, clients that leave or stop reading, and
 * no file descriptor left behind.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request, type IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import type { BlobBody } from '../../domain/images/variant-service.js';
import { exactLength } from '../../io/exact-length.js';
import { sendfileEngine, type SendfileEngine } from '../../io/sendfile.js';
import { sendStoredBytes } from './blob-reply.js';
import { parseRange } from './byte-range.js';

const dir = mkdtempSync(join(tmpdir(), 'imago-blob-reply-'));
const BIG = 48 * 1024 * 1024;
const files = { big: join(dir, 'big'), small: join(dir, 'small'), empty: join(dir, 'empty'), short: join(dir, 'short') };
const bigBytes = randomBytes(BIG);
writeFileSync(files.big, bigBytes);
writeFileSync(files.small, 'hello, sendfile\n');
writeFileSync(files.empty, '');
// recorded as 1 MiB, 1000 bytes on disk: a blob that shrank after it was checked
writeFileSync(files.short, randomBytes(1000));
after(() => rmSync(dir, { recursive: true, force: true }));

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const openFds = () => readdirSync('/proc/self/fd').length;

interface Served {
  port: number;
  app: FastifyInstance;
  /** status codes the onResponse hook saw */
  statuses: number[];
  /** transfers handed to the engine */
  sends: number;
}

/** GET|HEAD /NAME[?size=N]: the file NAME (recorded as N bytes) with the engine given, or streamed. */
async function serve(engine: SendfileEngine | undefined, idleTimeoutMs = 10_000): Promise<Served> {
  const app = Fastify({ exposeHeadRoutes: false });
  const statuses: number[] = [];
  const counted: SendfileEngine | undefined = engine && {
    send: (...args) => {
      served.sends++;
      return engine.send(...args);
    },
  };
  app.addHook('onResponse', async (_req, reply) => void statuses.push(reply.statusCode));
  const handler =
    (head: boolean) => async (req: { params: unknown; query: unknown; headers: Record<string, unknown> }, reply: import('fastify').FastifyReply) => {
      const { name } = req.params as { name: keyof typeof files };
      const path = files[name];
      const size = Number((req.query as { size?: string }).size ?? (name === 'big' ? BIG : name === 'small' ? 16 : 0));
      const range = parseRange(req.headers.range as string | undefined, size, undefined, undefined);
      const length = range ? range.end - range.start + 1 : size;
      const body: BlobBody = {
        // as the domain opens a blob: checked against the recorded length
        open: async () => exactLength(createReadStream(path, range ?? {}), length, (n) => new Error(`${n} bytes, not ${length}`)),
        file: { path, start: range?.start ?? 0, length },
      };
      return sendStoredBytes(reply, { digest: `sha256:${'ab'.repeat(32)}`, sizeBytes: size, range }, head ? undefined : body, {
        engine: counted,
        idleTimeoutMs,
      });
    };
  app.get('/:name', handler(false));
  app.head('/:name', handler(true));
  const served: Served = { port: 0, app, statuses, sends: 0 };
  served.port = Number(new URL(await app.listen({ host: '127.0.0.1', port: 0 })).port);
  return served;
}

interface Got {
  status: number;
  headers: IncomingMessage['headers'];
  body: Buffer;
  /** the socket the response came on */
  socket: unknown;
}

function get(port: number, path: string, opts: { method?: string; headers?: Record<string, string>; agent?: Agent } = {}): Promise<Got> {
  return new Promise((resolve, reject) => {
    // no agent: one connection per request, closed after it (a pooled idle one would move the fd counts)
    const req = request({ host: '127.0.0.1', port, path, method: opts.method ?? 'GET', headers: opts.headers, agent: opts.agent ?? false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks), socket: res.socket }));
      res.on('error', reject);
      res.on('aborted', () => reject(new Error('aborted')));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Waits up to 2 s for `ok()`: the server finishes a reply a moment after the client has its last byte. */
async function eventually(ok: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 100 && !ok(); i++) await new Promise((r) => setTimeout(r, 20));
  assert.ok(ok(), what);
}

/** The fd count once the server has no connection left and the count holds still (closed sockets go a moment after the reply). */
async function settledFds(s: Served): Promise<number> {
  const connections = () => new Promise<number>((resolve, reject) => s.app.server.getConnections((e, n) => (e ? reject(e) : resolve(n))));
  for (let i = 0; i < 100 && (await connections()) > 0; i++) await new Promise((r) => setTimeout(r, 20));
  let n = openFds();
  for (let still = 0; still < 3;) {
    await new Promise((r) => setTimeout(r, 20));
    still = openFds() === n ? still + 1 : 0;
    n = openFds();
  }
  return n;
}

const fdsBackTo = (base: number) =>
  eventually(() => openFds() === base, `every fd opened for the transfer is closed again (${openFds()} open, ${base} before)`);

const engine = sendfileEngine();

for (const mode of ['sendfile', 'stream'] as const) {
  describe(`sendStoredBytes (${mode})`, { skip: mode === 'sendfile' && !engine && 'the sendfile addon did not build' }, () => {
    let s: Served;
    before(async () => {
      s = await serve(mode === 'sendfile' ? engine : undefined);
    });
    after(() => s.app.close());

    test('the whole body is the file, with the length and digest headers', async () => {
      const r = await get(s.port, '/big');
      assert.equal(r.status, 200);
      assert.equal(r.headers['content-length'], String(BIG));
      assert.equal(r.headers.etag, `"${'ab'.repeat(32)}"`);
      assert.equal(sha256(r.body), sha256(bigBytes));
      await eventually(() => s.statuses.at(-1) === 200, 'the onResponse hook saw the reply');
      assert.equal(s.sends, mode === 'sendfile' ? 1 : 0, 'the body went through the engine exactly when there is one');
    });

    test('a Range is a 206 with that slice', async () => {
      const r = await get(s.port, '/big', { headers: { range: 'bytes=1000-4194303' } });
      assert.equal(r.status, 206);
      assert.equal(r.headers['content-range'], `bytes 1000-4194303/${BIG}`);
      assert.equal(sha256(r.body), sha256(bigBytes.subarray(1000, 4194304)));
      const tail = await get(s.port, '/big', { headers: { range: 'bytes=-7' } });
      assert.deepEqual(tail.body, bigBytes.subarray(BIG - 7));
    });

    test('HEAD has the headers and no body; a 0-byte blob is an empty 200', async () => {
      const h = await get(s.port, '/big', { method: 'HEAD' });
      assert.equal(h.headers['content-length'], String(BIG));
      assert.equal(h.body.length, 0);
      const e = await get(s.port, '/empty');
      assert.equal(e.status, 200);
      assert.equal(e.headers['content-length'], '0');
      assert.equal(e.body.length, 0);
    });

    test('requests one after another on one keep-alive connection', async () => {
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      try {
        const a = await get(s.port, '/small', { agent });
        const b = await get(s.port, '/big', { agent, headers: { range: 'bytes=0-99999' } });
        const c = await get(s.port, '/small', { agent });
        assert.equal(a.body.toString(), 'hello, sendfile\n');
        assert.deepEqual(b.body, bigBytes.subarray(0, 100_000));
        assert.equal(c.body.toString(), 'hello, sendfile\n');
        assert.equal(a.socket, b.socket, 'the second request reused the connection');
        assert.equal(b.socket, c.socket, 'the third request reused the connection');
      } finally {
        agent.destroy();
      }
    });

    test('many downloads at once each get their bytes', async () => {
      const ranges = Array.from({ length: 40 }, (_, i) => [i * 1_000_000, i * 1_000_000 + 999_999 + (i % 3)] as const);
      await Promise.all(
        ranges.map(async ([a, b]) =>
          assert.deepEqual((await get(s.port, '/big', { headers: { range: `bytes=${a}-${b}` } })).body, bigBytes.subarray(a, b + 1)),
        ),
      );
    });

    test('a client that leaves mid-transfer frees every fd, and the server keeps serving', async () => {
      await get(s.port, '/small');
      const base = await settledFds(s);
      await new Promise<void>((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port: s.port, path: '/big', agent: false }, (res) => {
          res.once('data', () => {
            req.destroy();
            resolve();
          });
        });
        req.on('error', (e) => ((e as NodeJS.ErrnoException).code === 'ECONNRESET' ? undefined : reject(e)));
        req.end();
      });
      await fdsBackTo(base);
      assert.equal((await get(s.port, '/small')).body.toString(), 'hello, sendfile\n');
    });

    test('a blob that ends before its recorded size breaks the transfer instead of ending it', async () => {
      await assert.rejects(get(s.port, '/short?size=1048576'), /aborted|socket hang up|ECONNRESET/);
      assert.equal((await get(s.port, '/small')).body.toString(), 'hello, sendfile\n');
    });
  });
}

test('a client that stops reading is cut off after the idle timeout', { skip: !engine && 'the sendfile addon did not build' }, async () => {
  const s = await serve(engine, 300);
  try {
    const connections = () => new Promise<number>((resolve, reject) => s.app.server.getConnections((e, n) => (e ? reject(e) : resolve(n))));
    const t0 = Date.now();
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: s.port, path: '/big', agent: false }, (r) => {
        r.pause();
        resolve(r);
      });
      req.on('error', reject);
      req.end();
    });
    // the client reads nothing: once both socket buffers are full the engine makes no progress
    while ((await connections()) > 0 && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 20));
    const waited = Date.now() - t0;
    assert.equal(await connections(), 0, 'the server closed the connection');
    assert.ok(waited >= 300, `cut off after ${waited} ms, not before the 300 ms idle timeout`);
    // what was in flight still arrives, then the connection ends short of the announced length
    let received = 0;
    const ended = await new Promise<string>((resolve) => {
      res.on('data', (c: Buffer) => (received += c.length));
      res.on('end', () => resolve('end'));
      res.on('aborted', () => resolve('aborted'));
      res.on('error', () => resolve('error'));
      res.resume();
    });
    assert.notEqual(ended, 'end');
    assert.ok(received < BIG, `${received} of ${BIG} bytes arrived`);
    assert.equal((await get(s.port, '/small')).body.toString(), 'hello, sendfile\n');
  } finally {
    await s.app.close();
  }
});

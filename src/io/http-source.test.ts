import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { HttpSourceError, openUrl, type UrlSource } from './http-source.js';
import { UrlNotAllowed, UrlPolicy } from './url-policy.js';

const LOCAL = new UrlPolicy({ allowCidrs: ['127.0.0.1/32'] });
const T = { timeout: 10_000 };

interface Server {
  url: string;
  port: number;
  requests: http.IncomingMessage[];
  sockets: Socket[];
  close(): Promise<void>;
}

async function serve(handler: http.RequestListener): Promise<Server> {
  const requests: http.IncomingMessage[] = [];
  const sockets: Socket[] = [];
  const srv = http.createServer((req, res) => {
    requests.push(req);
    handler(req, res);
  });
  srv.on('connection', (s: Socket) => sockets.push(s));
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    sockets,
    close: () =>
      new Promise((r) => {
        srv.closeAllConnections();
        srv.close(() => r());
      }),
  };
}

async function withServer(handler: http.RequestListener, body: (s: Server) => Promise<void>): Promise<void> {
  const s = await serve(handler);
  try {
    await body(s);
  } finally {
    await s.close();
  }
}

async function drain(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const c of it) parts.push(c);
  return Buffer.concat(parts);
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** Serves `data` with ranges and an ETag; the first `drops` responses are cut off after `cut` bytes. */
function rangeServer(
  data: Buffer,
  opts: { drops: number; cut: number; etag?: string; lastModified?: string; ignoreRange?: boolean; acceptRanges?: string; badRange?: boolean },
): http.RequestListener {
  let drops = opts.drops;
  return (req, res) => {
    const m = opts.ignoreRange ? null : /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    const start = m ? Number(m[1]) : 0;
    const headers: Record<string, string | number> = { 'content-length': data.length - start };
    if (opts.acceptRanges !== '') headers['accept-ranges'] = opts.acceptRanges ?? 'bytes';
    if (opts.etag) headers.etag = opts.etag;
    if (opts.lastModified) headers['last-modified'] = opts.lastModified;
    if (m) {
      const from = opts.badRange ? start + 1 : start;
      res.writeHead(206, { ...headers, 'content-range': `bytes ${from}-${data.length - 1}/${data.length}` });
    } else res.writeHead(200, headers);
    if (drops > 0) {
      drops--;
      res.write(data.subarray(start, start + opts.cut), () => setTimeout(() => res.destroy(), 20));
      return;
    }
    res.end(data.subarray(start));
  };
}

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  assert.fail('expected a rejection');
}

test('without an allowance, loopback is refused before any connection is made', T, async () => {
  await withServer(
    (_q, r) => r.end('x'),
    async (s) => {
      const deny = new UrlPolicy();
      const literal = await rejection(openUrl(`${s.url}/a`, { policy: deny }));
      assert.ok(literal instanceof UrlNotAllowed);
      assert.match(literal.message, /refused 127\.0\.0\.1: it is in the loopback range 127\.0\.0\.0\/8.*--import-allow 127\.0\.0\.1/);
      const named = await rejection(openUrl(`http://localhost:${s.port}/a`, { policy: deny }));
      assert.ok(named instanceof UrlNotAllowed);
      assert.match(named.message, /refused localhost: it resolves to (127\.0\.0\.1|::1), in the loopback range/);
      const v6 = await rejection(openUrl(`http://[::1]:${s.port}/a`, { policy: deny }));
      assert.ok(v6 instanceof UrlNotAllowed);
      assert.match(v6.message, /refused ::1: it is in the loopback range ::1\/128/);
      const mapped = await rejection(openUrl(`http://[::ffff:127.0.0.1]:${s.port}/a`, { policy: deny }));
      assert.ok(mapped instanceof UrlNotAllowed);
      assert.equal(s.sockets.length, 0, 'the server saw no connection');
      assert.equal(s.requests.length, 0);
      // the same server is reachable once allowed, so the refusals above were the policy's doing
      assert.equal((await drain((await openUrl(`${s.url}/a`, { policy: LOCAL })).body)).toString(), 'x');
      assert.equal(s.requests.length, 1);
    },
  );
});

test('a host name resolving to loopback is refused unless the host (or every address it resolves to) is allowed', T, async () => {
  await withServer(
    (_q, r) => r.end('hello'),
    async (s) => {
      // localhost resolves to 127.0.0.1 and usually ::1 too: allowing only 127.0.0.1 is not enough when ::1 is among them
      const onlyV4 = await openUrl(`http://localhost:${s.port}/`, { policy: LOCAL }).then(
        (src) => (src.close(), 'reached'),
        (e: unknown) => (e instanceof UrlNotAllowed && /::1/.test(e.message) ? 'refused ::1' : e),
      );
      assert.ok(onlyV4 === 'reached' || onlyV4 === 'refused ::1', String(onlyV4));
      const src = await openUrl(`http://localhost:${s.port}/`, { policy: new UrlPolicy({ allowHosts: ['localhost'] }) });
      assert.equal((await drain(src.body)).toString(), 'hello');
      assert.equal(src.finalUrl, `http://localhost:${s.port}/`);
    },
  );
});

test('scheme other than http(s) and userinfo are refused', T, async () => {
  for (const u of ['ftp://127.0.0.1/a.img', 'file:///etc/passwd', 'gopher://127.0.0.1:70/_x']) {
    const e = await rejection(openUrl(u, { policy: LOCAL }));
    assert.ok(e instanceof UrlNotAllowed && e.reason === 'scheme', u);
  }
  const e = await rejection(openUrl('http://me:secret@127.0.0.1/', { policy: LOCAL }));
  assert.ok(e instanceof UrlNotAllowed && e.reason === 'credentials');
});

test('redirects: a chain within the limit is followed; over the limit is refused', T, async () => {
  const data = randomBytes(100_000);
  await withServer(
    (req, res) => {
      const n = Number(req.url!.slice(1));
      if (n > 0) return res.writeHead(n % 2 ? 302 : 307, { location: `/${n - 1}` }).end();
      res.writeHead(200, { 'content-length': data.length }).end(data);
    },
    async (s) => {
      const ok = await openUrl(`${s.url}/5`, { policy: LOCAL });
      assert.equal(ok.finalUrl, `${s.url}/0`);
      assert.equal(ok.totalBytes, data.length);
      assert.equal(sha(await drain(ok)), sha(data));
      const n = s.requests.length;
      const e = await rejection(openUrl(`${s.url}/9`, { policy: LOCAL, maxRedirects: 3 }));
      assert.ok(e instanceof HttpSourceError);
      assert.match(e.message, /\/9 redirected more than 3 times/);
      assert.equal(s.requests.length - n, 4, 'the first hop and three redirects were requested, no more');
    },
  );
});

test('a redirect to a denied address is refused by the policy, never contacted', T, async () => {
  await withServer(
    (req, res) => {
      const to: Record<string, string> = {
        '/meta': 'http://169.254.169.254/latest/meta-data/',
        '/private': 'http://10.0.0.1/disk.img',
        '/named': `http://localhost:${(req.socket.address() as AddressInfo).port}/x`,
        '/ftp': 'ftp://example.com/disk.img',
        '/v6': 'http://[::1]/x',
      };
      res.writeHead(301, { location: to[req.url!] ?? '/' }).end();
    },
    async (s) => {
      for (const [path, why] of [
        ['/meta', /refused 169\.254\.169\.254: it is in the link-local/],
        ['/private', /refused 10\.0\.0\.1: it is in the private range/],
        ['/named', /refused localhost: it resolves to/],
        ['/ftp', /http:\/\/ and https:\/\/ URLs only/],
        ['/v6', /refused ::1/],
      ] as const) {
        const t = Date.now();
        // a short connect timeout as a safety net: a connection attempt would fail differently
        // for /named the first hop is allowed by its host name only, so localhost is judged by what it resolves to
        const policy = path === '/named' ? new UrlPolicy({ allowHosts: ['127.0.0.1'] }) : LOCAL;
        const e = await rejection(openUrl(`${s.url}${path}`, { policy, connectTimeoutMs: 300 }));
        assert.ok(e instanceof UrlNotAllowed, `${path}: ${e.message}`);
        assert.match(e.message, why);
        assert.ok(Date.now() - t < 300, `${path} was refused without trying to connect`);
      }
      assert.equal(s.requests.length, 5, 'only the first hops reached our server');
    },
  );
});

test('non-2xx answers name the status and the URL (without its query)', T, async () => {
  await withServer(
    (_q, res) => res.writeHead(404).end(),
    async (s) => {
      const e = await rejection(openUrl(`${s.url}/missing.img?X-Signature=secret`, { policy: LOCAL }));
      assert.ok(e instanceof HttpSourceError);
      assert.equal(e.status, 404);
      assert.match(e.message, /^http:\/\/127\.0\.0\.1:\d+\/missing\.img\?… answered HTTP 404 Not Found/);
      assert.doesNotMatch(e.message, /secret/);
    },
  );
});

test('Content-Length over maxBytes is refused before the body is read', T, async () => {
  await withServer(
    (_q, res) => {
      res.writeHead(200, { 'content-length': 10_000_000 });
      res.write(Buffer.alloc(10)); // then hang: the client must not wait for the body
    },
    async (s) => {
      let progress = 0;
      const t = Date.now();
      const e = await rejection(openUrl(`${s.url}/big`, { policy: LOCAL, maxBytes: 1_000_000, onProgress: () => progress++ }));
      assert.ok(e instanceof HttpSourceError);
      assert.match(e.message, /is 10000000 bytes, over the 1000000-byte limit for one image; nothing was read/);
      assert.equal(progress, 0);
      assert.ok(Date.now() - t < 2000);
    },
  );
});

test('a chunked body running past maxBytes is cut off', T, async () => {
  await withServer(
    (_q, res) => {
      res.writeHead(200); // no Content-Length: chunked
      for (let i = 0; i < 20; i++) res.write(Buffer.alloc(100_000));
      res.end();
    },
    async (s) => {
      let last = 0;
      const src = await openUrl(`${s.url}/chunked`, { policy: LOCAL, maxBytes: 1_000_000, onProgress: (n) => (last = n) });
      assert.equal(src.totalBytes, undefined);
      const e = await rejection(drain(src.body));
      assert.ok(e instanceof HttpSourceError);
      assert.match(e.message, /sent more than the 1000000-byte limit for one image; the transfer was stopped/);
      assert.ok(last <= 1_000_000, 'no byte past the limit was handed out');
      // at the limit exactly is fine
      assert.equal((await drain(await openUrl(`${s.url}/chunked`, { policy: LOCAL, maxBytes: 2_000_000 }))).length, 2_000_000);
    },
  );
});

test('a slow but live transfer never trips the idle timeout; there is no total-time limit', T, async () => {
  await withServer(
    (_q, res) => {
      res.writeHead(200);
      let n = 0;
      const t = setInterval(() => {
        res.write(Buffer.alloc(1000, n));
        if (++n === 15) {
          clearInterval(t);
          res.end();
        }
      }, 200);
      res.on('close', () => clearInterval(t));
    },
    async (s) => {
      const seen: number[] = [];
      const t = Date.now();
      const src = await openUrl(`${s.url}/slow`, { policy: LOCAL, idleTimeoutMs: 1000, onProgress: (n) => seen.push(n) });
      assert.equal((await drain(src)).length, 15_000);
      assert.ok(Date.now() - t >= 2800, 'took 3 s, three times the idle timeout');
      assert.equal(seen.at(-1), 15_000);
    },
  );
});

test('a slow reader does not trip the idle timeout (waiting on the consumer is not a stall)', T, async () => {
  await withServer(
    (_q, res) => {
      res.writeHead(200, { 'content-length': 4 * 1024 * 1024 });
      res.end(Buffer.alloc(4 * 1024 * 1024));
    },
    async (s) => {
      const src = await openUrl(`${s.url}/`, { policy: LOCAL, idleTimeoutMs: 300 });
      let n = 0;
      let pauses = 0;
      for await (const c of src) {
        n += c.length;
        if (pauses < 3) {
          pauses++;
          await sleep(700);
        }
      }
      assert.equal(n, 4 * 1024 * 1024);
    },
  );
});

test('a stalled server fails after idleTimeoutMs with a clear error, before or after the headers', T, async () => {
  await withServer(
    (req, res) => {
      if (req.url === '/no-headers') return; // accept and say nothing
      res.writeHead(200, { 'content-length': 1000 });
      res.write('x'); // then nothing
    },
    async (s) => {
      let t = Date.now();
      const src = await openUrl(`${s.url}/stall`, { policy: LOCAL, idleTimeoutMs: 1000 });
      const e = await rejection(drain(src.body));
      assert.ok(e instanceof HttpSourceError, e.message);
      assert.match(e.message, /no data from http:\/\/127\.0\.0\.1:\d+\/stall for 1000 ms; the server stalled/);
      let took = Date.now() - t;
      assert.ok(took >= 950 && took < 3000, `${took} ms`);
      t = Date.now();
      const e2 = await rejection(openUrl(`${s.url}/no-headers`, { policy: LOCAL, idleTimeoutMs: 500 }));
      assert.match(e2.message, /sent no response within 500 ms of connecting/);
      took = Date.now() - t;
      assert.ok(took >= 450 && took < 3000, `${took} ms`);
    },
  );
});

test('a connection dropped half-way resumes with Range + If-Range when the server supports it; bytes identical', T, async () => {
  const data = randomBytes(3_000_000);
  await withServer(rangeServer(data, { drops: 2, cut: 700_000, etag: '"v1"' }), async (s) => {
    const src = await openUrl(`${s.url}/disk`, { policy: LOCAL });
    assert.equal(src.totalBytes, data.length);
    assert.equal(sha(await drain(src.body)), sha(data));
    assert.equal(src.resumes(), 2);
    const ranged = s.requests.filter((r) => r.headers.range);
    assert.deepEqual(
      ranged.map((r) => [r.headers.range, r.headers['if-range']]),
      [
        ['bytes=700000-', '"v1"'],
        ['bytes=1400000-', '"v1"'],
      ],
    );
  });
  // Last-Modified serves as the validator when there is no strong ETag
  await withServer(rangeServer(data, { drops: 1, cut: 1_000_000, etag: 'W/"weak"', lastModified: 'Tue, 01 Jul 2025 10:00:00 GMT' }), async (s) => {
    assert.equal(sha(await drain(await openUrl(`${s.url}/disk`, { policy: LOCAL }))), sha(data));
    assert.equal(s.requests[1]!.headers['if-range'], 'Tue, 01 Jul 2025 10:00:00 GMT');
  });
});

test('a dropped connection that cannot be resumed fails clearly and never duplicates bytes', T, async () => {
  const data = randomBytes(1_000_000);
  const cases: [string, Parameters<typeof rangeServer>[1], RegExp][] = [
    [
      'no range support (answers 200 to the Range request)',
      { drops: 1, cut: 300_000, etag: '"v1"', ignoreRange: true, acceptRanges: '' },
      /answered 200 with the whole file instead of 206 .* the transfer must restart from the beginning/,
    ],
    [
      'Accept-Ranges: none',
      { drops: 1, cut: 300_000, etag: '"v1"', acceptRanges: 'none' },
      /does not support resuming \(Accept-Ranges: none\); the transfer must restart/,
    ],
    ['no validator', { drops: 1, cut: 300_000 }, /sent no ETag or Last-Modified, so a resumed transfer could splice two versions/],
    [
      'wrong Content-Range',
      { drops: 1, cut: 300_000, etag: '"v1"', badRange: true },
      /asked to resume at byte 300000, the server sent Content-Range "bytes 300001-999999\/1000000"/,
    ],
    ['drops every time without a byte', { drops: 99, cut: 0, etag: '"v1"' }, /5 attempts to resume brought no data/],
  ];
  for (const [name, opts, why] of cases) {
    await withServer(rangeServer(data, opts), async (s) => {
      const src = await openUrl(`${s.url}/disk`, { policy: LOCAL });
      let received = 0;
      const e = await rejection(
        (async () => {
          for await (const c of src) received += c.length;
        })(),
      );
      assert.ok(e instanceof HttpSourceError, `${name}: ${e.message}`);
      assert.match(e.message, /dropped after \d+ of 1000000 bytes/, name);
      assert.match(e.message, why, name);
      assert.ok(received <= opts.cut, `${name}: no byte beyond the drop was handed out`);
    });
  }
});

test('abort via AbortSignal mid-transfer ends promptly with an AbortError and closes the socket', T, async () => {
  await withServer(
    (_q, res) => {
      res.writeHead(200, { 'content-length': 1_000_000, 'accept-ranges': 'bytes', etag: '"v"' });
      res.write(Buffer.alloc(1000)); // then hang
    },
    async (s) => {
      const ac = new AbortController();
      const src = await openUrl(`${s.url}/hang`, { policy: LOCAL, signal: ac.signal });
      const serverClosed = new Promise<void>((r) => s.sockets[0]!.once('close', () => r()));
      setTimeout(() => ac.abort(new Error('user cancelled')), 200);
      const t = Date.now();
      const e = await rejection(drain(src.body));
      assert.equal(e.name, 'AbortError');
      assert.match(e.message, /the transfer from http:\/\/127\.0\.0\.1:\d+\/hang was cancelled/);
      assert.ok(Date.now() - t < 1000, `${Date.now() - t} ms`);
      await Promise.race([serverClosed, sleep(2000).then(() => assert.fail('the socket stayed open'))]);
      assert.equal(s.requests.length, 1, 'an abort is not a drop: no resume was attempted');
      // already aborted: refused before connecting
      const n = s.sockets.length;
      assert.equal((await rejection(openUrl(`${s.url}/hang`, { policy: LOCAL, signal: ac.signal }))).name, 'AbortError');
      assert.equal(s.sockets.length, n);
    },
  );
});

test('close() releases the connection, whether the body was not read or a read is pending; it is not taken for a drop', T, async () => {
  await withServer(
    (_q, res) => {
      res.writeHead(200, { 'content-length': 1_000_000, 'accept-ranges': 'bytes', etag: '"v"' });
      res.write(Buffer.alloc(1000)); // then hang
    },
    async (s) => {
      const unread: UrlSource = await openUrl(`${s.url}/x`, { policy: LOCAL });
      const closed = new Promise<void>((r) => s.sockets[0]!.once('close', () => r()));
      unread.close();
      await Promise.race([closed, sleep(2000).then(() => assert.fail('the socket stayed open'))]);

      const reading = await openUrl(`${s.url}/y`, { policy: LOCAL });
      const done = drain(reading.body);
      setTimeout(() => reading.close(), 100);
      assert.equal((await rejection(done)).name, 'AbortError');
      assert.equal(s.requests.length, 2, 'no Range request followed the close');
    },
  );
});

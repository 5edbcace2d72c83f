import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { openUrl } from './http-source.js';
import { UrlPolicy } from './url-policy.js';

const LOCAL = new UrlPolicy({ cidrs: ['127.0.0.1/32'] });

async function serve(handler: http.RequestListener): Promise<{ url: string; close(): Promise<void>; requests: http.IncomingMessage[] }> {
  const requests: http.IncomingMessage[] = [];
  const srv = http.createServer((req, res) => {
    requests.push(req);
    handler(req, res);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise((r) => {
        srv.closeAllConnections();
        srv.close(() => r());
      }),
  };
}

async function drain(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const c of it) parts.push(c);
  return Buffer.concat(parts);
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

test('without an allowance, loopback is refused before any connection', async () => {
  const s = await serve((_q, r) => r.end('x'));
  try {
    await assert.rejects(openUrl(`${s.url}/a`, { policy: new UrlPolicy() }), /loopback, link-local or private/);
    await assert.rejects(openUrl(`http://localhost:${new URL(s.url).port}/a`, { policy: new UrlPolicy() }), /localhost resolves to/);
    assert.equal(s.requests.length, 0);
  } finally {
    await s.close();
  }
});

test('redirects are followed within the limit and each hop is re-checked', async () => {
  const data = randomBytes(100_000);
  const s = await serve((req, res) => {
    const n = Number(req.url!.slice(1));
    if (req.url === '/meta') return res.writeHead(302, { location: 'http://169.254.169.254/latest/meta-data/' }).end();
    if (n > 0) return res.writeHead(302, { location: `/${n - 1}` }).end();
    res.writeHead(200, { 'content-length': data.length }).end(data);
  });
  try {
    const ok = await openUrl(`${s.url}/3`, { policy: LOCAL });
    assert.equal(sha(await drain(ok.body)), sha(data));
    await assert.rejects(openUrl(`${s.url}/9`, { policy: LOCAL, maxRedirects: 5 }), /redirects more than 5 times/);
    await assert.rejects(openUrl(`${s.url}/meta`, { policy: LOCAL, connectTimeoutMs: 500 }), /169\.254\.169\.254.*link-local or private/);
  } finally {
    await s.close();
  }
});

test('size limits: Content-Length over the limit is refused before the body; a chunked body is cut off', async () => {
  const s = await serve((req, res) => {
    if (req.url === '/len') return res.writeHead(200, { 'content-length': 10_000_000 }).end(Buffer.alloc(10));
    res.writeHead(200);
    for (let i = 0; i < 20; i++) res.write(Buffer.alloc(100_000));
    res.end();
  });
  try {
    await assert.rejects(openUrl(`${s.url}/len`, { policy: LOCAL, maxBytes: 1_000_000 }), /over the 1000000-byte limit/);
    const chunked = await openUrl(`${s.url}/chunked`, { policy: LOCAL, maxBytes: 1_000_000 });
    await assert.rejects(drain(chunked.body), /more than the 1000000-byte limit/);
  } finally {
    await s.close();
  }
});

test('a slow but live transfer never trips the idle timeout; a stalled one does', async () => {
  const s = await serve((req, res) => {
    res.writeHead(200);
    if (req.url === '/stall') {
      res.write('x');
      return; // then nothing
    }
    let n = 0;
    const t = setInterval(() => {
      res.write(Buffer.alloc(1000, n));
      if (++n === 12) {
        clearInterval(t);
        res.end();
      }
    }, 150);
  });
  try {
    const slow = await openUrl(`${s.url}/slow`, { policy: LOCAL, idleTimeoutMs: 600 });
    assert.equal((await drain(slow.body)).length, 12_000); // 1.8 s in all, > 3× the idle timeout
    const stalled = await openUrl(`${s.url}/stall`, { policy: LOCAL, idleTimeoutMs: 400 });
    await assert.rejects(drain(stalled.body), /no data from 127\.0\.0\.1.* for 400 ms/);
  } finally {
    await s.close();
  }
});

test('a dropped connection resumes with Range when the server supports it; bytes identical', async () => {
  const data = randomBytes(3_000_000);
  let drops = 0;
  const s = await serve((req, res) => {
    const m = /bytes=(\d+)-/.exec(req.headers.range ?? '');
    const start = m ? Number(m[1]) : 0;
    const headers = { 'accept-ranges': 'bytes', etag: '"v1"', 'content-length': data.length - start } as Record<string, string | number>;
    if (m) {
      assert.equal(req.headers['if-range'], '"v1"');
      res.writeHead(206, { ...headers, 'content-range': `bytes ${start}-${data.length - 1}/${data.length}` });
    } else res.writeHead(200, headers);
    if (drops < 2) {
      drops++;
      res.write(data.subarray(start, start + 700_000), () => setTimeout(() => res.destroy(), 20));
      return;
    }
    res.end(data.subarray(start));
  });
  try {
    const src = await openUrl(`${s.url}/disk`, { policy: LOCAL });
    assert.equal(src.totalBytes, data.length);
    assert.equal(sha(await drain(src.body)), sha(data));
    assert.equal(src.resumes(), 2);
    assert.ok(s.requests.some((r) => r.headers.range?.startsWith('bytes=')));
  } finally {
    await s.close();
  }
});

test('a dropped connection without range support fails clearly; abort ends promptly', async () => {
  const s = await serve((req, res) => {
    res.writeHead(200, { 'content-length': 1_000_000 });
    if (req.url === '/drop') {
      res.write(Buffer.alloc(100_000), () => setTimeout(() => res.destroy(), 20));
      return;
    }
    res.write(Buffer.alloc(1000)); // then hang
  });
  try {
    const src = await openUrl(`${s.url}/drop`, { policy: LOCAL });
    await assert.rejects(drain(src.body), /does not support resuming/);
    const ac = new AbortController();
    const hang = await openUrl(`${s.url}/hang`, { policy: LOCAL, signal: ac.signal });
    const t = Date.now();
    setTimeout(() => ac.abort(), 100);
    await assert.rejects(drain(hang.body));
    assert.ok(Date.now() - t < 2000);
  } finally {
    await s.close();
  }
});

test('non-2xx answers name the status and the URL', async () => {
  const s = await serve((_q, res) => res.writeHead(404).end());
  try {
    await assert.rejects(openUrl(`${s.url}/missing.img`, { policy: LOCAL }), /missing\.img answered HTTP 404/);
  } finally {
    await s.close();
  }
});

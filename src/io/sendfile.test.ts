import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { createServer, connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { loadSendfileEngine, sendfileEngine, SendfileError, type SendfileEngine } from './sendfile.js';

const dir = mkdtempSync(join(tmpdir(), 'imago-sendfile-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const bytes = randomBytes(8 * 1024 * 1024);
const path = join(dir, 'blob');
writeFileSync(path, bytes);

/** A connected pair over loopback: `server` is the side the engine writes to, `client` reads. */
async function pair(): Promise<{ server: Socket; client: Socket; close(): void }> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const accepted = new Promise<Socket>((r) => srv.once('connection', r));
  const client = connect((srv.address() as { port: number }).port, '127.0.0.1');
  const server = await accepted;
  return {
    server,
    client,
    close: () => {
      server.destroy();
      client.destroy();
      srv.close();
    },
  };
}

function fdOf(s: Socket): number {
  return (s as unknown as { _handle: { fd: number } })._handle.fd;
}

function engine(): SendfileEngine {
  const e = sendfileEngine();
  assert.ok(e, 'native/build/Release/sendfile_engine.node is missing: npm install (node-gyp) did not build it');
  return e;
}

test('sendfile addon: built by npm install; sends a range of a file to a socket', async () => {
  const { server, client, close } = await pair();
  const file = await open(path, 'r');
  try {
    const got: Buffer[] = [];
    client.on('data', (c: Buffer) => got.push(c));
    const sent = await engine().send(fdOf(server), file.fd, 4096, 5_000_000, 10_000).done;
    assert.equal(sent, 5_000_000);
    while (Buffer.concat(got).length < sent) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(Buffer.concat(got), bytes.subarray(4096, 4096 + 5_000_000));
  } finally {
    await file.close();
    close();
  }
});

test('a file that ends before the range does is ENODATA, with what was sent', async () => {
  const { server, close } = await pair();
  const file = await open(path, 'r');
  try {
    const err = await engine()
      .send(fdOf(server), file.fd, bytes.length - 100, 1000, 10_000)
      .done.then(
        () => undefined,
        (e: unknown) => e,
      );
    assert.ok(err instanceof SendfileError);
    assert.equal(err.code, 'ENODATA');
    assert.equal(err.bytesSent, 100);
  } finally {
    await file.close();
    close();
  }
});

test('cancel ends a transfer the client does not read with ECANCELED; the socket stays usable by its owner', async () => {
  const { server, client, close } = await pair();
  const file = await open(path, 'r');
  try {
    client.pause();
    const t = engine().send(fdOf(server), file.fd, 0, bytes.length, 0);
    await new Promise((r) => setTimeout(r, 100));
    t.cancel();
    const err = await t.done.then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof SendfileError);
    assert.equal(err.code, 'ECANCELED');
    assert.ok(err.bytesSent > 0 && err.bytesSent < bytes.length, `${err.bytesSent} bytes sent before the cancel`);
    t.cancel(); // ended already: nothing happens
    assert.equal(server.destroyed, false);
  } finally {
    await file.close();
    close();
  }
});

test('many transfers ending together are each reported once, with their own result', async () => {
  const pairs = await Promise.all(Array.from({ length: 40 }, () => pair()));
  const file = await open(path, 'r');
  try {
    const results = await Promise.allSettled(
      pairs.map(
        ({ server }, i) =>
          // every fourth range runs past the end of the file: ENODATA with what was sent
          engine().send(fdOf(server), file.fd, i % 4 === 3 ? bytes.length - 1000 * (i + 1) : 1000 * i, 2000 * (i + 1), 10_000).done,
      ),
    );
    results.forEach((r, i) => {
      if (i % 4 === 3) {
        assert.equal(r.status, 'rejected', `transfer ${i}`);
        const e = (r as PromiseRejectedResult).reason as SendfileError;
        assert.equal(e.code, 'ENODATA');
        assert.equal(e.bytesSent, 1000 * (i + 1));
      } else {
        assert.deepEqual(r, { status: 'fulfilled', value: 2000 * (i + 1) }, `transfer ${i}`);
      }
    });
  } finally {
    await file.close();
    for (const p of pairs) p.close();
  }
});

test('the engine keeps the process alive while a transfer runs, and not once all have ended', () => {
  // a child whose only handle is a socket pair's fd written by the engine: it must wait for the
  // result (the pipe's stream holds the loop), then exit by itself (the stream let go)
  const child = spawnSync(
    process.execPath,
    [
      '--import',
      'tsx',
      '--input-type=module',
      '-e',
      `import { sendfileEngine } from ${JSON.stringify(new URL('./sendfile.ts', import.meta.url).href)};
       import { openSync } from 'node:fs';
       import { createServer, connect } from 'node:net';
       const srv = createServer((server) => {
         srv.close();
         const t = sendfileEngine().send(server._handle.fd, openSync(${JSON.stringify(path)}, 'r'), 0, 3_000_000, 10_000);
         server.unref();
         client.unref();
         t.done.then((n) => console.log('sent', n), (e) => console.log('failed', e.code));
       });
       await new Promise((r) => srv.listen(0, '127.0.0.1', r));
       const client = connect(srv.address().port, '127.0.0.1');
       client.on('data', () => {});`,
    ],
    { encoding: 'utf8', timeout: 20_000 },
  );
  assert.equal(child.signal, null, `the child did not exit by itself: ${child.stderr}`);
  assert.equal(child.stdout.trim(), 'sent 3000000', child.stderr);
});

test('bad arguments are a TypeError, not a crash', () => {
  assert.throws(() => engine().send(-1, 0, 0, 1, 0), TypeError);
  assert.throws(() => engine().send(0, 0, -5, 1, 0), TypeError);
});

test('without the addon there is no engine (callers stream)', () => {
  assert.equal(loadSendfileEngine('./no-such-addon.node'), undefined);
});

import assert from 'node:assert/strict';
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

test('bad arguments are a TypeError, not a crash', () => {
  assert.throws(() => engine().send(-1, 0, 0, 1, 0), TypeError);
  assert.throws(() => engine().send(0, 0, -5, 1, 0), TypeError);
});

test('without the addon there is no engine (callers stream)', () => {
  assert.equal(loadSendfileEngine('./no-such-addon.node'), undefined);
});

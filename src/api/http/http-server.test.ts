import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createHttpServer } from './http-server.js';

test('a request that may change something is answered only once the catalog is durable; reads are not held up', async () => {
  const calls: string[] = [];
  let release!: () => void;
  const app = createHttpServer({
    errorReply: (_req, reply, err) => reply.code(500).send({ error: String(err) }),
    notFound: (_req, reply) => void reply.code(404).send(),
    durable: () => {
      calls.push('durable');
      return new Promise<void>((r) => (release = r));
    },
  });
  app.get('/x', async () => ({ ok: true }));
  app.post('/x', async () => ({ ok: true }));
  try {
    const read = await app.inject({ method: 'GET', url: '/x' });
    assert.equal(read.statusCode, 200);
    assert.deepEqual(calls, [], 'GET did not wait');
    let answered = false;
    const write = app.inject({ method: 'POST', url: '/x' }).then((r) => ((answered = true), r));
    for (let i = 0; i < 20 && calls.length === 0; i++) await new Promise((r) => setImmediate(r));
    assert.deepEqual(calls, ['durable']);
    assert.equal(answered, false, 'the POST was answered before its changes were durable');
    release();
    assert.equal((await write).statusCode, 200);
  } finally {
    await app.close();
  }
});

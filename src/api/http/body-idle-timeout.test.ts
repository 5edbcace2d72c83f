import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import { DomainError } from '../../domain/errors.js';
import { withBodyIdleTimeout } from './body-idle-timeout.js';

const chunk = (n: number, byte: number) => new Uint8Array(n).fill(byte);

describe('withBodyIdleTimeout', () => {
  test('passes every chunk through in order and ends with the body', async () => {
    const src = new PassThrough();
    const got: number[] = [];
    const reading = (async () => {
      for await (const c of withBodyIdleTimeout(src, 1000)) got.push(c[0]!, c.length);
    })();
    for (let i = 1; i <= 3; i++) {
      src.write(chunk(10 * i, i));
      await sleep(5);
    }
    src.end();
    await reading;
    assert.deepEqual(got, [1, 10, 2, 20, 3, 30]);
  });

  // (a Readable's iterator queues return() behind its pending read: the HTTP routes destroy the
  // socket themselves on REQUEST_TIMEOUT)
  test('a body that stops arriving fails with REQUEST_TIMEOUT naming the wait; bytes arriving later are not read', async () => {
    const src = new PassThrough();
    src.write(chunk(4, 1));
    const it = withBodyIdleTimeout(src, 60);
    const first = await it.next();
    assert.equal(first.done, false);
    const t0 = Date.now();
    await assert.rejects(it.next(), (e: unknown) => {
      assert.ok(e instanceof DomainError);
      assert.equal(e.code, 'REQUEST_TIMEOUT');
      assert.match(e.message, /no bytes received for 0\.1 s/);
      assert.match(e.message, /upload again/);
      return true;
    });
    assert.ok(Date.now() - t0 >= 50, `failed after ${Date.now() - t0} ms, before the idle time`);
    assert.equal((await it.next()).done, true, 'after the failure the body is over');
    src.write(chunk(4, 2));
    await sleep(10);
    assert.equal((await it.next()).done, true, 'a late chunk does not revive it');
  });

  test('time spent by the consumer between reads does not count, however long', async () => {
    const src = new PassThrough();
    const it = withBodyIdleTimeout(src, 40);
    let n = 0;
    for (let i = 0; i < 3; i++) {
      src.write(chunk(8, i));
      const r = await it.next();
      assert.equal(r.done, false);
      n++;
      await sleep(120); // three idle times of our own (backpressure), with the timer left armed
    }
    src.end();
    assert.equal((await it.next()).done, true);
    assert.equal(n, 3);
  });

  test('the wait restarts at each read: a body trickling faster than the idle time is never cut', async () => {
    const src = new PassThrough();
    let received = 0;
    const reading = (async () => {
      for await (const c of withBodyIdleTimeout(src, 80)) received += c.length;
    })();
    for (let i = 0; i < 8; i++) {
      await sleep(30); // 240 ms in all, three idle times, but never 80 ms without bytes
      src.write(chunk(5, i));
    }
    src.end();
    await reading;
    assert.equal(received, 40);
  });

  test("a consumer that stops early ends the source; the source's own error reaches the consumer", async () => {
    const src = new PassThrough();
    src.write(chunk(3, 7));
    for await (const c of withBodyIdleTimeout(src, 1000)) {
      assert.equal(c[0], 7);
      break;
    }
    await sleep(5);
    assert.equal(src.destroyed, true);

    const broken = new PassThrough();
    const it = withBodyIdleTimeout(broken, 1000);
    const pending = it.next();
    broken.destroy(new Error('connection reset by peer'));
    await assert.rejects(pending, /connection reset by peer/);
  });
});

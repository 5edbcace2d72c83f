import assert from 'node:assert/strict';
import { once } from 'node:events';
import { PassThrough, Writable } from 'node:stream';
import { test } from 'node:test';
import { DiskError } from '../disk.js';
import { withOutput } from './output-sink.js';

test('a failed write to a stream target rejects with the error and closes the stream without an error event', async () => {
  // no 'error' listener, as a caller's stream may well have none: an error event would end the process
  const out = new PassThrough();
  const failure = new DiskError('qcow2 L2 table at offset 262144 lies past the end of the 300000-byte file');
  await assert.rejects(
    withOutput({ kind: 'stream', stream: out }, 'raw', true, {}, async (o) => {
      assert.equal(o.kind, 'stream');
      if (o.kind === 'stream') await o.stream.write(new Uint8Array(512).fill(1));
      throw failure;
    }),
    (e) => e === failure,
  );
  await once(out, 'close');
  assert.equal(out.destroyed, true, 'the stream is destroyed: its reader sees it end early, never finish');
  assert.equal(out.readableEnded, false);
  assert.equal(out.errored, null, 'no error event was emitted on the caller-owned stream');
});

test('a stream target that fails itself (the sink behind it) rejects the write with that error', async () => {
  const out = new Writable({
    write(_chunk, _enc, cb) {
      cb(new Error('no space left on device'));
    },
  });
  let seen: unknown;
  out.on('error', (e) => (seen = e));
  await assert.rejects(
    withOutput({ kind: 'stream', stream: out }, 'raw', true, {}, async (o) => {
      if (o.kind === 'stream') for (let i = 0; i < 4; i++) await o.stream.write(new Uint8Array(64 * 1024));
    }),
    /no space left on device/,
  );
  assert.match(String(seen), /no space left/, "the stream's owner heard its error too");
});

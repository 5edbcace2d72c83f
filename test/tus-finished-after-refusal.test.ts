/**
 * The request that sends a resumable upload's last byte is answered with the ingest's outcome even
 * when the ingest already failed and dropped the upload before the answer was looked up — on
 * PostgreSQL a hostile image's refusal landed in that window and the PATCH got 404 instead of 422
 * (a fresh-clone CI run). Here the window is made certain: the look comes after the ingest ended.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { DomainError } from '../src/domain/errors.js';
import { qemuCreate } from './support/qemu.js';

async function* once(bytes: Uint8Array): AsyncIterable<Uint8Array> {
  yield bytes;
}

test('a resumable upload whose ingest refused the image before its answer was looked up: the refusal, not "not found"', async () => {
  const base = await qemuCreate('finish-race-base.qcow2', 'qcow2', '16M');
  const overlay = readFileSync(await qemuCreate('finish-race-overlay.qcow2', 'qcow2', '16M', [`backing_file=${base}`, 'backing_fmt=qcow2']));
  const dataDir = mkdtempSync(join(tmpdir(), 'imago-finish-race-'));
  const app = await createApp(loadConfig({}, { IMAGO_DATA: dataDir }));
  try {
    const { image } = await app.images.create({ name: 'finish-race', type: 'OS' });
    const id = randomUUID();
    await app.resumable.create({ id, imageId: image.id, sizeBytes: overlay.length, metadata: {}, createdBy: 'test' });
    // the refusal may already reach the append itself; either way the ingest ends with it
    await app.resumable.append(id, 0, once(overlay)).catch((e: unknown) => assert.equal((e as DomainError).code, 'UNSAFE_IMAGE'));
    // until the ingest has ended and the upload is gone for later requests
    const deadline = Date.now() + 30_000;
    for (;;) {
      const gone = await app.resumable.status(id).then(
        () => false,
        (e: unknown) => e instanceof DomainError && e.code === 'UPLOAD_NOT_FOUND',
      );
      if (gone) break;
      assert.ok(Date.now() < deadline, 'the ingest ended');
      await new Promise((r) => setTimeout(r, 20));
    }
    await assert.rejects(app.resumable.finished(id), (e: unknown) => {
      assert.ok(e instanceof DomainError, String(e));
      assert.equal(e.code, 'UNSAFE_IMAGE');
      assert.match(e.message, /backing/i);
      return true;
    });
    // any other request still finds the upload gone
    await assert.rejects(app.resumable.status(id), { code: 'UPLOAD_NOT_FOUND' });
    assert.equal((await app.images.repo.get(image.id))?.state, 'error');
  } finally {
    await app.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

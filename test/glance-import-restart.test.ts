/**
 * kill -9 around Glance's stage and import: the real `imago serve` process (SQLite and PostgreSQL)
 * is killed after a stage and in the middle of one, restarted on the same data, and must be
 * consistent: staged bytes survive (committed content-addressed, referenced by their image, so GC
 * keeps them) and import as they were; an interrupted stage ends killed with its staging swept and
 * takes a new stage.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { qemuCreate } from './support/qemu.js';
import { freshPgDatabase, type Dialect, projectWriterToken } from './support/server.js';
import { BIN, spawnServer, type SpawnedServer } from './support/spawned-server.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

for (const dialect of ['sqlite', 'postgres'] as Dialect[]) {
  describe(`kill -9 around stage and import (${dialect})`, () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'imago-glance-restart-'));
    let env: Record<string, string> = {};
    let dropDb: (() => Promise<void>) | undefined;
    let s: SpawnedServer | undefined;
    let token = '';
    after(async () => {
      await s?.kill9();
      await dropDb?.();
      rmSync(dataDir, { recursive: true, force: true });
    });

    const serve = async () => {
      s = await spawnServer(dataDir, { env });
      return s;
    };
    const call = async (method: string, path: string, body?: unknown) => {
      const r = await fetch(`${s!.url}/image${path}`, {
        method,
        headers: { 'x-auth-token': token, 'content-type': 'application/json', accept: 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await r.text();
      return { status: r.status, json: text ? (JSON.parse(text) as Record<string, any>) : undefined, text };
    };
    const show = async (id: string) => (await call('GET', `/v2/images/${id}`)).json!;
    /** Sends `bytes` in chunks, `delayMs` apart; resolves when the server answers or the connection breaks. */
    const stage = (id: string, bytes: Uint8Array, chunk = bytes.length, delayMs = 0) => {
      let off = 0;
      const body = new ReadableStream<Uint8Array>({
        async pull(ctrl) {
          if (off >= bytes.length) return ctrl.close();
          if (delayMs) await sleep(delayMs);
          ctrl.enqueue(bytes.subarray(off, off + chunk));
          off += chunk;
        },
      });
      return fetch(`${s!.url}/image/v2/images/${id}/stage`, {
        method: 'PUT',
        headers: { 'x-auth-token': token, 'content-type': 'application/octet-stream' },
        body,
        duplex: 'half',
      } as RequestInit).then(
        (r) => r.status,
        (e: Error) => e,
      );
    };

    test('staged, killed, restarted: the image is still uploading with its bytes, and imports as staged', async () => {
      if (dialect === 'postgres') {
        const db = await freshPgDatabase();
        env = { IMAGO_DATABASE_URL: db.url };
        dropDb = db.drop;
      }
      await serve();
      token = await projectWriterToken(s!, 'demo', 'wendy', 'g');
      const bytes = readFileSync(await qemuCreate('glance-restart-32m.qcow2', 'qcow2', '32M'));
      const img = (await call('POST', '/v2/images', { name: 'staged', disk_format: 'qcow2', container_format: 'bare' })).json!;
      assert.equal(await stage(img.id, bytes), 204);
      assert.equal((await show(img.id)).status, 'uploading');
      await s!.kill9();
      // GC between the kill and the restart (no grace): the staged blob is referenced by its image
      const gc = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
        execFile(
          process.execPath,
          [BIN, 'gc', '--json', '--data', dataDir],
          { env: { ...process.env, ...env, IMAGO_GC_GRACE_MS: '0' } },
          (err, stdout, stderr) => resolve({ code: err ? 1 : 0, stdout, stderr }),
        ),
      );
      assert.equal(gc.code, 0, gc.stderr);
      const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
      assert.ok(!(JSON.parse(gc.stdout) as { candidates: { digest: string }[] }).candidates.some((c) => c.digest === digest), 'GC keeps staged bytes');
      await serve();
      const after = await show(img.id);
      assert.equal(after.status, 'uploading', 'a finished stage survives the kill');
      assert.equal(after.size, bytes.length);
      const r = await call('POST', `/v2/images/${img.id}/import`, { method: { name: 'glance-direct' } });
      assert.equal(r.status, 202, r.text);
      let done = await show(img.id);
      for (let i = 0; i < 100 && done.status !== 'active'; i++) done = (await sleep(50), await show(img.id));
      assert.equal(done.status, 'active');
      const file = await fetch(`${s!.url}/image/v2/images/${img.id}/file`, { headers: { 'x-auth-token': token } });
      assert.equal(file.status, 200);
      assert.ok(Buffer.from(await file.arrayBuffer()).equals(bytes), 'the staged bytes are the image, byte-identical');
      assert.equal(done.os_hash_value, createHash('sha512').update(bytes).digest('hex'));
    });

    test('killed in the middle of a stage: restarted, the image is killed ("stage again"), staging swept; a new stage imports', async () => {
      const bytes = readFileSync(await qemuCreate('glance-restart-32m.qcow2', 'qcow2', '32M'));
      const img = (await call('POST', '/v2/images', { name: 'cut', disk_format: 'qcow2', container_format: 'bare' })).json!;
      const pending = stage(img.id, bytes, 64 * 1024, 20);
      let seen = await show(img.id);
      for (let i = 0; i < 100 && seen.status !== 'uploading'; i++) seen = (await sleep(20), await show(img.id));
      assert.equal(seen.status, 'uploading', 'the stage is under way');
      await s!.kill9();
      assert.ok((await pending) instanceof Error, 'the client saw the connection break');
      await serve();
      const killed = await show(img.id);
      assert.equal(killed.status, 'killed');
      assert.equal(killed.size, null);
      const rest = await fetch(`${s!.url}/api/v1/images/${img.id}`, { headers: { authorization: `Bearer ${token}` } }).then((r) => r.json() as any);
      assert.match(rest.stateReason, /stage was interrupted by a server restart; stage the image data again/);
      const uploads = join(dataDir, 'uploads');
      assert.deepEqual(existsSync(uploads) ? readdirSync(uploads) : [], [], 'the half-written stage is swept');
      assert.equal((await call('POST', `/v2/images/${img.id}/import`, { method: { name: 'glance-direct' } })).status, 409, 'nothing staged to import');
      assert.equal(await stage(img.id, bytes), 204);
      assert.equal((await call('POST', `/v2/images/${img.id}/import`, { method: { name: 'glance-direct' } })).status, 202);
      let done = await show(img.id);
      for (let i = 0; i < 100 && done.status !== 'active'; i++) done = (await sleep(50), await show(img.id));
      assert.equal(done.status, 'active');
    });
  });
}

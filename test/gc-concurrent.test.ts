/**
 * GC never blocks uploads or reads, and never collects a blob being uploaded or committed:
 * collections run in a loop while uploads and downloads go on; afterwards every ready image is
 * complete and verified.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { patternedRaw } from './support/qemu.js';
import { adminFetch as fetch, startTestServer } from './support/server.js';

test('GC running in a loop during uploads, deletes and downloads loses nothing referenced', async () => {
  const s = await startTestServer({ env: { IMAGO_GC_GRACE_MS: '60000' } });
  try {
    const base = readFileSync(await patternedRaw('gc-8m.raw', 8 << 20));
    let stop = false;
    let collections = 0;
    const gcLoop = (async () => {
      while (!stop) {
        await s.app.gc({ dryRun: false });
        collections++;
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) {
      const bytes = Buffer.from(base);
      bytes.writeUInt32LE(i, 4096); // distinct blobs
      const img = (await (
        await fetch(`${s.url}/api/v1/images`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: `gc-${i}` }) })
      ).json()) as { id: string };
      const up = await fetch(`${s.url}/api/v1/images/${img.id}/file`, { method: 'PUT', body: bytes, headers: { 'content-type': 'application/octet-stream' } });
      assert.equal(up.status, 200);
      if (i % 2 === 1) assert.equal((await fetch(`${s.url}/api/v1/images/${img.id}`, { method: 'DELETE' })).status, 204);
      else ids.push(img.id);
      const dl = await fetch(`${s.url}/api/v1/images/${ids[0]}/file`);
      assert.equal(dl.status, 200);
      await dl.arrayBuffer();
    }
    stop = true;
    await gcLoop;
    assert.ok(collections > 3, `gc ran ${collections} times`);
    for (const id of ids) {
      const meta = (await (await fetch(`${s.url}/api/v1/images/${id}`)).json()) as { digest: string; state: string };
      assert.equal(meta.state, 'ready');
      const body = new Uint8Array(await (await fetch(`${s.url}/api/v1/images/${id}/file`)).arrayBuffer());
      assert.equal(`sha256:${createHash('sha256').update(body).digest('hex')}`, meta.digest);
    }
    // the deleted images' blobs are young: kept by the grace period, collected once it has passed
    const plan = await s.app.gc({ dryRun: true });
    assert.ok(plan.plan.youngBytes >= 3 * (8 << 20));
  } finally {
    await s.stop();
  }
});

/**
 * The image service end to end over HTTP: real server, real SQLite and PostgreSQL, real files
 * made by qemu-img, uploads with the real curl. Catalog and lifecycle behaviour runs on both
 * dialects.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { cached, patternedRaw, qemuConvert, qemuCreate, sh } from './support/qemu.js';
import { adminFetch as fetch, apiRequest, startTestServer, type Dialect, type TestServer } from './support/server.js';

const exec = promisify(execFile);

const api = apiRequest;

/** curl -T, as a user would upload. */
async function curlUpload(s: TestServer, id: string, file: string, extra: string[] = []): Promise<{ status: number; json: Record<string, any> }> {
  const { stdout } = await exec(
    'curl',
    [
      '-sS',
      '-T',
      file,
      '-H',
      'content-type: application/octet-stream',
      '-H',
      `authorization: Bearer ${s.token}`,
      ...extra,
      '-w',
      '\n%{http_code}',
      `${s.url}/api/v1/images/${id}/file`,
    ],
    {
      maxBuffer: 16 << 20,
    },
  );
  const nl = stdout.lastIndexOf('\n');
  return { status: Number(stdout.slice(nl + 1)), json: JSON.parse(stdout.slice(0, nl)) };
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

function stagingEntries(s: TestServer): string[] {
  const dir = join(s.dataDir, 'uploads');
  return existsSync(dir) ? readdirSync(dir) : [];
}

for (const dialect of ['sqlite', 'postgres'] as Dialect[]) {
  describe(`image service (${dialect})`, () => {
    let s: TestServer;
    before(async () => {
      s = await startTestServer({ dialect });
    });
    after(async () => {
      await s?.stop();
    });

    test('create → upload qcow2 with curl -T → ready with sizes, digest, checksums; download byte-identical', async () => {
      const file = await qemuConvert('svc-data.qcow2', await patternedRaw('svc-src-8m.raw', 8 << 20), 'qcow2');
      const created = await api(s, 'POST', '/api/v1/images', {
        name: 'cirros',
        type: 'OS',
        osDistro: 'cirros',
        tags: ['test'],
        properties: { hw_disk_bus: 'virtio' },
      });
      assert.equal(created.status, 201, created.text);
      assert.equal(created.json!.state, 'pending');
      assert.equal(created.json!.glanceStatus, 'queued');
      assert.equal(created.json!.deckhousePhase, 'WaitForUserUpload');
      const up = await curlUpload(s, created.json!.id, file);
      assert.equal(up.status, 200, JSON.stringify(up.json));
      const bytes = readFileSync(file);
      assert.equal(up.json.state, 'ready');
      assert.equal(up.json.glanceStatus, 'active');
      assert.equal(up.json.openNebulaState, 'READY');
      assert.equal(up.json.deckhousePhase, 'Ready');
      assert.equal(up.json.diskFormat, 'qcow2');
      assert.equal(up.json.virtualSize, 8 << 20);
      assert.equal(up.json.storedSize, bytes.length);
      assert.equal(up.json.digest, `sha256:${sha256(bytes)}`);
      assert.equal(up.json.checksums.sha512, createHash('sha512').update(bytes).digest('hex'));
      assert.equal(up.json.inspection.format, 'qcow2');
      const dl = await fetch(`${s.url}/api/v1/images/${created.json!.id}/file`);
      assert.equal(dl.status, 200);
      assert.equal(dl.headers.get('etag'), `"${sha256(bytes)}"`);
      assert.equal(dl.headers.get('content-length'), String(bytes.length));
      assert.ok(dl.headers.get('repr-digest')?.includes('sha-256=:'));
      assert.equal(sha256(new Uint8Array(await dl.arrayBuffer())), sha256(bytes));
      // Range, HEAD, conditional GET
      const part = await fetch(`${s.url}/api/v1/images/${created.json!.id}/file`, { headers: { range: 'bytes=100-199' } });
      assert.equal(part.status, 206);
      assert.equal(part.headers.get('content-range'), `bytes 100-199/${bytes.length}`);
      assert.deepEqual(new Uint8Array(await part.arrayBuffer()), new Uint8Array(bytes.subarray(100, 200)));
      const suffix = await fetch(`${s.url}/api/v1/images/${created.json!.id}/file`, { headers: { range: 'bytes=-10' } });
      assert.deepEqual(new Uint8Array(await suffix.arrayBuffer()), new Uint8Array(bytes.subarray(bytes.length - 10)));
      const bad = await fetch(`${s.url}/api/v1/images/${created.json!.id}/file`, { headers: { range: `bytes=${bytes.length}-` } });
      assert.equal(bad.status, 416);
      await bad.text();
      const head = await fetch(`${s.url}/api/v1/images/${created.json!.id}/file`, { method: 'HEAD' });
      assert.equal(head.status, 200);
      assert.equal(head.headers.get('content-length'), String(bytes.length));
      const cond = await fetch(`${s.url}/api/v1/images/${created.json!.id}/file`, { headers: { 'if-none-match': `"${sha256(bytes)}"` } });
      assert.equal(cond.status, 304);
    });

    test('a hostile image is refused: 422 with the finding, image in error with the reason, nothing stored', async () => {
      const base = await qemuCreate('svc-base.qcow2', 'qcow2', '64M');
      const overlay = await cached('svc-overlay.qcow2', async (tmp) => {
        await sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', tmp]);
      });
      const img = (await api(s, 'POST', '/api/v1/images', { name: 'evil' })).json!;
      const blobsBefore = await countBlobs(s);
      const up = await curlUpload(s, img.id, overlay);
      assert.equal(up.status, 422);
      assert.equal(up.json.code, 'UNSAFE_IMAGE');
      assert.match(up.json.detail, /BACKING_FILE/);
      assert.ok(up.json.findings.some((f: { code: string }) => f.code === 'BACKING_FILE'));
      const after = (await api(s, 'GET', `/api/v1/images/${img.id}`)).json!;
      assert.equal(after.state, 'error');
      assert.equal(after.glanceStatus, 'killed');
      assert.equal(after.deckhousePhase, 'Failed');
      assert.match(after.stateReason, /backing file/i);
      assert.equal(await countBlobs(s), blobsBefore);
      assert.deepEqual(stagingEntries(s), []);
    });

    test('declared disk format must match the bytes (a "raw" that is really qcow2 is refused)', async () => {
      const file = await qemuCreate('svc-64m.qcow2', 'qcow2', '64M');
      const img = (await api(s, 'POST', '/api/v1/images', { name: 'liar', diskFormat: 'raw' })).json!;
      const up = await curlUpload(s, img.id, file);
      assert.equal(up.status, 422);
      assert.ok(up.json.findings.some((f: { code: string }) => f.code === 'FORMAT_MISMATCH'));
      const honest = (await api(s, 'POST', '/api/v1/images', { name: 'honest', diskFormat: 'qcow2' })).json!;
      assert.equal((await curlUpload(s, honest.id, file)).status, 200);
    });

    test('compressed uploads are unwrapped: the stored blob is the inner image', async () => {
      const file = await qemuCreate('svc-64m.qcow2', 'qcow2', '64M');
      const gz = await cached('svc-64m.qcow2.gz', async (tmp) => {
        await sh('sh', ['-c', `gzip -c ${file} > ${tmp}`]);
      });
      const img = (await api(s, 'POST', '/api/v1/images', { name: 'gz' })).json!;
      const up = await curlUpload(s, img.id, gz);
      assert.equal(up.status, 200, JSON.stringify(up.json));
      assert.equal(up.json.digest, `sha256:${sha256(readFileSync(file))}`);
      assert.equal(up.json.storedSize, statSync(file).size);
      assert.deepEqual(up.json.inspection.compression, ['gzip']);
    });

    test('identical bytes are stored once (dedup), and GC keeps them while referenced', async () => {
      const file = await patternedRaw('svc-dedup-2m.raw', 2 << 20);
      const a = (await api(s, 'POST', '/api/v1/images', { name: 'dup-a' })).json!;
      const b = (await api(s, 'POST', '/api/v1/images', { name: 'dup-b' })).json!;
      const before = await countBlobs(s);
      const ua = await curlUpload(s, a.id, file);
      const ub = await curlUpload(s, b.id, file);
      assert.equal(ua.json.digest, ub.json.digest);
      assert.equal(await countBlobs(s), before + 1);
      assert.equal((await api(s, 'DELETE', `/api/v1/images/${a.id}`)).status, 204);
      const check = await s.app.gc({ dryRun: true });
      assert.ok(!check.plan.candidates.some((c) => c.digest === ub.json.digest), 'still referenced by dup-b');
      assert.equal((await api(s, 'DELETE', `/api/v1/images/${b.id}`)).status, 204);
      const plan = await s.app.gc({ dryRun: true });
      assert.ok(plan.plan.candidates.some((c) => c.digest === ub.json.digest));
      assert.ok(plan.plan.reclaimableBytes >= 2 << 20);
      const done = await s.app.gc({ dryRun: false });
      assert.ok(done.deleted!.count >= 1);
      assert.equal(await countBlobs(s), before);
    });

    test('concurrent uploads to one image: one wins, the other gets 409', async () => {
      const file = await patternedRaw('svc-race-32m.raw', 32 << 20);
      const img = (await api(s, 'POST', '/api/v1/images', { name: 'race' })).json!;
      const [r1, r2] = await Promise.all([curlUpload(s, img.id, file, ['--limit-rate', '20M']), curlUpload(s, img.id, file, ['--limit-rate', '20M'])]);
      const statuses = [r1.status, r2.status].sort();
      assert.deepEqual(statuses, [200, 409], JSON.stringify([r1.json, r2.json]));
      const loser = r1.status === 409 ? r1.json : r2.json;
      assert.equal(loser.code, 'CONFLICT');
      assert.equal((await api(s, 'GET', `/api/v1/images/${img.id}`)).json!.state, 'ready');
      // ready images are immutable
      const again = await curlUpload(s, img.id, file);
      assert.equal(again.status, 409);
      assert.equal(again.json.code, 'INVALID_STATE');
    });

    test('Idempotency-Key: a retried create returns the first image; a different body with the key is refused', async () => {
      const key = `k-${Date.now()}-${Math.random()}`;
      const a = await api(s, 'POST', '/api/v1/images', { name: 'idem' }, { 'idempotency-key': key });
      const b = await api(s, 'POST', '/api/v1/images', { name: 'idem' }, { 'idempotency-key': key });
      assert.equal(a.status, 201);
      assert.equal(b.status, 200);
      assert.equal(a.json!.id, b.json!.id);
      const c = await api(s, 'POST', '/api/v1/images', { name: 'other' }, { 'idempotency-key': key });
      assert.equal(c.status, 422);
      assert.equal(c.json!.code, 'IDEMPOTENCY_MISMATCH');
    });

    test('list filters, sort and cursor pagination over the API', async () => {
      const tag = `t${Date.now()}`;
      for (let i = 0; i < 7; i++) {
        await api(s, 'POST', '/api/v1/images', { name: `page-${i}`, type: i % 2 ? 'DATABLOCK' : 'OS', tags: [tag], properties: { idx: String(i) } });
      }
      const seen: string[] = [];
      let cursor: string | undefined;
      for (let guard = 0; guard < 10; guard++) {
        const r = await api(s, 'GET', `/api/v1/images?tag=${tag}&sort=name:asc&limit=3${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
        assert.equal(r.status, 200, r.text);
        seen.push(...r.json!.images.map((i: { name: string }) => i.name));
        cursor = r.json!.nextCursor;
        if (!cursor) break;
      }
      assert.deepEqual(seen, ['page-0', 'page-1', 'page-2', 'page-3', 'page-4', 'page-5', 'page-6']);
      const blocks = await api(s, 'GET', `/api/v1/images?tag=${tag}&type=DATABLOCK`);
      assert.equal(blocks.json!.images.length, 3);
      const prop = await api(s, 'GET', `/api/v1/images?tag=${tag}&property=idx=4`);
      assert.deepEqual(
        prop.json!.images.map((i: { name: string }) => i.name),
        ['page-4'],
      );
      const badSort = await api(s, 'GET', '/api/v1/images?sort=size');
      assert.equal(badSort.status, 400);
      assert.equal(badSort.headers.get('content-type'), 'application/problem+json; charset=utf-8');
    });

    test('disable/enable and delete follow the lifecycle', async () => {
      const file = await patternedRaw('svc-dedup-2m.raw', 2 << 20);
      const img = (await api(s, 'POST', '/api/v1/images', { name: 'cycle' })).json!;
      assert.equal((await api(s, 'POST', `/api/v1/images/${img.id}/disable`)).status, 409, 'pending cannot be disabled');
      await curlUpload(s, img.id, file);
      const d = await api(s, 'POST', `/api/v1/images/${img.id}/disable`);
      assert.equal(d.json!.state, 'disabled');
      assert.equal(d.json!.glanceStatus, 'deactivated');
      assert.equal(d.json!.openNebulaState, 'DISABLED');
      const dl = await api(s, 'GET', `/api/v1/images/${img.id}/file`);
      assert.equal(dl.status, 409);
      assert.match(dl.json!.detail, /disabled/);
      assert.equal((await api(s, 'POST', `/api/v1/images/${img.id}/enable`)).json!.state, 'ready');
      assert.equal((await api(s, 'DELETE', `/api/v1/images/${img.id}`)).status, 204);
      const gone = await api(s, 'GET', `/api/v1/images/${img.id}`);
      assert.equal(gone.status, 404);
      assert.equal(gone.json!.code, 'IMAGE_NOT_FOUND');
    });

    test('delete refuses with 409 while the image is locked or in use, and says why', async () => {
      const file = await patternedRaw('svc-dedup-2m.raw', 2 << 20);
      const img = (await api(s, 'POST', '/api/v1/images', { name: 'held' })).json!;
      await curlUpload(s, img.id, file);
      const ready = (await s.app.images.get(img.id))!;
      // a clone/conversion holds it (no public lock action yet: the domain sets it)
      await s.app.images.repo.update(img.id, { state: 'locked', lockReason: 'clone' }, { expectedVersion: ready.version });
      const locked = await api(s, 'DELETE', `/api/v1/images/${img.id}`);
      assert.equal(locked.status, 409);
      assert.equal(locked.json!.code, 'IMAGE_LOCKED');
      assert.match(locked.json!.detail, /locked by a clone/);
      assert.equal((await api(s, 'GET', `/api/v1/images/${img.id}`)).json!.openNebulaState, 'CLONE');
      const l = (await s.app.images.get(img.id))!;
      await s.app.images.repo.update(img.id, { state: 'ready', lockReason: null, usedBy: 2 }, { expectedVersion: l.version });
      const used = await api(s, 'DELETE', `/api/v1/images/${img.id}`);
      assert.equal(used.status, 409);
      assert.equal(used.json!.code, 'IMAGE_IN_USE');
      assert.equal((await api(s, 'GET', `/api/v1/images/${img.id}`)).json!.openNebulaState, 'USED');
    });

    test('PATCH updates metadata; managed fields and bad values are refused with the field named', async () => {
      const img = (await api(s, 'POST', '/api/v1/images', { name: 'meta' })).json!;
      const p = await api(s, 'PATCH', `/api/v1/images/${img.id}`, { description: 'x', minRam: 512, properties: { os_distro: 'ubuntu' } });
      assert.equal(p.status, 200, p.text);
      assert.equal(p.json!.minRam, 512);
      assert.equal(p.json!.version, img.version + 1);
      const st = await api(s, 'PATCH', `/api/v1/images/${img.id}`, { state: 'ready' });
      assert.equal(st.status, 400);
      assert.match(st.json!.detail, /managed by Imago/);
      const voc = await api(s, 'PATCH', `/api/v1/images/${img.id}`, { properties: { os_distro: 'windoze' } });
      assert.equal(voc.status, 400);
      assert.match(voc.json!.detail, /not a known os_distro/);
      const type = await api(s, 'POST', '/api/v1/images', { name: 'x', type: 'FLOPPY' });
      assert.equal(type.status, 400);
      assert.match(type.json!.detail, /type/);
    });
  });
}

async function countBlobs(s: TestServer): Promise<number> {
  let n = 0;
  for await (const _ of s.app.store.list()) n++;
  return n;
}

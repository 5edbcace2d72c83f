/**
 * Conversion in the service, end to end over HTTP on a real server: download as another format
 * (on the fly, then as a stored variant), the same access checks as the plain download,
 * convert-on-import (IMAGO_CONVERT_TO and the project override), GC of variant blobs, and the
 * restart of a conversion a stopped process left behind. qemu-img makes the inputs and judges
 * the outputs (`qemu-img compare`).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { openDatabase } from '../src/db/database.js';
import { patternedRaw, qemuConvert } from './support/qemu.js';
import { adminFetch as fetch, apiRequest, startTestServer, type Dialect, type TestServer } from './support/server.js';

const exec = promisify(execFile);
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const work = mkdtempSync(join(tmpdir(), 'imago-convert-'));
after(() => rmSync(work, { recursive: true, force: true }));

const api = apiRequest;

async function putFile(s: TestServer, id: string, file: string, headers: Record<string, string> = {}) {
  const res = await fetch(`${s.url}/api/v1/images/${id}/file`, {
    method: 'PUT',
    headers: { 'content-type': 'application/octet-stream', ...headers },
    body: readFileSync(file),
  });
  const text = await res.text();
  return { status: res.status, json: JSON.parse(text) as Record<string, any>, text };
}

/** GET into a file; returns status, headers, path and sha256 of the body. */
async function download(s: TestServer, path: string, headers: Record<string, string> = {}) {
  const res = await fetch(`${s.url}${path}`, { headers });
  const body = new Uint8Array(await res.arrayBuffer());
  const file = join(work, randomUUID());
  writeFileSync(file, body);
  return { status: res.status, headers: res.headers, file, body, sha256: sha256(body) };
}

/** `qemu-img compare` exit code: 0 identical, 1 different. */
async function qemuCompare(a: string, fa: string, b: string, fb: string): Promise<number> {
  try {
    await exec('qemu-img', ['compare', '-q', '-f', fa, '-F', fb, a, b]);
    return 0;
  } catch (e) {
    return (e as { code?: number }).code ?? -1;
  }
}

async function createImage(s: TestServer, body: Record<string, unknown>): Promise<string> {
  const r = await api(s, 'POST', '/api/v1/images', { type: 'OS', ...body });
  assert.equal(r.status, 201, r.text);
  return r.json!.id as string;
}

async function waitForState(s: TestServer, id: string, state: string, ms = 30_000): Promise<Record<string, any>> {
  const end = Date.now() + ms;
  for (;;) {
    const r = await api(s, 'GET', `/api/v1/images/${id}`);
    if (r.json?.state === state) return r.json;
    if (Date.now() > end) assert.fail(`image ${id} did not become ${state}: ${r.text}`);
    await new Promise((res) => setTimeout(res, 50));
  }
}

async function blobCount(s: TestServer): Promise<number> {
  let n = 0;
  for await (const _ of s.app.store.list()) n++;
  return n;
}

// qemu-img's names for our formats, for `compare -F`
const QEMU_NAME: Record<string, string> = { raw: 'raw', qcow2: 'qcow2', vmdk: 'vmdk', vhd: 'vpc', vhdx: 'vhdx', vdi: 'vdi' };

for (const dialect of ['sqlite', 'postgres'] as Dialect[]) {
  describe(`download as another format (${dialect})`, () => {
    let s: TestServer;
    let source: string;
    let id: string;
    /** the other test's image: its raw variant has the same bytes as this image's */
    let own: string;
    before(async () => {
      s = await startTestServer({ dialect });
      source = await qemuConvert('convert-svc.qcow2', await patternedRaw('convert-svc-src-8m.raw', 8 << 20), 'qcow2');
      id = await createImage(s, { name: 'conv' });
      const up = await putFile(s, id, source);
      assert.equal(up.status, 200, up.text);
      assert.equal(up.json.state, 'ready');
    });
    after(async () => {
      await s?.stop();
    });

    const cases: { query: string; format: string; optionsKey: string; streamed: boolean; skipOnPg?: boolean }[] = [
      { query: 'format=raw', format: 'raw', optionsKey: '', streamed: true },
      { query: 'format=vmdk', format: 'vmdk', optionsKey: '', streamed: true },
      { query: 'format=vhd', format: 'vhd', optionsKey: '', streamed: false },
      { query: 'format=vhd&subformat=fixed', format: 'vhd', optionsKey: 'subformat=fixed', streamed: true, skipOnPg: true },
      { query: 'format=qcow2&options=compress=on', format: 'qcow2', optionsKey: 'compress=on', streamed: false, skipOnPg: true },
    ];
    for (const c of cases) {
      test(
        `?${c.query}: identical to the original (qemu-img compare); the second download is the stored variant`,
        { skip: dialect === 'postgres' && c.skipOnPg },
        async () => {
          const first = await download(s, `/api/v1/images/${id}/file?${c.query}`);
          assert.equal(first.status, 200, Buffer.from(first.body.subarray(0, 500)).toString());
          assert.equal(first.headers.get('x-image-format'), c.format);
          if (c.streamed) {
            assert.equal(first.headers.get('x-image-variant'), 'converting');
            assert.equal(first.headers.get('content-length'), null, 'made while sent: no length');
            assert.equal(first.headers.get('etag'), null);
          } else {
            assert.equal(first.headers.get('x-image-variant'), 'variant');
          }
          assert.equal(await qemuCompare(source, 'qcow2', first.file, QEMU_NAME[c.format]!), 0, `qemu-img compare says ${c.query} differs from the original`);

          const variant = await s.app.images.repo.variant(id, c.format, c.optionsKey);
          assert.ok(variant, 'the conversion is recorded as a variant');
          // what was streamed is exactly what was stored
          assert.equal(`sha256:${first.sha256}`, variant.digest);
          const blobs = await blobCount(s);

          const second = await download(s, `/api/v1/images/${id}/file?${c.query}`);
          assert.equal(second.status, 200);
          assert.equal(second.headers.get('x-image-variant'), 'variant');
          assert.equal(second.headers.get('etag'), `"${variant.digest.slice(7)}"`);
          assert.equal(second.headers.get('content-length'), String(variant.sizeBytes));
          assert.equal(second.headers.get('x-image-digest'), variant.digest);
          assert.match(second.headers.get('repr-digest') ?? '', /^sha-256=:/);
          assert.equal(second.sha256, first.sha256);
          // no second conversion: same row, no new blob
          const again = await s.app.images.repo.variant(id, c.format, c.optionsKey);
          assert.equal(again!.createdAt.getTime(), variant.createdAt.getTime());
          assert.equal(await blobCount(s), blobs);

          const ranged = await download(s, `/api/v1/images/${id}/file?${c.query}`, { range: 'bytes=0-511' });
          assert.equal(ranged.status, 206);
          assert.equal(ranged.headers.get('content-range'), `bytes 0-511/${variant.sizeBytes}`);
          assert.deepEqual(ranged.body, first.body.subarray(0, 512));
          const cachedResp = await fetch(`${s.url}/api/v1/images/${id}/file?${c.query}`, { headers: { 'if-none-match': `"${variant.digest.slice(7)}"` } });
          assert.equal(cachedResp.status, 304);
        },
      );
    }

    test('two concurrent requests make one conversion; a client that leaves early does not stop it', async () => {
      const q = 'format=vmdk&subformat=streamOptimized';
      const [x, y] = await Promise.all([download(s, `/api/v1/images/${id}/file?${q}`), download(s, `/api/v1/images/${id}/file?${q}`)]);
      assert.equal(x.sha256, y.sha256);
      assert.deepEqual([x.headers.get('x-image-variant'), y.headers.get('x-image-variant')].sort(), ['converting', 'variant']);
      const v = await s.app.images.repo.variant(id, 'vmdk', 'subformat=streamOptimized');
      assert.equal(v?.digest, `sha256:${x.sha256}`);

      const ac = new AbortController();
      const res = await fetch(`${s.url}/api/v1/images/${id}/file?format=vdi&options=static=on`, { signal: ac.signal });
      assert.equal(res.headers.get('x-image-variant'), 'converting');
      const reader = res.body!.getReader();
      await reader.read();
      ac.abort();
      await reader.cancel().catch(() => undefined);
      const end = Date.now() + 20_000;
      let stored;
      while (!(stored = await s.app.images.repo.variant(id, 'vdi', 'static=on')) && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
      assert.ok(stored, 'the variant is stored although the client left');
      const got = await download(s, `/api/v1/images/${id}/file?format=vdi&options=static=on`);
      assert.equal(got.headers.get('x-image-variant'), 'variant');
      assert.equal(await qemuCompare(source, 'qcow2', got.file, 'vdi'), 0);
    });

    test("the image's own format is the original; bad formats and options are clear 400s", async () => {
      const img = (await api(s, 'GET', `/api/v1/images/${id}`)).json!;
      const same = await download(s, `/api/v1/images/${id}/file?format=qcow2`);
      assert.equal(same.status, 200);
      assert.equal(same.headers.get('x-image-variant'), 'original');
      assert.equal(same.headers.get('etag'), `"${String(img.digest).slice(7)}"`);
      assert.equal(same.sha256, sha256(readFileSync(source)));
      for (const [q, field] of [
        ['format=qed', 'format'],
        ['format=bogus', 'format'],
        ['format=vhd&subformat=nope', undefined],
        ['format=vmdk&options=no_such_option=1', undefined],
        ['format=raw&options=a=b=c', 'options'],
      ] as const) {
        const r = await api(s, 'GET', `/api/v1/images/${id}/file?${q}`);
        assert.equal(r.status, 400, `${q}: ${r.text}`);
        assert.match(r.headers.get('content-type') ?? '', /application\/problem\+json/);
        assert.equal(r.json!.code, 'INVALID_REQUEST');
        if (field) assert.equal(r.json!.field, field);
        assert.ok(String(r.json!.detail).length > 20);
      }
      const pending = await createImage(s, { name: 'empty' });
      const r = await api(s, 'GET', `/api/v1/images/${pending}/file?format=raw`);
      assert.equal(r.status, 409);
      assert.equal(r.json!.code, 'INVALID_STATE');
    });

    test('unauthorized principals get the same 401/404 as the plain download, and convert nothing', async () => {
      for (const p of ['convmine', 'convother']) assert.equal((await api(s, 'POST', '/api/v1/projects', { name: p })).status, 201);
      const tok = await api(s, 'POST', '/api/v1/tokens', { name: 'reader-other', project: 'convother', role: 'reader', user: 'bob' });
      assert.equal(tok.status, 201, tok.text);
      const reader = `Bearer ${tok.json!.token as string}`;
      own = await createImage(s, { name: 'private', project: 'convmine' });
      assert.equal((await putFile(s, own, source)).status, 200);
      for (const q of ['', '?format=raw', '?format=vhd', '?format=qcow2']) {
        const plainAnon = await api(s, 'GET', `/api/v1/images/${own}/file`, undefined, { authorization: '' });
        const anon = await api(s, 'GET', `/api/v1/images/${own}/file${q}`, undefined, { authorization: '' });
        assert.equal(anon.status, plainAnon.status);
        assert.equal(anon.status, 401);
        assert.equal(anon.json!.code, plainAnon.json!.code);
        const plainOther = await api(s, 'GET', `/api/v1/images/${own}/file`, undefined, { authorization: reader });
        const other = await api(s, 'GET', `/api/v1/images/${own}/file${q}`, undefined, { authorization: reader });
        assert.equal(other.status, plainOther.status);
        assert.equal(other.status, 404);
        assert.equal(other.json!.code, 'IMAGE_NOT_FOUND');
        const bad = await api(s, 'GET', `/api/v1/images/${own}/file${q}`, undefined, { authorization: 'Bearer imago_nonsense' });
        assert.equal(bad.status, 401);
      }
      assert.deepEqual(await s.app.images.repo.variants(own), [], 'a refused request converts nothing');
      // the reader of the owning project may
      const mineTok = await api(s, 'POST', '/api/v1/tokens', { name: 'reader-mine', project: 'convmine', role: 'reader', user: 'carol' });
      const ok = await download(s, `/api/v1/images/${own}/file?format=raw`, { authorization: `Bearer ${mineTok.json!.token as string}` });
      assert.equal(ok.status, 200);
      assert.equal(await qemuCompare(source, 'qcow2', ok.file, 'raw'), 0);
    });

    test('GC keeps variant blobs while the image exists and collects them after it is deleted', async () => {
      const variants = await s.app.images.repo.variants(id);
      assert.ok(variants.length >= 3);
      const img = (await api(s, 'GET', `/api/v1/images/${id}`)).json!;
      const referenced = await s.app.images.repo.referencedDigests();
      for (const v of variants) assert.ok(referenced.has(v.digest), `referencedDigests() includes ${v.format} ${v.optionsKey}`);
      await s.app.gc({ dryRun: false });
      for (const v of variants) assert.ok(await s.app.store.stat(v.digest), `variant blob ${v.format} kept`);
      assert.ok(await s.app.store.stat(img.digest));
      const del = await api(s, 'DELETE', `/api/v1/images/${id}`);
      assert.equal(del.status, 204, del.text);
      assert.deepEqual(await s.app.images.repo.variants(id), []);
      await s.app.gc({ dryRun: false });
      // a blob another image still references (the other image's raw variant: the same bytes) stays
      const shared = new Set((await s.app.images.repo.variants(own)).map((v) => v.digest));
      assert.equal(shared.size, 1);
      for (const v of variants) {
        if (shared.has(v.digest)) assert.ok(await s.app.store.stat(v.digest), `shared ${v.format} blob kept`);
        else assert.equal(await s.app.store.stat(v.digest), undefined, `variant blob ${v.format} ${v.optionsKey} collected`);
      }
      assert.equal((await api(s, 'DELETE', `/api/v1/images/${own}`)).status, 204);
      await s.app.gc({ dryRun: false });
      for (const d of shared) assert.equal(await s.app.store.stat(d), undefined, 'collected once no image references it');
    });
  });
}

describe('convert on import', () => {
  let s: TestServer;
  let raw: string;
  before(async () => {
    s = await startTestServer({ env: { IMAGO_CONVERT_TO: 'qcow2' } });
    raw = await patternedRaw('convert-import-src-8m.raw', 8 << 20);
  });
  after(async () => {
    await s?.stop();
  });

  test('IMAGO_CONVERT_TO=qcow2: a raw upload ends ready as qcow2, identical to the upload; the original stays a variant', async () => {
    const id = await createImage(s, { name: 'to-qcow2' });
    const up = await putFile(s, id, raw);
    assert.equal(up.status, 200, up.text);
    assert.ok(['locked', 'ready'].includes(up.json.state), up.text);
    if (up.json.state === 'locked') assert.equal(up.json.lockReason ?? 'convert', 'convert');
    const img = await waitForState(s, id, 'ready');
    assert.equal(img.diskFormat, 'qcow2');
    assert.equal(img.inspection.format, 'qcow2');
    assert.equal(img.virtualSize, 8 << 20);
    assert.notEqual(img.digest, `sha256:${sha256(readFileSync(raw))}`);
    const plain = await download(s, `/api/v1/images/${id}/file`);
    assert.equal(plain.status, 200);
    assert.equal(`sha256:${plain.sha256}`, img.digest);
    assert.equal(String(plain.body.length), String(img.storedSize));
    assert.equal(await qemuCompare(raw, 'raw', plain.file, 'qcow2'), 0, 'the stored qcow2 reads like the uploaded raw');
    // the uploaded bytes are kept as the raw variant
    const orig = await download(s, `/api/v1/images/${id}/file?format=raw`);
    assert.equal(orig.headers.get('x-image-variant'), 'variant');
    assert.equal(orig.sha256, sha256(readFileSync(raw)));
    const jobs = await s.app.db.kysely.selectFrom('jobs').selectAll().where('image_id', '=', id).where('kind', '=', 'convert').execute();
    assert.equal(jobs.length, 1);
    assert.equal(jobs[0]!.state, 'done');
    // GC keeps both
    await s.app.gc({ dryRun: false });
    assert.ok(await s.app.store.stat(img.digest));
    assert.ok(await s.app.store.stat(`sha256:${sha256(readFileSync(raw))}`));
  });

  test('an upload already in the target format is not converted', async () => {
    const q = await qemuConvert('convert-import.qcow2', raw, 'qcow2');
    const id = await createImage(s, { name: 'already' });
    const up = await putFile(s, id, q);
    assert.equal(up.json.state, 'ready');
    assert.equal(up.json.digest, `sha256:${sha256(readFileSync(q))}`);
    assert.equal((await s.app.db.kysely.selectFrom('jobs').selectAll().where('image_id', '=', id).execute()).length, 0);
  });

  test('PATCH /projects/{name} {convertTo}: server admins only; "none" keeps uploads as they are, null restores the server setting', async () => {
    assert.equal((await api(s, 'POST', '/api/v1/projects', { name: 'keepers' })).status, 201);
    const tok = await api(s, 'POST', '/api/v1/tokens', { name: 'adm', project: 'keepers', role: 'admin', user: 'pat' });
    const projAdmin = await api(s, 'PATCH', '/api/v1/projects/keepers', { convertTo: 'none' }, { authorization: `Bearer ${tok.json!.token as string}` });
    assert.equal(projAdmin.status, 403, projAdmin.text);
    assert.equal((await api(s, 'PATCH', '/api/v1/projects/keepers', { convertTo: 'qed' })).status, 400);
    assert.equal((await api(s, 'PATCH', '/api/v1/projects/nope', { convertTo: 'raw' })).status, 404);
    const set = await api(s, 'PATCH', '/api/v1/projects/keepers', { convertTo: 'none' });
    assert.equal(set.status, 200, set.text);
    assert.deepEqual(set.json, { project: 'keepers', convertTo: 'none' });
    const kept = await createImage(s, { name: 'kept', project: 'keepers' });
    const up = await putFile(s, kept, raw);
    assert.equal(up.json.state, 'ready');
    assert.equal(up.json.diskFormat, 'raw');
    assert.equal((await api(s, 'PATCH', '/api/v1/projects/keepers', { convertTo: 'vmdk' })).status, 200);
    const vm = await createImage(s, { name: 'as-vmdk', project: 'keepers' });
    await putFile(s, vm, raw);
    const img = await waitForState(s, vm, 'ready');
    assert.equal(img.diskFormat, 'vmdk');
    const got = await download(s, `/api/v1/images/${vm}/file`);
    assert.equal(await qemuCompare(raw, 'raw', got.file, 'vmdk'), 0);
    assert.equal((await api(s, 'PATCH', '/api/v1/projects/keepers', { convertTo: null })).status, 200);
  });
});

describe('a conversion a stopped process left behind', () => {
  test('restart resumes the job (image ends ready as qcow2) and frees a lock that has no job', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'imago-convert-restart-'));
    const raw = await patternedRaw('convert-import-src-8m.raw', 8 << 20);
    try {
      let s = await startTestServer({ dataDir });
      const a = await createImage(s, { name: 'interrupted' });
      const b = await createImage(s, { name: 'stranded' });
      for (const id of [a, b]) assert.equal((await putFile(s, id, raw)).json.state, 'ready');
      const imgA = (await api(s, 'GET', `/api/v1/images/${a}`)).json!;
      await s.stop();

      // the state kill -9 leaves mid-conversion: the job running, the image locked; and a lock whose job row never landed
      const db = await openDatabase(`sqlite:${join(dataDir, 'imago.db')}`);
      const now = Date.now();
      await db.kysely
        .insertInto('jobs')
        .values({
          id: randomUUID(),
          kind: 'convert',
          image_id: a,
          state: 'running',
          payload: JSON.stringify({ phase: 'convert', source: imgA.digest, sourceFormat: 'raw', sourceSize: imgA.storedSize, target: 'qcow2' }),
          progress: 40,
          attempts: 1,
          error: null,
          lease_owner: null,
          lease_until: null,
          created_at: now,
          updated_at: now,
        })
        .execute();
      await db.kysely.updateTable('images').set({ state: 'locked', lock_reason: 'convert', progress: 40 }).where('id', 'in', [a, b]).execute();
      await db.close();

      s = await startTestServer({ dataDir });
      try {
        const done = await waitForState(s, a, 'ready');
        assert.equal(done.diskFormat, 'qcow2');
        const got = await download(s, `/api/v1/images/${a}/file`);
        assert.equal(await qemuCompare(raw, 'raw', got.file, 'qcow2'), 0);
        const freed = await waitForState(s, b, 'ready');
        assert.equal(freed.diskFormat, 'raw');
        assert.equal(freed.digest, imgA.digest);
        const jobs = await s.app.db.kysely.selectFrom('jobs').selectAll().where('kind', '=', 'convert').execute();
        assert.deepEqual(
          jobs.map((j) => [j.image_id, j.state, j.attempts]),
          [[a, 'done', 2]],
        );
      } finally {
        await s.stop();
      }
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

/**
 * Glance's interoperable import under /image on a real server (SQLite and PostgreSQL): stage +
 * glance-direct through the one ingest path (a hostile stage ends killed with nothing stored),
 * web-download through the URL import job and its policy (from an HTTP server on 127.0.0.1 that the
 * server's IMAGO_IMPORT_ALLOW lets through), copy-image on one store, the import progress
 * properties, /v2/info/{import,stores,usage}, and the tasks API over the import jobs — with
 * Glance's statuses and messages (compared against a live Glance 25.1). The real glanceclient
 * drives the same calls in test/glance-import-cli.test.ts.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { TASK_SCHEMA, TASKS_SCHEMA } from '../src/api/glance/task-view.js';
import { qemuCreate } from './support/qemu.js';
import { glanceCaller } from './support/glance-http.js';
import { startTestServer, type Dialect, type TestServer } from './support/server.js';

const PATCH = 'application/openstack-images-v2.1-json-patch';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

for (const dialect of ['sqlite', 'postgres'] as Dialect[]) {
  describe(`Glance interoperable import under /image (${dialect})`, () => {
    let s: TestServer;
    let token: string;
    let files: Server;
    let filesUrl: string;
    let qcow2: Buffer;
    let overlay: Buffer;

    const call = glanceCaller(
      () => s.url,
      () => token,
    );
    const asAdmin = (method: string, path: string, body?: unknown) => call(method, path, { token: s.token, body });
    const create = async (body: Record<string, unknown>) => {
      const r = await call('POST', '/v2/images', { body });
      assert.equal(r.status, 201, r.text);
      return r.json as Record<string, any>;
    };
    const show = async (id: string) => (await call('GET', `/v2/images/${id}`)).json as Record<string, any>;
    const importing = (id: string, body: unknown, headers?: Record<string, string>) =>
      call('POST', `/v2/images/${id}/import`, { body, headers: { accept: 'application/json', ...headers } });
    /** PUT chunked, without a length, as glanceclient sends a file */
    async function stage(id: string, bytes: Uint8Array) {
      let sent = false;
      const body = new ReadableStream<Uint8Array>({
        pull(ctrl) {
          if (sent) return ctrl.close();
          ctrl.enqueue(bytes);
          sent = true;
        },
      });
      const r = await fetch(`${s.url}/image/v2/images/${id}/stage`, {
        method: 'PUT',
        headers: { 'x-auth-token': token, 'content-type': 'application/octet-stream', accept: 'application/json' },
        body,
        duplex: 'half',
      } as RequestInit);
      return { status: r.status, text: await r.text() };
    }
    async function until(id: string, done: (img: Record<string, any>) => boolean): Promise<Record<string, any>> {
      for (let i = 0; i < 200; i++) {
        const img = await show(id);
        if (done(img)) return img;
        await sleep(50);
      }
      throw new Error(`image ${id} never got there: ${JSON.stringify(await show(id))}`);
    }
    const sha = (alg: string, b: Uint8Array) => createHash(alg).update(b).digest('hex');
    const blobPath = (b: Uint8Array) => {
      const hex = sha('sha256', b);
      return join(s.dataDir, 'blobs', 'sha256', hex.slice(0, 2), hex);
    };

    before(async () => {
      qcow2 = readFileSync(await qemuCreate('glance-import-64m.qcow2', 'qcow2', '64M'));
      const base = await qemuCreate('glance-import-base.qcow2', 'qcow2', '16M');
      overlay = readFileSync(await qemuCreate('glance-import-overlay.qcow2', 'qcow2', '16M', [`backing_file=${base}`, 'backing_fmt=qcow2']));
      files = createServer((req, res) => {
        if (req.url?.startsWith('/disk.qcow2')) {
          res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(qcow2.length) });
          res.end(qcow2);
        } else {
          res.writeHead(404);
          res.end('no such file');
        }
      });
      await new Promise<void>((r) => files.listen(0, '127.0.0.1', r));
      filesUrl = `http://127.0.0.1:${(files.address() as { port: number }).port}`;
      s = await startTestServer({ dialect, env: { IMAGO_MD5: '1', IMAGO_IMPORT_ALLOW: '127.0.0.1' } });
      const admin = async (method: string, path: string, body: unknown) => {
        const r = await fetch(`${s.url}${path}`, {
          method,
          headers: { authorization: `Bearer ${s.token}`, 'content-type': 'application/json' },
          body: JSON.stringify(body),
        });
        const text = await r.text();
        assert.ok(r.ok, `${path}: ${r.status} ${text}`);
        return JSON.parse(text) as Record<string, string>;
      };
      await admin('POST', '/api/v1/projects', { name: 'demo' });
      await admin('PUT', '/api/v1/projects/demo/quota', { images: 50, storedBytes: 1 << 30 });
      token = (await admin('POST', '/api/v1/tokens', { name: 'glance', project: 'demo', role: 'writer', user: 'wendy' })).token!;
    });
    after(async () => {
      await s?.stop();
      await new Promise((r) => files?.close(r));
    });

    test('/v2/info: import methods and stores as Glance shows them; usage from the project quota; create names both', async () => {
      const info = await call('GET', '/v2/info/import');
      assert.equal(info.status, 200);
      assert.deepEqual(info.json, {
        'import-methods': { description: 'Import methods available.', type: 'array', value: ['glance-direct', 'web-download', 'copy-image'] },
      });
      assert.deepEqual((await call('GET', '/v2/info/stores')).json, { stores: [{ id: 'default', default: 'true' }] });
      const img = await create({ name: 'usage-1', disk_format: 'qcow2', container_format: 'bare' });
      assert.equal(await stage(img.id, qcow2).then((r) => r.status), 204);
      const usage = (await call('GET', '/v2/info/usage')).json.usage;
      assert.deepEqual(Object.keys(usage).sort(), ['image_count_total', 'image_count_uploading', 'image_size_total', 'image_stage_total']);
      assert.deepEqual(usage.image_size_total, { limit: 1024, usage: Math.floor((await show(img.id)).size / (1 << 20)) });
      assert.equal(usage.image_count_total.limit, 50);
      assert.ok(usage.image_count_total.usage >= 1);
      assert.deepEqual(usage.image_stage_total, { limit: -1, usage: 0 }, 'unlimited is -1; nothing is being received now');
      assert.deepEqual(usage.image_count_uploading, { limit: -1, usage: 0 });
      // a server administrator's token has no project: no usage to show (Glance without limits)
      assert.deepEqual((await asAdmin('GET', '/v2/info/usage')).json, { usage: {} });
      const made = await call('POST', '/v2/images', { body: { name: 'headers' } });
      assert.equal(made.headers.get('openstack-image-import-methods'), 'glance-direct,web-download,copy-image');
      assert.equal(made.headers.get('openstack-image-store-ids'), 'default');
    });

    test('stage (chunked) → uploading, then glance-direct → active with hashes, stores and empty progress properties; a task records it', async () => {
      const img = await create({ name: 'direct-1', disk_format: 'qcow2', container_format: 'bare' });
      assert.equal(img.os_glance_importing_to_stores, undefined);
      const notStaged = await importing(img.id, { method: { name: 'glance-direct' } });
      assert.equal(notStaged.status, 409);
      assert.match(notStaged.json.message, /Image needs to be staged before 'glance-direct' method can be used/);
      assert.equal((await stage(img.id, qcow2)).status, 204);
      const staged = await show(img.id);
      assert.equal(staged.status, 'uploading');
      assert.equal(staged.size, qcow2.length);
      assert.equal(staged.os_glance_importing_to_stores, undefined, 'staged, not importing yet');
      assert.equal(staged.stores, undefined);
      assert.equal((await call('GET', `/v2/images/${img.id}/file`)).status, 204, 'staged data is not the image yet');
      const again = await stage(img.id, qcow2);
      assert.equal(again.status, 409, 'one stage per image');
      const rest = await fetch(`${s.url}/api/v1/images/${img.id}`, { headers: { authorization: `Bearer ${token}` } }).then((r) => r.json() as any);
      assert.equal(rest.state, 'staged');
      assert.equal(rest.glanceStatus, 'uploading');

      const r = await importing(img.id, { method: { name: 'glance-direct' } });
      assert.equal(r.status, 202, r.text);
      assert.equal(r.text, '');
      const done = await until(img.id, (i) => i.status === 'active');
      assert.equal(done.os_hash_algo, 'sha512');
      assert.equal(done.os_hash_value, sha('sha512', qcow2));
      assert.equal(done.checksum, sha('md5', qcow2));
      assert.equal(done.virtual_size, 64 * 1024 * 1024);
      assert.equal(done.os_glance_importing_to_stores, '');
      assert.equal(done.os_glance_failed_import, '');
      assert.equal(done.stores, 'default');
      const file = await fetch(`${s.url}/image/v2/images/${img.id}/file`, { headers: { 'x-auth-token': token } });
      assert.equal(file.status, 200);
      assert.equal(sha('sha256', new Uint8Array(await file.arrayBuffer())), sha('sha256', qcow2));
      const active = await importing(img.id, { method: { name: 'glance-direct' } });
      assert.equal(active.status, 409);
      assert.match(active.json.message, /Image with status active cannot be target for import/);

      const tasks = (await call('GET', `/v2/images/${img.id}/tasks`)).json.tasks;
      assert.equal(tasks.length, 1);
      const t = tasks[0];
      assert.match(t.id, UUID);
      assert.equal(t.type, 'api_image_import');
      assert.equal(t.status, 'success');
      assert.equal(t.owner, 'demo');
      assert.equal(t.user_id, 'wendy');
      assert.equal(t.image_id, img.id);
      assert.deepEqual(t.input, { image_id: img.id, import_req: { method: { name: 'glance-direct' } }, backend: ['default'] });
      assert.deepEqual(t.result, { image_id: img.id });
      assert.equal(t.deleted, false);
      assert.match(t.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$/, 'the database row form Glance answers here');
    });

    test('a hostile stage (qcow2 with a backing file) is refused with the finding: killed, nothing stored, nothing to import', async () => {
      const img = await create({ name: 'hostile-stage', disk_format: 'qcow2', container_format: 'bare' });
      const r = await stage(img.id, overlay);
      assert.equal(r.status, 400, r.text);
      assert.match(r.text, /BACKING_FILE/);
      const killed = await show(img.id);
      assert.equal(killed.status, 'killed');
      assert.equal(killed.size, null);
      assert.equal(killed.os_hash_value, null);
      assert.equal(existsSync(blobPath(overlay)), false, 'the refused bytes are not in the store');
      const uploads = join(s.dataDir, 'uploads');
      assert.deepEqual(existsSync(uploads) ? readdirSync(uploads) : [], [], 'nor in its staging area');
      const imp = await importing(img.id, { method: { name: 'glance-direct' } });
      assert.equal(imp.status, 409);
    });

    test('web-download: through the URL import job and its policy; progress properties; a failed download is killed with os_glance_failed_import', async () => {
      const img = await create({ name: 'web-1', disk_format: 'qcow2', container_format: 'bare' });
      const r = await importing(img.id, { method: { name: 'web-download', uri: `${filesUrl}/disk.qcow2?signature=secret` } });
      assert.equal(r.status, 202, r.text);
      const seen = await show(img.id);
      if (seen.status === 'importing') {
        assert.equal(seen.os_glance_importing_to_stores, 'default');
        assert.equal(seen.os_glance_failed_import, '');
      }
      const done = await until(img.id, (i) => i.status === 'active');
      assert.equal(done.os_hash_value, sha('sha512', qcow2));
      assert.equal(done.os_glance_importing_to_stores, '');
      assert.equal(done.os_glance_failed_import, '');
      const [t] = (await call('GET', `/v2/images/${img.id}/tasks`)).json.tasks;
      assert.equal(t.status, 'success');
      assert.deepEqual(t.input.import_req.method, { name: 'web-download', uri: `${filesUrl}/disk.qcow2` }, 'shown without its query');

      const lost = await create({ name: 'web-404', disk_format: 'qcow2', container_format: 'bare' });
      assert.equal((await importing(lost.id, { method: { name: 'web-download', uri: `${filesUrl}/missing.qcow2` } })).status, 202);
      const failed = await until(lost.id, (i) => i.status === 'killed');
      assert.equal(failed.os_glance_importing_to_stores, '');
      assert.equal(failed.os_glance_failed_import, 'default');
      const [ft] = (await call('GET', `/v2/images/${lost.id}/tasks`)).json.tasks;
      assert.equal(ft.status, 'failure');
      assert.match(ft.message, /404/);
      assert.equal(ft.result, null);
      // a killed image takes a new import, as Glance's failed import leaves it queued
      assert.equal((await importing(lost.id, { method: { name: 'web-download', uri: `${filesUrl}/disk.qcow2` } })).status, 202);
      await until(lost.id, (i) => i.status === 'active');
      assert.equal((await call('GET', `/v2/images/${lost.id}/tasks`)).json.tasks.length, 2);

      const guarded = await create({ name: 'web-guarded', disk_format: 'qcow2', container_format: 'bare' });
      const refused = await importing(guarded.id, { method: { name: 'web-download', uri: 'http://10.1.2.3/disk.qcow2' } });
      assert.equal(refused.status, 400);
      assert.match(refused.json.message, /10\.1\.2\.3/);
      assert.equal((await show(guarded.id)).status, 'queued', 'a refused URL leaves the image as it was');
      const noUri = await importing(guarded.id, { method: { name: 'web-download' } });
      assert.equal(noUri.status, 400);
      assert.match(noUri.json.message, /method\.uri/);
      const noFormat = await create({ name: 'web-noformat' });
      const nf = await importing(noFormat.id, { method: { name: 'web-download', uri: `${filesUrl}/disk.qcow2` } });
      assert.equal(nf.status, 409);
      assert.match(nf.json.message, /'container_format' needs to be set before import/);
    });

    test('copy-image on one store: all_stores has nothing to do (202), the store itself is 400, an unknown store 409, not active 409', async () => {
      const img = await create({ name: 'copy-1', disk_format: 'qcow2', container_format: 'bare' });
      const queued = await importing(img.id, { method: { name: 'copy-image' } });
      assert.equal(queued.status, 409);
      assert.match(queued.json.message, /Only images with status active can be targeted for copying/);
      assert.equal((await stage(img.id, qcow2)).status, 204);
      assert.equal((await importing(img.id, { method: { name: 'glance-direct' } })).status, 202);
      await until(img.id, (i) => i.status === 'active');
      const self = await importing(img.id, { method: { name: 'copy-image' } });
      assert.equal(self.status, 400);
      assert.match(self.json.message, /Image is already present at store 'default'/);
      assert.equal((await importing(img.id, { method: { name: 'copy-image' }, stores: ['default'] })).status, 400);
      const unknown = await importing(img.id, { method: { name: 'copy-image' }, stores: ['nope'] });
      assert.equal(unknown.status, 409);
      assert.match(unknown.json.message, /Store for identifier nope not found/);
      assert.equal((await importing(img.id, { method: { name: 'copy-image' } }, { 'x-image-meta-store': 'nope' })).status, 409);
      assert.equal((await importing(img.id, { method: { name: 'copy-image' }, all_stores: true })).status, 202);
      assert.equal((await call('GET', `/v2/images/${img.id}/tasks`)).json.tasks.length, 1, 'nothing copied, no task');
    });

    test("bad import bodies are Glance's 400s; os_glance_* keys are the server's on every door", async () => {
      const img = await create({ name: 'bodies', disk_format: 'qcow2', container_format: 'bare' });
      const cases: [unknown, RegExp][] = [
        [{}, /Import request requires a 'method' field\./],
        [{ method: {} }, /Import request requires a 'name' field\./],
        [{ method: { name: 'glance-download' } }, /Unknown import method name 'glance-download'\./],
        [{ method: { name: 'web-download', uri: 'x' }, all_stores: 'yes' }, /'all_stores' must be boolean value only/],
        [{ method: { name: 'web-download', uri: 'x' }, all_stores_must_succeed: 1 }, /'all_stores_must_succeed' must be boolean value only/],
        [{ method: { name: 'copy-image' }, all_stores: true, stores: ['default'] }, /All_stores parameter can't be used/],
      ];
      for (const [body, message] of cases) {
        const r = await importing(img.id, body);
        assert.equal(r.status, 400, JSON.stringify(body));
        assert.match(r.json.message, message);
      }
      assert.equal((await importing('00000000-0000-4000-8000-000000000000', { method: { name: 'glance-direct' } })).status, 404);
      const p = await call('PATCH', `/v2/images/${img.id}`, { body: [{ op: 'add', path: '/os_glance_importing_to_stores', value: 'x' }], type: PATCH });
      assert.equal(p.status, 403);
      const rest = await fetch(`${s.url}/api/v1/images`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'r', properties: { os_glance_failed_import: 'default' } }),
      });
      assert.equal(rest.status, 400);
      assert.match(await rest.text(), /reserved/);
      const stageJson = await call('PUT', `/v2/images/${img.id}/stage`, { body: '{}', type: 'application/json' });
      assert.equal(stageJson.status, 415);
    });

    test('tasks: /v2/tasks for server administrators (stubs, paging with next, filters), one task in full, schemas as Glance serves them', async () => {
      assert.deepEqual((await call('GET', '/v2/schemas/task')).json, TASK_SCHEMA);
      assert.deepEqual((await call('GET', '/v2/schemas/tasks')).json, TASKS_SCHEMA);
      assert.equal((await call('GET', '/v2/tasks')).status, 403, "Glance's tasks_api_access is admin only");
      const all = await asAdmin('GET', '/v2/tasks');
      assert.equal(all.status, 200, all.text);
      assert.ok(all.json.tasks.length >= 3);
      assert.equal(all.json.first, '/v2/tasks');
      assert.equal(all.json.schema, '/v2/schemas/tasks');
      const stub = all.json.tasks[0];
      assert.deepEqual(Object.keys(stub).sort(), ['created_at', 'id', 'owner', 'schema', 'self', 'status', 'type', 'updated_at']);
      const created = all.json.tasks.map((t: any) => t.created_at);
      assert.deepEqual(created, [...created].sort().reverse(), 'newest first');
      const full = await asAdmin('GET', `/v2/tasks/${stub.id}`);
      assert.equal(full.status, 200);
      assert.equal(full.json.self, `/v2/tasks/${stub.id}`);
      assert.equal(full.json.schema, '/v2/schemas/task');
      assert.ok('input' in full.json && 'result' in full.json && 'message' in full.json);
      assert.equal((await asAdmin('GET', '/v2/tasks/00000000-0000-4000-8000-000000000000')).status, 404);
      assert.equal((await asAdmin('DELETE', `/v2/tasks/${stub.id}`)).status, 405);
      // paging: limit 1 gives next with the marker, which gives the next task
      const p1 = await asAdmin('GET', '/v2/tasks?limit=1');
      assert.equal(p1.json.tasks.length, 1);
      assert.equal(p1.json.first, '/v2/tasks?limit=1');
      assert.equal(p1.json.next, `/v2/tasks?limit=1&marker=${p1.json.tasks[0].id}`);
      const p2 = await asAdmin('GET', p1.json.next.replace('/v2', '/v2'));
      assert.equal(p2.json.tasks[0].id, all.json.tasks[1].id);
      const failures = (await asAdmin('GET', '/v2/tasks?status=failure')).json.tasks;
      assert.ok(failures.length >= 1 && failures.every((t: any) => t.status === 'failure'));
      const asc = (await asAdmin('GET', '/v2/tasks?sort_dir=asc')).json.tasks.map((t: any) => t.id);
      assert.deepEqual(asc, all.json.tasks.map((t: any) => t.id).reverse());
      for (const [q, message] of [
        ['marker=nope', /Invalid marker format/],
        ['marker=00000000-0000-4000-8000-000000000000', /no import job/],
        ['status=done', /Invalid status value: done/],
        ['sort_dir=up', /Invalid sort direction: up/],
        ['limit=-1', /limit param must be positive/],
        ['type=api_image_import', /Invalid type value/],
      ] as const) {
        const r = await call('GET', `/v2/tasks?${q}`, { token: s.token, headers: { accept: 'application/json' } });
        assert.equal(r.status, 400, q);
        assert.match(r.json.message, message);
      }
      assert.deepEqual((await asAdmin('GET', '/v2/tasks?type=import')).json.tasks, [], 'only the old task type is a valid filter, and none is one');
      assert.equal((await call('GET', '/v2/images/00000000-0000-4000-8000-000000000000/tasks')).status, 404);
    });
  });
}

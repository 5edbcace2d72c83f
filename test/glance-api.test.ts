/**
 * The Glance door (`/image`) over HTTP on a real server (SQLite and PostgreSQL): the versions
 * document and schemas as Glance 25.1 serves them, Glance's JSON shapes, and hostile input — bad
 * patch operations and pointers, read-only and reserved (`os_glance_*`) attributes, unknown
 * markers, sort keys and filters — answered with Glance's statuses and error bodies. The real
 * clients drive the same door in test/glance-cli.test.ts.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { IMAGE_SCHEMA, IMAGES_SCHEMA, MEMBER_SCHEMA, MEMBERS_SCHEMA } from '../src/api/glance/schemas.js';
import { glanceCaller } from './support/glance-http.js';
import { startTestServer, type Dialect, type TestServer, projectWriterToken } from './support/server.js';

const PATCH = 'application/openstack-images-v2.1-json-patch';

for (const dialect of ['sqlite', 'postgres'] as Dialect[]) {
  describe(`Glance Image API v2 under /image (${dialect})`, () => {
    let s: TestServer;
    let token: string;

    const call = glanceCaller(
      () => s.url,
      () => token,
    );
    const create = async (body: Record<string, unknown>) => {
      const r = await call('POST', '/v2/images', { body });
      assert.equal(r.status, 201, r.text);
      return r.json as Record<string, any>;
    };
    const patch = (id: string, ops: unknown, type = PATCH) => call('PATCH', `/v2/images/${id}`, { body: ops, type });
    /** PUT chunked, without a length, as glanceclient sends a file */
    async function upload(id: string, bytes: Uint8Array) {
      let sent = false;
      const body = new ReadableStream<Uint8Array>({
        pull(ctrl) {
          if (sent) return ctrl.close();
          ctrl.enqueue(bytes);
          sent = true;
        },
      });
      const r = await fetch(`${s.url}/image/v2/images/${id}/file`, {
        method: 'PUT',
        headers: { 'x-auth-token': token, 'content-type': 'application/octet-stream' },
        body,
        duplex: 'half',
      } as RequestInit);
      return { status: r.status, text: await r.text() };
    }

    before(async () => {
      s = await startTestServer({ dialect, env: { IMAGO_MD5: '1' } });
      token = await projectWriterToken(s, 'demo', 'wendy', 'glance');
    });
    after(() => s?.stop());

    test('versions: 300 at the root, 200 at /versions, hrefs under /image/v2/; schemas as Glance serves them', async () => {
      const root = await call('GET', '/', { token: null });
      assert.equal(root.status, 300);
      assert.equal(root.json.versions[0].id, 'v2.15');
      assert.equal(root.json.versions[0].status, 'CURRENT');
      assert.equal(root.json.versions[0].links[0].href, `${s.url}/image/v2/`);
      const versions = await call('GET', '/versions', { token: null });
      assert.equal(versions.status, 200);
      assert.deepEqual(versions.json, root.json);
      for (const [name, schema] of [
        ['image', IMAGE_SCHEMA],
        ['images', IMAGES_SCHEMA],
        ['member', MEMBER_SCHEMA],
        ['members', MEMBERS_SCHEMA],
      ] as const) {
        const r = await call('GET', `/v2/schemas/${name}`);
        assert.equal(r.status, 200);
        assert.deepEqual(r.json, schema);
        assert.equal(r.json.name, name);
      }
      assert.deepEqual(IMAGE_SCHEMA.additionalProperties, { type: 'string' });
      assert.ok(IMAGE_SCHEMA.properties.os_hash_value.readOnly);
    });

    test("credentials: a bad X-Auth-Token is 401 in Glance's error body, never anonymous", async () => {
      const r = await call('GET', '/v2/images', { token: 'imago_nope_nope' });
      assert.equal(r.status, 401);
      assert.match(r.headers.get('content-type')!, /text\/html/);
      assert.match(r.text, /<h1>401 Unauthorized<\/h1>/);
      const json = await call('GET', '/v2/images', { token: 'imago_nope_nope', headers: { accept: 'application/json' } });
      assert.equal(json.status, 401);
      assert.equal(json.json.code, '401 Unauthorized');
      assert.equal(json.json.title, 'Unauthorized');
    });

    test("create, upload chunked, show with Glance's fields, download with Range and Content-MD5, second upload 409", async () => {
      const img = await create({ name: 'c1', disk_format: 'raw', container_format: 'bare', min_disk: 1, os_distro: 'debian', custom: 'v', tags: ['a'] });
      assert.equal(img.status, 'queued');
      assert.equal(img.visibility, 'shared');
      assert.equal(img.owner, 'demo');
      assert.equal(img.size, null);
      assert.equal(img.checksum, null);
      assert.equal(img.os_hash_algo, null);
      assert.equal(img.custom, 'v');
      assert.equal(img.os_distro, 'debian');
      assert.deepEqual(img.tags, ['a']);
      for (const k of [
        'id',
        'name',
        'status',
        'visibility',
        'protected',
        'os_hidden',
        'checksum',
        'os_hash_algo',
        'os_hash_value',
        'size',
        'virtual_size',
        'disk_format',
        'container_format',
        'min_disk',
        'min_ram',
        'owner',
        'tags',
        'created_at',
        'updated_at',
        'file',
        'schema',
        'self',
      ])
        assert.ok(k in img, `${k} is shown`);
      assert.equal((await call('GET', `/v2/images/${img.id}/file`)).status, 204, 'no data yet: 204');

      const bytes = randomBytes(200_000);
      assert.equal((await upload(img.id, bytes)).status, 204);
      const shown = (await call('GET', `/v2/images/${img.id}`)).json;
      assert.equal(shown.status, 'active');
      assert.equal(shown.size, bytes.length);
      assert.equal(shown.checksum, createHash('md5').update(bytes).digest('hex'));
      assert.equal(shown.os_hash_value, createHash('sha512').update(bytes).digest('hex'));

      const whole = await fetch(`${s.url}/image/v2/images/${img.id}/file`, { headers: { 'x-auth-token': token } });
      assert.equal(whole.status, 200);
      assert.equal(whole.headers.get('content-md5'), shown.checksum);
      assert.ok(Buffer.from(await whole.arrayBuffer()).equals(bytes));
      const part = await fetch(`${s.url}/image/v2/images/${img.id}/file`, { headers: { 'x-auth-token': token, range: 'bytes=10-19' } });
      assert.equal(part.status, 206);
      assert.equal(part.headers.get('content-range'), `bytes 10-19/${bytes.length}`);
      assert.ok(Buffer.from(await part.arrayBuffer()).equals(bytes.subarray(10, 20)));

      const again = await upload(img.id, bytes);
      assert.equal(again.status, 409, again.text);
      assert.equal((await call('GET', '/v2/images/00000000-0000-0000-0000-000000000000')).status, 404);
      assert.match((await call('GET', '/v2/images/00000000-0000-0000-0000-000000000000')).text, /No image found with ID 00000000-0000-0000-0000-000000000000/);
    });

    test('create refuses what Glance refuses: reserved os_glance_* keys and read-only attributes (403), a chosen id, an unknown visibility', async () => {
      assert.equal((await call('POST', '/v2/images', { body: { name: 'x', os_glance_importing_to_stores: 'a' } })).status, 403);
      assert.equal((await call('POST', '/v2/images', { body: { name: 'x', status: 'active' } })).status, 403);
      assert.equal((await call('POST', '/v2/images', { body: { name: 'x', os_hash_value: 'ab' } })).status, 403);
      assert.equal((await call('POST', '/v2/images', { body: { name: 'x', id: '11111111-1111-1111-1111-111111111111' } })).status, 400);
      assert.equal((await call('POST', '/v2/images', { body: { name: 'x', visibility: 'world' } })).status, 400);
      assert.equal((await call('POST', '/v2/images', { body: { name: 'x', disk_format: 'floppy' } })).status, 400);
      assert.equal((await call('POST', '/v2/images', { body: { name: 'x', k: 5 } })).status, 400, 'properties are strings');
      assert.equal((await call('POST', '/v2/images', { body: [] })).status, 400);
    });

    test("JSON patch: add/replace/remove on attributes, properties and tags; Glance's 403, 409, 400 and 415", async () => {
      const img = await create({ name: 'p1', disk_format: 'raw', container_format: 'bare', keep: '1', drop: '2' });
      const ok = await patch(img.id, [
        { op: 'replace', path: '/name', value: 'p1-renamed' },
        { op: 'add', path: '/new', value: 'n' },
        { op: 'replace', path: '/keep', value: 'k' },
        { op: 'remove', path: '/drop' },
        { op: 'add', path: '/tags', value: ['x', 'y'] },
        { op: 'add', path: '/min_ram', value: 512 },
        { op: 'replace', path: '/protected', value: true },
        { op: 'replace', path: '/os_hidden', value: true },
        { op: 'add', path: '/architecture', value: 'x86_64' },
      ]);
      assert.equal(ok.status, 200, ok.text);
      assert.equal(ok.json.name, 'p1-renamed');
      assert.equal(ok.json.new, 'n');
      assert.equal(ok.json.keep, 'k');
      assert.equal(ok.json.drop, undefined);
      assert.deepEqual(ok.json.tags, ['x', 'y']);
      assert.equal(ok.json.min_ram, 512);
      assert.equal(ok.json.protected, true);
      assert.equal(ok.json.os_hidden, true);
      assert.equal(ok.json.architecture, 'x86_64');
      // Imago's access model: changing visibility is the `admin` right (a writer's images are 660)
      assert.equal((await patch(img.id, [{ op: 'add', path: '/visibility', value: 'private' }])).status, 403);
      assert.equal((await patch(img.id, [{ op: 'remove', path: '/architecture' }])).json.architecture, undefined);

      const refusals: [unknown, number][] = [
        [[{ op: 'replace', path: '/status', value: 'active' }], 403],
        [[{ op: 'replace', path: '/size', value: 1 }], 403],
        [[{ op: 'replace', path: '/id', value: 'x' }], 403],
        [[{ op: 'replace', path: '/owner', value: 'other' }], 403],
        [[{ op: 'add', path: '/os_glance_failed_import', value: 'x' }], 403],
        [[{ op: 'add', path: '/os_glance_importing_to_stores', value: 'x' }], 403],
        [[{ op: 'remove', path: '/name' }], 403],
        [[{ op: 'remove', path: '/missing' }], 409],
        [[{ op: 'replace', path: '/missing', value: 'x' }], 409],
        [[{ op: 'move', from: '/keep', path: '/k2' }], 400],
        [[{ op: 'test', path: '/keep', value: 'k' }], 400],
        [[{ op: 'add', path: '/a/b', value: 'x' }], 400],
        [[{ op: 'add', path: 'keep', value: 'x' }], 400],
        [[{ op: 'add', path: '/x~2', value: 'x' }], 400],
        [[{ op: 'add', path: '/v' }], 400],
        [[{ op: 'add', path: '/min_disk', value: -1 }], 400],
        [[{ op: 'add', path: '/visibility', value: 'everyone' }], 400],
        [{ op: 'add', path: '/v', value: 'x' }, 400],
        [['add'], 400],
      ];
      for (const [ops, status] of refusals) {
        const r = await patch(img.id, ops);
        assert.equal(r.status, status, `${JSON.stringify(ops)}: ${r.text}`);
        assert.match(r.text, /<html>/);
      }
      const reserved = await patch(img.id, [{ op: 'add', path: '/os_glance_x', value: '1' }]);
      assert.match(reserved.text, /Attribute &#x27;os_glance_x&#x27; is reserved\./);
      const wrongType = await patch(img.id, [{ op: 'add', path: '/v', value: 'x' }], 'application/json');
      assert.equal(wrongType.status, 415);
      assert.match(wrongType.headers.get('accept-patch')!, /openstack-images-v2\.1-json-patch/);
      assert.equal((await patch(img.id, 'not json')).status, 400);
      // keys that name Object.prototype members are plain properties, nothing more
      const protoKeys = await patch(img.id, [
        { op: 'add', path: '/constructor', value: 'c' },
        { op: 'add', path: '/toString', value: 't' },
      ]);
      assert.equal(protoKeys.status, 200, protoKeys.text);
      assert.equal(protoKeys.json.constructor, 'c');
      assert.equal((await patch(img.id, [{ op: 'remove', path: '/hasOwnProperty' }])).status, 409);
      assert.equal(
        (
          await patch(img.id, [
            { op: 'remove', path: '/constructor' },
            { op: 'remove', path: '/toString' },
          ])
        ).status,
        200,
      );
      // nothing of the refused patches was applied
      const after = (await call('GET', `/v2/images/${img.id}`)).json;
      assert.equal(after.keep, 'k');
      assert.equal(after.os_glance_x, undefined);

      // protected: delete 403 until cleared
      assert.equal((await call('DELETE', `/v2/images/${img.id}`)).status, 403);
      assert.equal((await patch(img.id, [{ op: 'replace', path: '/protected', value: false }])).status, 200);
      assert.equal((await call('DELETE', `/v2/images/${img.id}`)).status, 204);
      assert.equal((await call('GET', `/v2/images/${img.id}`)).status, 404);
    });

    test('visibility: a project admin moves an image between private (Imago project), shared and back', async () => {
      const r = await fetch(`${s.url}/api/v1/tokens`, {
        method: 'POST',
        headers: { authorization: `Bearer ${s.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'glance-admin', project: 'demo', role: 'admin', user: 'ada' }),
      });
      const adminToken = ((await r.json()) as { token: string }).token;
      const img = await create({ name: 'vis', visibility: 'private' });
      assert.equal(img.visibility, 'private');
      const rest = async () =>
        ((await (await fetch(`${s.url}/api/v1/images/${img.id}`, { headers: { authorization: `Bearer ${adminToken}` } })).json()) as { visibility: string })
          .visibility;
      assert.equal(await rest(), 'project', "Glance's private is Imago's project");
      const toShared = await call('PATCH', `/v2/images/${img.id}`, {
        body: [{ op: 'replace', path: '/visibility', value: 'shared' }],
        type: PATCH,
        token: adminToken,
      });
      assert.equal(toShared.status, 200, toShared.text);
      assert.equal(toShared.json.visibility, 'shared');
      assert.equal(await rest(), 'shared');
      const toPublic = await call('PATCH', `/v2/images/${img.id}`, {
        body: [{ op: 'replace', path: '/visibility', value: 'public' }],
        type: PATCH,
        token: adminToken,
      });
      assert.equal(toPublic.status, 403, "public needs a server administrator, as Glance's publicize_image");
      assert.equal((await call('DELETE', `/v2/images/${img.id}`)).status, 204);
    });

    test('tags, deactivate/reactivate', async () => {
      const img = await create({ name: 't1', disk_format: 'raw', container_format: 'bare' });
      assert.equal((await call('PUT', `/v2/images/${img.id}/tags/red`)).status, 204);
      assert.equal((await call('PUT', `/v2/images/${img.id}/tags/red`)).status, 204, 'adding a tag twice is fine');
      assert.deepEqual((await call('GET', `/v2/images/${img.id}`)).json.tags, ['red']);
      assert.equal((await call('DELETE', `/v2/images/${img.id}/tags/blue`)).status, 404);
      assert.equal((await call('DELETE', `/v2/images/${img.id}/tags/red`)).status, 204);
      assert.deepEqual((await call('GET', `/v2/images/${img.id}`)).json.tags, []);
      assert.equal((await call('POST', `/v2/images/${img.id}/actions/deactivate`)).status, 403, 'a queued image cannot be deactivated');
      assert.equal((await upload(img.id, randomBytes(4096))).status, 204);
      assert.equal((await call('POST', `/v2/images/${img.id}/actions/deactivate`)).status, 204);
      assert.equal((await call('GET', `/v2/images/${img.id}`)).json.status, 'deactivated');
      assert.equal((await call('GET', `/v2/images/${img.id}/file`)).status, 403);
      assert.equal((await call('POST', `/v2/images/${img.id}/actions/reactivate`)).status, 204);
      assert.equal((await call('GET', `/v2/images/${img.id}/file`)).status, 200);
      assert.equal((await call('DELETE', `/v2/images/${img.id}`)).status, 204);
    });

    test("list: filters, sort, limit + marker with Glance's next link; bad markers, sort keys and filters are 400", async () => {
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) {
        const img = await create({
          name: `l-${i}`,
          disk_format: i % 2 ? 'qcow2' : 'raw',
          container_format: 'bare',
          tags: ['listed', `n${i}`],
          flavor: i < 2 ? 'small' : 'big',
        });
        ids.push(img.id);
      }
      await upload(ids[0]!, randomBytes(1000));
      await upload(ids[2]!, randomBytes(5000));
      await patch(ids[4]!, [{ op: 'replace', path: '/os_hidden', value: true }]);
      await patch(ids[3]!, [{ op: 'replace', path: '/protected', value: true }]);
      const names = async (q: string) => ((await call('GET', `/v2/images?tag=listed&${q}`)).json.images as { name: string }[]).map((i) => i.name).sort();

      assert.deepEqual(await names(''), ['l-0', 'l-1', 'l-2', 'l-3'], 'os_hidden images are left out by default');
      assert.deepEqual(await names('os_hidden=true'), ['l-4']);
      assert.deepEqual(await names('status=active'), ['l-0', 'l-2']);
      assert.deepEqual(await names('status=in:queued,active'), ['l-0', 'l-1', 'l-2', 'l-3']);
      assert.deepEqual(await names('disk_format=qcow2'), ['l-1', 'l-3']);
      assert.deepEqual(await names('container_format=bare&name=l-2'), ['l-2']);
      assert.deepEqual(await names('tag=n1'), ['l-1']);
      assert.deepEqual(await names('flavor=small'), ['l-0', 'l-1']);
      assert.deepEqual(await names('size_min=2000'), ['l-2']);
      assert.deepEqual(await names('size_max=2000'), ['l-0']);
      assert.deepEqual(await names('protected=true'), ['l-3']);
      assert.deepEqual(await names('visibility=shared&owner=demo'), ['l-0', 'l-1', 'l-2', 'l-3']);
      assert.deepEqual(await names('visibility=public'), []);
      assert.deepEqual(await names('created_at=gt:2000-01-01T00:00:00Z'), ['l-0', 'l-1', 'l-2', 'l-3']);
      assert.deepEqual(await names('created_at=lt:2000-01-01T00:00:00Z'), []);

      const sorted = (await call('GET', '/v2/images?tag=listed&sort_key=name&sort_dir=desc')).json.images.map((i: { name: string }) => i.name);
      assert.deepEqual(sorted, ['l-3', 'l-2', 'l-1', 'l-0']);
      const sorted2 = (await call('GET', '/v2/images?tag=listed&sort=name:asc')).json.images.map((i: { name: string }) => i.name);
      assert.deepEqual(sorted2, ['l-0', 'l-1', 'l-2', 'l-3']);

      // page by 1 following `next`, as glanceclient does
      const seen: string[] = [];
      let next: string | undefined = '/v2/images?tag=listed&limit=1&sort_key=name&sort_dir=asc';
      const first = await call('GET', next);
      assert.equal(first.json.first, '/v2/images?tag=listed&limit=1&sort_key=name&sort_dir=asc');
      assert.equal(first.json.schema, '/v2/schemas/images');
      while (next) {
        const page: any = await call('GET', next);
        assert.equal(page.status, 200, page.text);
        assert.ok(page.json.images.length <= 1);
        seen.push(...page.json.images.map((i: { name: string }) => i.name));
        if (page.json.next) assert.match(page.json.next, /^\/v2\/images\?tag=listed&limit=1&sort_key=name&sort_dir=asc&marker=[0-9a-f-]{36}$/);
        next = page.json.next;
        assert.ok(seen.length <= 4, 'paging ends');
      }
      assert.deepEqual(seen, ['l-0', 'l-1', 'l-2', 'l-3']);

      for (const q of [
        'marker=bogus',
        'marker=00000000-0000-0000-0000-000000000000',
        'sort_key=owner',
        'sort_dir=sideways',
        'limit=abc',
        'status=happy',
        'visibility=everyone',
        'size_min=-1',
        'protected=maybe',
        'created_at=2020',
        'disk_format=floppy',
      ]) {
        const r = await call('GET', `/v2/images?${q}`);
        assert.equal(r.status, 400, `${q}: ${r.text}`);
      }
      await patch(ids[3]!, [{ op: 'replace', path: '/protected', value: false }]);
      for (const id of ids) assert.equal((await call('DELETE', `/v2/images/${id}`)).status, 204);
    });

    test("an unknown path under /image is Glance's 404, not the REST door's problem+json", async () => {
      const r = await call('GET', '/v2/nothing');
      assert.equal(r.status, 404);
      assert.match(r.headers.get('content-type')!, /text\/html/);
    });
  });
}

/**
 * The Glance door's members, visibilities and refusals over HTTP on a real server (SQLite and
 * PostgreSQL): `/v2/images/{id}/members` onto Imago's sharing with Glance's rules (only the owner
 * adds and removes, only the member answers, only shared images have members, 409 on a duplicate),
 * the member's view of the image and its list with member_status; `community` visibility; a
 * hostile upload ending `killed` with its reason; Glance's error codes. The real clients drive the
 * same routes in test/glance-cli.test.ts.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { MEMBER_SCHEMA } from '../src/api/glance/schemas.js';
import { qcow2WithBacking } from './support/qemu.js';
import { startTestServer, type Dialect, type TestServer } from './support/server.js';

const PATCH = 'application/openstack-images-v2.1-json-patch';

/** Every file under `dir` (none when it does not exist). */
function filesUnder(dir: string): string[] {
  try {
    return readdirSync(dir, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => join(e.parentPath, e.name));
  } catch {
    return [];
  }
}

for (const dialect of ['sqlite', 'postgres'] as Dialect[]) {
  describe(`Glance members, visibility and refusals under /image (${dialect})`, () => {
    let s: TestServer;
    /** tokens: demo admin (the owner side), demo writer, other writer (the member), outsider reader */
    const t: Record<'owner' | 'writer' | 'member' | 'outsider', string> = { owner: '', writer: '', member: '', outsider: '' };

    async function call(who: keyof typeof t | null, method: string, path: string, body?: unknown, type = 'application/json') {
      const headers: Record<string, string> = {};
      if (who !== null) headers['x-auth-token'] = t[who];
      if (body !== undefined) headers['content-type'] = type;
      const r = await fetch(`${s.url}/image${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      const text = await r.text();
      let json: any;
      try {
        json = text ? JSON.parse(text) : undefined;
      } catch {
        json = undefined;
      }
      return { status: r.status, text, json };
    }
    const create = async (who: keyof typeof t, body: Record<string, unknown>) => {
      const r = await call(who, 'POST', '/v2/images', body);
      assert.equal(r.status, 201, r.text);
      return r.json as Record<string, any>;
    };
    const listIds = async (who: keyof typeof t, query = '') =>
      ((await call(who, 'GET', `/v2/images${query}`)).json.images as { id: string }[]).map((i) => i.id);
    async function upload(who: keyof typeof t, id: string, bytes: Uint8Array) {
      const r = await fetch(`${s.url}/image/v2/images/${id}/file`, {
        method: 'PUT',
        headers: { 'x-auth-token': t[who], 'content-type': 'application/octet-stream' },
        body: bytes,
      });
      return { status: r.status, text: await r.text() };
    }

    before(async () => {
      s = await startTestServer({ dialect });
      const admin = async (path: string, body: unknown, method = 'POST') => {
        const r = await fetch(`${s.url}${path}`, {
          method,
          headers: { authorization: `Bearer ${s.token}`, 'content-type': 'application/json' },
          body: JSON.stringify(body),
        });
        const text = await r.text();
        assert.ok(r.ok, `${path}: ${r.status} ${text}`);
        return text ? (JSON.parse(text) as Record<string, string>) : {};
      };
      for (const name of ['demo', 'other', 'outside']) await admin('/api/v1/projects', { name });
      t.owner = (await admin('/api/v1/tokens', { name: 'o', project: 'demo', role: 'admin', user: 'ada' })).token!;
      t.writer = (await admin('/api/v1/tokens', { name: 'w', project: 'demo', role: 'writer', user: 'wendy' })).token!;
      t.member = (await admin('/api/v1/tokens', { name: 'm', project: 'other', role: 'writer', user: 'otto' })).token!;
      t.outsider = (await admin('/api/v1/tokens', { name: 'x', project: 'outside', role: 'reader', user: 'xavier' })).token!;
      await admin('/api/v1/projects/demo/quota', { storedBytes: 1 << 20 }, 'PUT');
    });
    after(() => s?.stop());

    test("members: the owner adds, the member finds, answers and lists; Glance's shapes and refusals", async () => {
      const img = await create('owner', { name: 'shared-one', disk_format: 'raw', container_format: 'bare' });
      assert.equal(img.visibility, 'shared');
      const bytes = randomBytes(70_000);
      assert.equal((await upload('owner', img.id, bytes)).status, 204);

      // the member project cannot see it before the offer
      assert.equal((await call('member', 'GET', `/v2/images/${img.id}`)).status, 404);
      assert.equal((await call('member', 'POST', `/v2/images/${img.id}/members`, { member: 'other' })).status, 404);

      const added = await call('owner', 'POST', `/v2/images/${img.id}/members`, { member: 'other' });
      assert.equal(added.status, 200, added.text);
      assert.deepEqual(Object.keys(added.json).sort(), Object.keys(MEMBER_SCHEMA.properties).sort(), 'exactly the member schema');
      assert.equal(added.json.member_id, 'other');
      assert.equal(added.json.image_id, img.id);
      assert.equal(added.json.status, 'pending');
      assert.equal(added.json.schema, '/v2/schemas/member');
      assert.match(added.json.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);

      assert.equal((await call('owner', 'POST', `/v2/images/${img.id}/members`, { member: 'other' })).status, 409, 'a duplicate member');
      assert.equal((await call('writer', 'POST', `/v2/images/${img.id}/members`, { member: 'outside' })).status, 403, 'a writer is not the owner');
      assert.equal((await call('owner', 'POST', `/v2/images/${img.id}/members`, { member: 'nosuch' })).status, 404);
      assert.equal((await call('owner', 'POST', `/v2/images/${img.id}/members`, {})).status, 400);
      assert.equal((await call('owner', 'POST', `/v2/images/${img.id}/members`, { member: '' })).status, 400);

      // pending: the member finds the image and its own membership, but it is not in its default list
      assert.equal((await call('member', 'GET', `/v2/images/${img.id}`)).status, 200);
      const mine = await call('member', 'GET', `/v2/images/${img.id}/members`);
      assert.equal(mine.status, 200);
      assert.equal(mine.json.schema, '/v2/schemas/members');
      assert.deepEqual(
        mine.json.members.map((m: any) => [m.member_id, m.status]),
        [['other', 'pending']],
      );
      assert.equal((await call('member', 'GET', `/v2/images/${img.id}/members/other`)).json.status, 'pending');
      assert.equal((await call('outsider', 'GET', `/v2/images/${img.id}/members/other`)).status, 404);
      assert.equal((await call('outsider', 'GET', `/v2/images/${img.id}`)).status, 404);
      assert.ok(!(await listIds('member')).includes(img.id), 'pending: not in the default list');
      assert.ok((await listIds('member', '?member_status=pending')).includes(img.id));
      assert.ok((await listIds('member', '?member_status=all')).includes(img.id));
      assert.ok(!(await listIds('member', '?member_status=accepted')).includes(img.id));
      assert.equal((await call('member', 'GET', `/v2/images/${img.id}/file`)).status, 404, 'Imago: using the bytes needs accepted');

      // only the member answers; only the owner removes
      assert.equal((await call('owner', 'PUT', `/v2/images/${img.id}/members/other`, { status: 'accepted' })).status, 403);
      assert.equal((await call('member', 'PUT', `/v2/images/${img.id}/members/other`, { status: 'maybe' })).status, 400);
      assert.equal((await call('member', 'PUT', `/v2/images/${img.id}/members/other`, {})).status, 400);
      assert.equal((await call('member', 'DELETE', `/v2/images/${img.id}/members/other`)).status, 403);
      assert.equal((await call('member', 'POST', `/v2/images/${img.id}/members`, { member: 'outside' })).status, 403);

      const accepted = await call('member', 'PUT', `/v2/images/${img.id}/members/other`, { status: 'accepted' });
      assert.equal(accepted.status, 200, accepted.text);
      assert.equal(accepted.json.status, 'accepted');
      assert.ok((await listIds('member')).includes(img.id), 'accepted: in the default list');
      assert.ok((await listIds('member', '?visibility=shared')).includes(img.id));
      const file = await fetch(`${s.url}/image/v2/images/${img.id}/file`, { headers: { 'x-auth-token': t.member } });
      assert.equal(file.status, 200);
      assert.ok(Buffer.from(await file.arrayBuffer()).equals(bytes));
      // the same membership on the REST door
      const rest = await fetch(`${s.url}/api/v1/images/${img.id}/members`, { headers: { authorization: `Bearer ${t.owner}` } });
      assert.match(await rest.text(), /"accepted"/);

      assert.equal((await call('member', 'PUT', `/v2/images/${img.id}/members/other`, { status: 'rejected' })).json.status, 'rejected');
      assert.ok(!(await listIds('member')).includes(img.id), 'rejected: out of the default list');
      assert.ok((await listIds('member', '?member_status=rejected')).includes(img.id));

      const all = await call('owner', 'GET', `/v2/images/${img.id}/members`);
      assert.deepEqual(
        all.json.members.map((m: any) => m.member_id),
        ['other'],
      );
      assert.equal((await call('owner', 'DELETE', `/v2/images/${img.id}/members/other`)).status, 204);
      assert.equal((await call('owner', 'DELETE', `/v2/images/${img.id}/members/other`)).status, 404);
      assert.equal((await call('member', 'GET', `/v2/images/${img.id}`)).status, 404, 'no longer a member');
      assert.equal((await call('owner', 'DELETE', `/v2/images/${img.id}`)).status, 204);
    });

    test('only shared images have members (403; 404 on show)', async () => {
      const img = await create('owner', { name: 'private-one', visibility: 'private' });
      assert.equal(img.visibility, 'private');
      const add = await call('owner', 'POST', `/v2/images/${img.id}/members`, { member: 'other' });
      assert.equal(add.status, 403);
      assert.match(add.text, /Only shared images have members/);
      assert.equal((await call('owner', 'GET', `/v2/images/${img.id}/members`)).status, 403);
      assert.equal((await call('owner', 'GET', `/v2/images/${img.id}/members/other`)).status, 404);
      await call('owner', 'DELETE', `/v2/images/${img.id}`);
    });

    test('community: every signed-in project sees and uses it; listed for the owner or with visibility=community', async () => {
      const img = await create('owner', { name: 'comm', visibility: 'community', disk_format: 'raw', container_format: 'bare' });
      assert.equal(img.visibility, 'community');
      const bytes = randomBytes(9000);
      assert.equal((await upload('owner', img.id, bytes)).status, 204);
      const shown = await call('outsider', 'GET', `/v2/images/${img.id}`);
      assert.equal(shown.status, 200);
      assert.equal(shown.json.visibility, 'community');
      const file = await fetch(`${s.url}/image/v2/images/${img.id}/file`, { headers: { 'x-auth-token': t.outsider } });
      assert.equal(file.status, 200);
      assert.ok(Buffer.from(await file.arrayBuffer()).equals(bytes));
      assert.equal((await call(null, 'GET', `/v2/images/${img.id}`)).status, 401, 'not to the anonymous');
      assert.ok(!(await listIds('outsider')).includes(img.id), 'not in an outsider default list');
      assert.ok((await listIds('outsider', '?visibility=community')).includes(img.id));
      assert.ok((await listIds('outsider', '?visibility=all')).includes(img.id));
      assert.ok((await listIds('owner')).includes(img.id), 'the owner lists it');
      assert.equal((await call('outsider', 'PATCH', `/v2/images/${img.id}`, [{ op: 'replace', path: '/name', value: 'x' }], PATCH)).status, 403);
      assert.equal((await call('owner', 'POST', `/v2/images/${img.id}/members`, { member: 'other' })).status, 403);
      // back to private: gone for the outsider
      const back = await call('owner', 'PATCH', `/v2/images/${img.id}`, [{ op: 'replace', path: '/visibility', value: 'private' }], PATCH);
      assert.equal(back.status, 200, back.text);
      assert.equal(back.json.visibility, 'private');
      assert.equal((await call('outsider', 'GET', `/v2/images/${img.id}`)).status, 404);
      const again = await call('owner', 'PATCH', `/v2/images/${img.id}`, [{ op: 'replace', path: '/visibility', value: 'community' }], PATCH);
      assert.equal(again.json.visibility, 'community');
      assert.equal((await call('outsider', 'GET', `/v2/images/${img.id}`)).status, 200);
      await call('owner', 'DELETE', `/v2/images/${img.id}`);
    });

    test('a hostile upload (qcow2 with a backing file) ends killed, its reason in imago_killed_reason, nothing stored', async () => {
      const overlay = readFileSync(await qcow2WithBacking('glance'));
      const blobsBefore = filesUnder(join(s.dataDir, 'blobs'));
      assert.ok(blobsBefore.length > 0, 'the earlier uploads are stored where this test looks');
      const img = await create('owner', { name: 'hostile', disk_format: 'qcow2', container_format: 'bare' });
      const r = await upload('owner', img.id, overlay);
      assert.equal(r.status, 400, r.text);
      assert.match(r.text, /backing file/);
      const shown = (await call('owner', 'GET', `/v2/images/${img.id}`)).json;
      assert.equal(shown.status, 'killed');
      assert.match(shown.imago_killed_reason, /backing file/);
      assert.equal(shown.size, null);
      assert.equal(shown.os_hash_value, null);
      assert.deepEqual(filesUnder(join(s.dataDir, 'blobs')), blobsBefore, 'no blob stored');
      assert.deepEqual(filesUnder(join(s.dataDir, 'uploads')), [], 'no staging left behind');
      assert.equal((await call('owner', 'GET', `/v2/images/${img.id}/file`)).status, 204, 'no data to download');
      const set = await call('owner', 'PATCH', `/v2/images/${img.id}`, [{ op: 'add', path: '/imago_killed_reason', value: 'x' }], PATCH);
      assert.equal(set.status, 403, 'the reason is read-only');
      assert.equal((await call('owner', 'POST', '/v2/images', { name: 'x', imago_killed_reason: 'x' })).status, 403);
      await call('owner', 'DELETE', `/v2/images/${img.id}`);
    });

    test('sort by several keys (both syntaxes) with marker paging; status, disk_format, id; name=in:', async () => {
      const specs: [string, string][] = [
        ['s-b', 'raw'],
        ['s-a', 'qcow2'],
        ['s-b', 'qcow2'],
        ['s-c', 'raw'],
        ['s-a', 'raw'],
        ['s-b', 'raw'],
        ['s-a', 'qcow2'],
      ];
      const made: { id: string; name: string; disk_format: string }[] = [];
      for (const [name, disk_format] of specs) made.push((await create('owner', { name, disk_format, container_format: 'bare', tags: ['sorted'] })) as any);
      // two raw ones get data: status active; the rest stay queued
      const active = new Set([made[0]!.id, made[3]!.id]);
      for (const img of made.filter((i) => active.has(i.id))) assert.equal((await upload('owner', img.id, randomBytes(1000))).status, 204);
      const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
      const expected = [...made].sort((x, y) => cmp(x.name, y.name) || -cmp(x.disk_format, y.disk_format) || -cmp(x.id, y.id)).map((i) => i.id);
      /** every page, following `next` as glanceclient does */
      const walk = async (query: string) => {
        const ids: string[] = [];
        let path: string | undefined = `/v2/images?${query}`;
        while (path) {
          const r = await call('owner', 'GET', path);
          assert.equal(r.status, 200, r.text);
          ids.push(...r.json.images.map((i: { id: string }) => i.id));
          path = r.json.next;
        }
        return ids;
      };
      assert.deepEqual(await walk('tag=sorted&limit=2&sort=name:asc,disk_format:desc'), expected);
      assert.deepEqual(await walk('tag=sorted&limit=3&sort_key=name&sort_key=disk_format&sort_dir=asc&sort_dir=desc'), expected);
      assert.deepEqual(await walk('tag=sorted&limit=2&sort_key=name,disk_format&sort_dir=asc,desc'), expected);
      assert.deepEqual(await walk('tag=sorted&limit=4&sort=name:desc,disk_format:asc'), [...expected].reverse());
      const byStatus = [...made]
        .map((i) => ({ id: i.id, state: active.has(i.id) ? 'ready' : 'pending' }))
        .sort((x, y) => cmp(x.state, y.state) || cmp(x.id, y.id))
        .map((i) => i.id);
      assert.deepEqual(await walk('tag=sorted&limit=2&sort=status:asc,id:asc'), byStatus);
      assert.deepEqual(await walk('tag=sorted&limit=5&sort=id:asc'), [...made.map((i) => i.id)].sort());
      const named = await walk('tag=sorted&name=in:s-a,s-c&sort=name:asc,id:asc');
      assert.deepEqual(
        named,
        made
          .filter((i) => i.name !== 's-b')
          .sort((x, y) => cmp(x.name, y.name) || cmp(x.id, y.id))
          .map((i) => i.id),
      );
      for (const bad of [
        'sort_key=name&sort_key=name',
        'sort_key=name&sort_key=id&sort_dir=asc&sort_dir=desc&sort_dir=asc',
        'sort=name:up',
        'sort=name:asc:x',
        'sort=checksum',
        'sort=name&sort_key=id',
      ])
        assert.equal((await call('owner', 'GET', `/v2/images?${bad}`)).status, 400, bad);
      for (const img of made) await call('owner', 'DELETE', `/v2/images/${img.id}`);
    });

    test('nameless images: created without a name (or with null), shown and listed with name null, named and unnamed by patch', async () => {
      const a = await create('owner', { disk_format: 'raw', container_format: 'bare', tags: ['nameless'] });
      assert.equal(a.name, null);
      const b = await create('owner', { name: null, tags: ['nameless'] });
      assert.equal(b.name, null);
      const c = await create('owner', { name: 'zzz', tags: ['nameless'] });
      assert.equal((await call('owner', 'GET', `/v2/images/${a.id}`)).json.name, null);
      const listed = (await call('owner', 'GET', '/v2/images?tag=nameless&sort=name:asc,id:asc')).json.images as { id: string; name: unknown }[];
      assert.deepEqual(
        listed.map((i) => i.name),
        [null, null, 'zzz'],
        'a nameless image sorts before every name',
      );
      const named = await call('owner', 'PATCH', `/v2/images/${a.id}`, [{ op: 'replace', path: '/name', value: 'now-named' }], PATCH);
      assert.equal(named.json.name, 'now-named');
      const unnamed = await call('owner', 'PATCH', `/v2/images/${a.id}`, [{ op: 'replace', path: '/name', value: null }], PATCH);
      assert.equal(unnamed.status, 200, unnamed.text);
      assert.equal(unnamed.json.name, null);
      // the same image on the REST door: no name
      const rest = await fetch(`${s.url}/api/v1/images/${a.id}`, { headers: { authorization: `Bearer ${t.owner}` } });
      const json = (await rest.json()) as Record<string, unknown>;
      assert.equal(json.id, a.id);
      assert.ok(!('name' in json), 'absent on REST');
      // the REST door still asks for a name
      const noName = await fetch(`${s.url}/api/v1/images`, {
        method: 'POST',
        headers: { authorization: `Bearer ${t.owner}`, 'content-type': 'application/json' },
        body: JSON.stringify({ project: 'demo' }),
      });
      assert.equal(noName.status, 400);
      for (const img of [a, b, c]) await call('owner', 'DELETE', `/v2/images/${img.id}`);
    });

    test("Glance's error codes: 409 second upload, 404 unknown id, 400 bad disk_format, 413 over the project's quota", async () => {
      const img = await create('writer', { name: 'codes', disk_format: 'raw', container_format: 'bare' });
      assert.equal((await upload('writer', img.id, randomBytes(1000))).status, 204);
      const again = await upload('writer', img.id, randomBytes(1000));
      assert.equal(again.status, 409, again.text);
      const unknown = '00000000-0000-4000-8000-000000000000';
      for (const [method, path, body, type] of [
        ['GET', `/v2/images/${unknown}`],
        ['DELETE', `/v2/images/${unknown}`],
        ['PATCH', `/v2/images/${unknown}`, [{ op: 'replace', path: '/name', value: 'y' }], PATCH],
        ['GET', `/v2/images/${unknown}/file`],
        ['GET', `/v2/images/${unknown}/members`],
        ['POST', `/v2/images/${unknown}/members`, { member: 'other' }],
      ] as [string, string, unknown?, string?][])
        assert.equal((await call('writer', method, path, body, type)).status, 404, `${method} ${path}`);
      assert.equal((await upload('writer', unknown, randomBytes(10))).status, 404);
      const bad = await call('writer', 'POST', '/v2/images', { name: 'bad', disk_format: 'floppy' });
      assert.equal(bad.status, 400);
      assert.match(bad.text, /disk_format|floppy/);
      const queued = await create('writer', { name: 'queued' });
      assert.equal((await call('writer', 'PATCH', `/v2/images/${queued.id}`, [{ op: 'add', path: '/disk_format', value: 'floppy' }], PATCH)).status, 400);
      // demo's stored-bytes quota is 1 MiB
      const big = await create('writer', { name: 'big', disk_format: 'raw', container_format: 'bare' });
      const over = await upload('writer', big.id, randomBytes(2 << 20));
      assert.equal(over.status, 413, over.text);
      assert.match(over.text, /quota/);
      for (const id of [img.id, queued.id, big.id]) await call('writer', 'DELETE', `/v2/images/${id}`);
    });
  });
}

describe('os_hash_algo sha256 (IMAGO_OS_HASH_ALGO), md5 checksum off', () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer({ env: { IMAGO_OS_HASH_ALGO: 'sha256' } });
  });
  after(() => s?.stop());

  test('os_hash_value is the sha256 of the bytes (the digest, computed in the one ingest pass); checksum null without md5', async () => {
    const h = { 'x-auth-token': s.token };
    const made = await fetch(`${s.url}/image/v2/images`, {
      method: 'POST',
      headers: { ...h, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'h', disk_format: 'raw', container_format: 'bare' }),
    });
    const img = (await made.json()) as { id: string; os_hash_algo: unknown };
    assert.equal(img.os_hash_algo, null, 'no data, no hash');
    const bytes = randomBytes(123_457);
    const put = await fetch(`${s.url}/image/v2/images/${img.id}/file`, {
      method: 'PUT',
      headers: { ...h, 'content-type': 'application/octet-stream' },
      body: bytes,
    });
    assert.equal(put.status, 204);
    const shown = (await (await fetch(`${s.url}/image/v2/images/${img.id}`, { headers: h })).json()) as Record<string, unknown>;
    assert.equal(shown.os_hash_algo, 'sha256');
    assert.equal(shown.os_hash_value, createHash('sha256').update(bytes).digest('hex'));
    assert.equal(shown.checksum, null);
  });
});

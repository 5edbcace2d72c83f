/**
 * Members, visibility changes, a hostile upload and Glance's error codes through the real clients
 * (Debian's glance and openstack, unmodified) against a real Imago on 127.0.0.1 (SQLite; the HTTP
 * tests in test/glance-members.test.ts run both dialects).
 *
 * The member project is named like a UUID: `openstack image add project` looks a name that is not
 * one up in Keystone. `openstack image set --accept` needs `--project` under admin_token auth (the
 * plugin has no project of its own), and osc then also patches the image's owner to that project,
 * which the owner's rules refuse — the membership answer is made first; against Glance with
 * admin_token the same happens.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runGlance, runOpenstack, type Run } from './support/glance-clients.js';
import { qcow2WithBacking } from './support/qemu.js';
import { startTestServer, type TestServer } from './support/server.js';

/** the member project: a UUID-like name, as openstackclient takes a project id without a lookup */
const MEMBER = '6f1f3c2e-2b1a-4c8e-9d2f-0a1b2c3d4e5f';

describe('members, visibility and refusals through glance and openstack (sqlite)', () => {
  let s: TestServer;
  let home: string;
  const tok: Record<'owner' | 'writer' | 'member', string> = { owner: '', writer: '', member: '' };

  const ok = (what: string, r: Run): string => {
    assert.equal(r.code, 0, `${what}: ${r.stderr}${r.stdout}`);
    return r.stdout;
  };
  const fails = (what: string, r: Run): string => {
    assert.notEqual(r.code, 0, `${what} should fail: ${r.stdout}`);
    return r.stderr + r.stdout;
  };
  const glance = (who: keyof typeof tok, ...args: string[]) => runGlance(s.url, tok[who], home, args);
  const openstack = (who: keyof typeof tok, ...args: string[]) => runOpenstack(s.url, tok[who], home, args);
  const memberStatus = async (id: string): Promise<string | undefined> => {
    const out = ok('glance member-list', await glance('owner', 'member-list', '--image-id', id));
    return new RegExp(`${MEMBER}\\s+\\|\\s+(\\w+)`).exec(out)?.[1];
  };

  before(async () => {
    s = await startTestServer({});
    home = mkdtempSync(join(tmpdir(), 'imago-glance-members-'));
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
    for (const name of ['demo', MEMBER]) await admin('/api/v1/projects', { name });
    tok.owner = (await admin('/api/v1/tokens', { name: 'o', project: 'demo', role: 'admin', user: 'ada' })).token!;
    tok.writer = (await admin('/api/v1/tokens', { name: 'w', project: 'demo', role: 'writer', user: 'wendy' })).token!;
    tok.member = (await admin('/api/v1/tokens', { name: 'm', project: MEMBER, role: 'writer', user: 'otto' })).token!;
    await admin('/api/v1/projects/demo/quota', { storedBytes: 1 << 20 }, 'PUT');
  });
  after(async () => {
    await s?.stop();
    rmSync(home, { recursive: true, force: true });
  });

  test('openstack image add project, set --accept/--reject as the member, glance member-list, list as the member', async () => {
    const disk = join(home, 'small.raw');
    writeFileSync(disk, randomBytes(64 * 1024));
    const created = JSON.parse(
      ok(
        'image create',
        await openstack('owner', 'image', 'create', '--disk-format', 'raw', '--container-format', 'bare', '--shared', '--file', disk, 'to-share', '-f', 'json'),
      ),
    ) as { id: string; visibility: string };
    const id = created.id;
    assert.equal(created.visibility, 'shared');
    assert.doesNotMatch(ok('member list', await openstack('member', 'image', 'list')), /to-share/);

    const added = JSON.parse(ok('image add project', await openstack('owner', 'image', 'add', 'project', 'to-share', MEMBER, '-f', 'json'))) as Record<
      string,
      string
    >;
    assert.equal(added.member_id, MEMBER);
    assert.equal(added.status, 'pending');
    assert.match(fails('add twice', await openstack('owner', 'image', 'add', 'project', 'to-share', MEMBER)), /409|duplicated/i);
    assert.equal(await memberStatus(id), 'pending');
    assert.doesNotMatch(ok('member list', await openstack('member', 'image', 'list')), /to-share/, 'pending: not in the default list');
    assert.match(ok('member list pending', await openstack('member', 'image', 'list', '--member-status', 'pending')), /to-share/);

    // the member answers: the membership changes, then osc's owner patch (from --project) is refused
    const accept = await openstack('member', 'image', 'set', '--accept', '--project', MEMBER, id);
    assert.equal(await memberStatus(id), 'accepted', accept.stderr);
    assert.match(ok('member list', await openstack('member', 'image', 'list')), /to-share\s+\|\s+active/, 'accepted: listed');
    const save = join(home, 'saved.raw');
    ok('image save as the member', await openstack('member', 'image', 'save', '--file', save, id));
    const memberView = ok('glance member-list as the member', await glance('member', 'member-list', '--image-id', id));
    assert.match(memberView, new RegExp(`${id}\\s+\\|\\s+${MEMBER}\\s+\\|\\s+accepted`));

    await openstack('member', 'image', 'set', '--reject', '--project', MEMBER, id);
    assert.equal(await memberStatus(id), 'rejected');
    assert.doesNotMatch(ok('member list', await openstack('member', 'image', 'list')), /to-share/, 'rejected: not listed');
    assert.match(ok('member list rejected', await openstack('member', 'image', 'list', '--member-status', 'rejected')), /to-share/);

    // glanceclient's own verbs: the member answers, only the owner removes
    ok('member-update', await glance('member', 'member-update', id, MEMBER, 'accepted'));
    assert.equal(await memberStatus(id), 'accepted');
    fails('member removes itself', await glance('member', 'member-delete', id, MEMBER));
    fails('owner answers for the member', await glance('owner', 'member-update', id, MEMBER, 'rejected'));
    ok('image remove project', await openstack('owner', 'image', 'remove', 'project', id, MEMBER));
    assert.equal(await memberStatus(id), undefined);
    assert.match(fails('show after removal', await openstack('member', 'image', 'show', id)), /404|No Image found/i);
    ok('delete', await openstack('owner', 'image', 'delete', id));
  });

  test('visibility changes through openstack image set: --private, --community, --shared, --public (server admins only)', async () => {
    const id = (JSON.parse(ok('create', await openstack('owner', 'image', 'create', '--private', 'vis', '-f', 'json'))) as { id: string }).id;
    const vis = async () => (JSON.parse(ok('show', await openstack('owner', 'image', 'show', id, '-f', 'json'))) as { visibility: string }).visibility;
    assert.equal(await vis(), 'private');
    assert.match(fails('add to a private image', await openstack('owner', 'image', 'add', 'project', id, MEMBER)), /403|Only shared images/i);
    ok('--community', await openstack('owner', 'image', 'set', '--community', id));
    assert.equal(await vis(), 'community');
    assert.match(ok('member shows a community image', await openstack('member', 'image', 'show', id, '-f', 'json')), /"community"/);
    assert.doesNotMatch(ok('member list', await openstack('member', 'image', 'list')), /\svis\s/);
    assert.match(ok('member list --community', await openstack('member', 'image', 'list', '--community')), /\svis\s/);
    ok('--shared', await openstack('owner', 'image', 'set', '--shared', id));
    assert.equal(await vis(), 'shared');
    assert.match(fails('public needs a server admin', await openstack('owner', 'image', 'set', '--public', id)), /403|administrators/i);
    assert.match(fails('a writer changes no visibility', await openstack('writer', 'image', 'set', '--private', id)), /403/);
    ok('glance image-update --visibility', await glance('owner', 'image-update', '--visibility', 'private', id));
    assert.equal(await vis(), 'private');
    ok('delete', await openstack('owner', 'image', 'delete', id));
  });

  test('a hostile qcow2 (backing file) through the clients: refused, the image killed with its reason', async () => {
    const overlay = await qcow2WithBacking('glance-cli');
    const created = ok('create', await glance('writer', 'image-create', '--name', 'hostile', '--disk-format', 'qcow2', '--container-format', 'bare'));
    const id = /\|\s+id\s+\|\s+(\S+)/.exec(created)![1]!;
    assert.match(fails('upload hostile', await glance('writer', 'image-upload', '--file', overlay, id)), /400|backing file/i);
    const g = ok('glance image-show', await glance('writer', 'image-show', id));
    assert.match(g, /\|\s+status\s+\|\s+killed/);
    assert.match(g, /\|\s+imago_killed_reason\s+\|.*backing file/);
    const shown = JSON.parse(ok('show', await openstack('writer', 'image', 'show', id, '-f', 'json'))) as Record<string, any>;
    assert.equal(shown.status, 'killed');
    assert.match(shown.properties.imago_killed_reason, /backing file/);
    ok('delete', await openstack('writer', 'image', 'delete', id));
    // openstackclient (openstacksdk) deletes the image it made when its upload is refused
    const out = fails(
      'create --file hostile',
      await openstack('writer', 'image', 'create', '--disk-format', 'qcow2', '--container-format', 'bare', '--file', overlay, 'hostile2'),
    );
    assert.match(out, /400|backing file/i);
  });

  test('glance image-create without --name: a nameless image, listed; openstack names it', async () => {
    const out = ok('create nameless', await glance('writer', 'image-create', '--disk-format', 'raw', '--container-format', 'bare'));
    const id = /\|\s+id\s+\|\s+(\S+)/.exec(out)![1]!;
    assert.match(out, /\|\s+name\s+\|\s+None\s/);
    assert.match(ok('list', await glance('writer', 'image-list')), new RegExp(id));
    ok('set --name', await openstack('writer', 'image', 'set', '--name', 'named-later', id));
    assert.match(ok('show', await glance('writer', 'image-show', id)), /\|\s+name\s+\|\s+named-later\s/);
    ok('delete', await glance('writer', 'image-delete', id));
  });

  test("Glance's error codes as the clients show them: 409 second upload, 404 unknown id, 400 bad disk_format, 413 over quota", async () => {
    const disk = join(home, 'codes.raw');
    writeFileSync(disk, randomBytes(4096));
    const out = ok('create', await glance('writer', 'image-create', '--name', 'codes', '--disk-format', 'raw', '--container-format', 'bare', '--file', disk));
    const id = /\|\s+id\s+\|\s+(\S+)/.exec(out)![1]!;
    assert.match(fails('second upload', await glance('writer', 'image-upload', '--file', disk, id)), /409|Conflict/i);
    const unknown = '00000000-0000-4000-8000-000000000000';
    assert.match(fails('show unknown', await glance('writer', 'image-show', unknown)), /404|No image/i);
    assert.match(fails('openstack show unknown', await openstack('writer', 'image', 'show', unknown)), /No Image found|404/i);
    assert.match(fails('delete unknown', await openstack('writer', 'image', 'delete', unknown)), /Failed to delete|404|No Image found/i);
    // a disk_format outside Glance's list never leaves the clients (both check it themselves); one
    // the bytes contradict is the server's 400, shown by the client
    const mismatch = fails(
      'disk_format the bytes contradict',
      await glance('writer', 'image-create', '--name', 'mismatch', '--disk-format', 'qcow2', '--container-format', 'bare', '--file', disk),
    );
    assert.match(mismatch, /400/);
    assert.match(mismatch, /declared as qcow2/);
    const big = join(home, 'big.raw');
    writeFileSync(big, randomBytes(2 << 20));
    const over = fails(
      'over quota',
      await glance('writer', 'image-create', '--name', 'big', '--disk-format', 'raw', '--container-format', 'bare', '--file', big),
    );
    assert.match(over, /413|quota/i);
    ok('delete', await glance('writer', 'image-delete', id));
  });
});

describe('glance and openstack verify an os_hash_algo sha256 server (sqlite)', () => {
  let s: TestServer;
  let home: string;
  before(async () => {
    s = await startTestServer({ env: { IMAGO_OS_HASH_ALGO: 'sha256', IMAGO_MD5: '1' } });
    home = mkdtempSync(join(tmpdir(), 'imago-glance-sha256-'));
  });
  after(async () => {
    await s?.stop();
    rmSync(home, { recursive: true, force: true });
  });

  test('create --file, show sha256, download byte-identical (the clients check os_hash_value with os_hash_algo)', async () => {
    const bytes = randomBytes(300_001);
    const disk = join(home, 'd.raw');
    writeFileSync(disk, bytes);
    const out = await runGlance(s.url, s.token, home, ['image-create', '--name', 'h256', '--disk-format', 'raw', '--container-format', 'bare', '--file', disk]);
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /\|\s+os_hash_algo\s+\|\s+sha256\s/);
    assert.match(out.stdout, new RegExp(`\\|\\s+os_hash_value\\s+\\|\\s+${createHash('sha256').update(bytes).digest('hex')}\\s`));
    const id = /\|\s+id\s+\|\s+(\S+)/.exec(out.stdout)![1]!;
    const g = join(home, 'g.out');
    const dl = await runGlance(s.url, s.token, home, ['image-download', '--file', g, id]);
    assert.equal(dl.code, 0, dl.stderr);
    assert.ok(readFileSync(g).equals(bytes));
    const o = join(home, 'o.out');
    const saved = await runOpenstack(s.url, s.token, home, ['image', 'save', '--file', o, id]);
    assert.equal(saved.code, 0, saved.stderr);
    assert.ok(readFileSync(o).equals(bytes));
  });
});

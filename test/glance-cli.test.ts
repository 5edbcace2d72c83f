/**
 * The Glance door (`/image`) driven by the real clients, unmodified: Debian's python3-glanceclient
 * (through ../shared/peers/bin/glance, which only works around its schema-cache bug) and
 * python3-openstackclient, against a real Imago server on 127.0.0.1.
 * Create with --file, list, show, update properties, tags, download byte-identical (both clients
 * verify the hashes), protected, deactivate/reactivate, delete.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runGlance, runOpenstack } from './support/glance-clients.js';
import { startTestServer, type Dialect, type TestServer, projectWriterToken } from './support/server.js';

// the clients are slow to start (~2-3 s a call on a busy machine): they run against SQLite;
// test/glance-api.test.ts drives the same door over HTTP on both dialects
for (const dialect of ['sqlite'] as Dialect[]) {
  describe(`glance and openstack CLIs against /image (${dialect})`, () => {
    let s: TestServer;
    let home: string;
    let token: string;
    let disk: string;
    let bytes: Buffer;

    const glance = async (...args: string[]): Promise<string> => {
      const r = await runGlance(s.url, token, home, args);
      assert.equal(r.code, 0, `glance ${args.join(' ')}: ${r.stderr}${r.stdout}`);
      return r.stdout;
    };
    const glanceFails = async (...args: string[]): Promise<string> => {
      const r = await runGlance(s.url, token, home, args);
      assert.notEqual(r.code, 0, `glance ${args.join(' ')} should fail: ${r.stdout}`);
      return r.stderr + r.stdout;
    };
    // keystoneauth's admin_token plugin takes the endpoint as given: the versioned one, as for Glance itself
    const openstack = async (...args: string[]): Promise<string> => {
      const r = await runOpenstack(s.url, token, home, args);
      assert.equal(r.code, 0, `openstack ${args.join(' ')}: ${r.stderr}${r.stdout}`);
      return r.stdout;
    };

    before(async () => {
      s = await startTestServer({ dialect, env: { IMAGO_MD5: '1' } });
      home = mkdtempSync(join(tmpdir(), 'imago-glance-home-'));
      token = await projectWriterToken(s, 'demo', 'wendy', 'cli');
      bytes = randomBytes(3 * 1024 * 1024 + 17);
      disk = join(home, 'disk.raw');
      writeFileSync(disk, bytes);
    });
    after(async () => {
      await s?.stop();
      rmSync(home, { recursive: true, force: true });
    });

    test('glance: create with --file, show every field and hash, list, download byte-identical', async () => {
      const out = await glance(
        'image-create',
        '--name',
        'g-one',
        '--disk-format',
        'raw',
        '--container-format',
        'bare',
        '--file',
        disk,
        '--property',
        'foo=bar',
        '--min-ram',
        '64',
      );
      const id = /\|\s+id\s+\|\s+(\S+)/.exec(out)?.[1];
      assert.ok(id, out);
      const r = await fetch(`${s.url}/image/v2/images/${id}`, { headers: { 'x-auth-token': token } });
      const img = (await r.json()) as Record<string, unknown>;
      assert.equal(img.status, 'active');
      assert.equal(img.size, bytes.length);
      assert.equal(img.virtual_size, bytes.length);
      assert.equal(img.checksum, createHash('md5').update(bytes).digest('hex'));
      assert.equal(img.os_hash_algo, 'sha512');
      assert.equal(img.os_hash_value, createHash('sha512').update(bytes).digest('hex'));
      assert.equal(img.owner, 'demo');
      assert.equal(img.visibility, 'shared');
      assert.equal(img.foo, 'bar');
      assert.equal(img.min_ram, 64);
      assert.equal(img.protected, false);
      assert.equal(img.os_hidden, false);
      assert.equal(img.self, `/v2/images/${id}`);
      assert.equal(img.file, `/v2/images/${id}/file`);
      assert.equal(img.schema, '/v2/schemas/image');
      assert.match(String(img.created_at), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);

      assert.match(await glance('image-list'), new RegExp(`${id}.*g-one`));
      const target = join(home, 'g-one.out');
      await glance('image-download', '--file', target, id);
      assert.ok(readFileSync(target).equals(bytes), 'glance image-download is byte-identical');

      await glance('image-update', '--property', 'foo=baz', '--property', 'extra=1', id);
      await glance('image-tag-update', id, 't1');
      await glance('image-tag-update', id, 't2');
      await glance('image-tag-delete', id, 't1');
      const shown = await glance('image-show', id);
      assert.match(shown, /\|\s+foo\s+\|\s+baz/);
      assert.match(shown, /\|\s+extra\s+\|\s+1/);
      assert.match(shown, /\|\s+tags\s+\|\s+\["t2"\]/);

      await glance('image-update', '--protected', 'True', id);
      assert.match(await glanceFails('image-delete', id), /not permitted|403|protected/i);
      await glance('image-update', '--protected', 'False', id);

      await glance('image-deactivate', id);
      assert.match(await glance('image-show', id), /\|\s+status\s+\|\s+deactivated/);
      assert.match(await glanceFails('image-download', '--file', join(home, 'x'), id), /403|deactivated/);
      await glance('image-reactivate', id);
      assert.match(await glance('image-show', id), /\|\s+status\s+\|\s+active/);

      await glance('image-delete', id);
      assert.match(await glanceFails('image-show', id), /404|No image found/);
    });

    test('glance: image-list pages through a catalog larger than its page size (marker and next)', async () => {
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) {
        const r = await fetch(`${s.url}/image/v2/images`, {
          method: 'POST',
          headers: { 'x-auth-token': token, 'content-type': 'application/json' },
          body: JSON.stringify({ name: `page-${i}`, tags: ['paged'] }),
        });
        assert.equal(r.status, 201);
        ids.push(((await r.json()) as { id: string }).id);
      }
      const out = await glance('image-list', '--page-size', '2', '--tag', 'paged');
      for (const id of ids) assert.match(out, new RegExp(id));
      for (const id of ids) await glance('image-delete', id);
    });

    test('openstack: image create --file, list, show, set/unset, save byte-identical, delete', async () => {
      const created = JSON.parse(
        await openstack(
          'image',
          'create',
          '--disk-format',
          'raw',
          '--container-format',
          'bare',
          '--file',
          disk,
          '--property',
          'a=b',
          '--tag',
          'x',
          'o-one',
          '-f',
          'json',
        ),
      ) as { id: string };
      assert.match(await openstack('image', 'list'), /o-one\s+\|\s+active/);
      const target = join(home, 'o-one.out');
      await openstack('image', 'save', '--file', target, 'o-one');
      assert.ok(readFileSync(target).equals(bytes), 'openstack image save is byte-identical');
      await openstack('image', 'set', '--property', 'c=d', '--tag', 'y', '--min-disk', '2', 'o-one');
      await openstack('image', 'unset', '--property', 'a', '--tag', 'x', 'o-one');
      const shown = JSON.parse(await openstack('image', 'show', 'o-one', '-f', 'json')) as Record<string, any>;
      assert.equal(shown.id, created.id);
      assert.equal(shown.min_disk, 2);
      assert.deepEqual(shown.tags, ['y']);
      assert.equal(shown.properties.c, 'd');
      assert.equal(shown.properties.a, undefined);
      assert.equal(shown.properties.os_hash_value, createHash('sha512').update(bytes).digest('hex'));
      await openstack('image', 'delete', 'o-one');
      assert.doesNotMatch(await openstack('image', 'list'), /o-one/);
    });

    test('an image made through /image is the same image on the REST API', async () => {
      const out = await glance('image-create', '--name', 'both-doors', '--disk-format', 'raw', '--container-format', 'bare');
      const id = /\|\s+id\s+\|\s+(\S+)/.exec(out)![1]!;
      const r = await fetch(`${s.url}/api/v1/images/${id}`, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(r.status, 200);
      const img = (await r.json()) as Record<string, unknown>;
      assert.equal(img.name, 'both-doors');
      assert.equal(img.project, 'demo');
      assert.equal(img.state, 'pending');
      await glance('image-delete', id);
      assert.equal((await fetch(`${s.url}/api/v1/images/${id}`, { headers: { authorization: `Bearer ${token}` } })).status, 404);
    });
  });
}

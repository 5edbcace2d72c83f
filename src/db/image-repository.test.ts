/**
 * The catalog repository on both dialects: the real SQLite file and the real PostgreSQL at
 * 127.0.0.1:5432 (a fresh database per run). The same suite runs on each.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { freshDatabase } from '../../test/support/server.js';
import { openDatabase, type Database } from './database.js';
import { migrateToLatest } from './migrations.js';
import type { Image } from '../domain/images/image.js';
import { KyselyImageRepository } from './image-repository.js';

function image(over: Partial<Image> = {}): Image {
  const now = new Date();
  return {
    id: randomUUID(),
    name: 'img',
    type: 'OS',
    minDisk: 0,
    minRam: 0,
    persistent: false,
    properties: {},
    tags: [],
    state: 'pending',
    usedBy: 0,
    visibility: 'project',
    perms: 0o660,
    reservedBytes: 0,
    checksums: {},
    createdAt: now,
    updatedAt: now,
    version: 1,
    ...over,
  };
}

for (const dialect of ['sqlite', 'postgres'] as const) {
  describe(`image repository (${dialect})`, () => {
    let db: Database;
    let repo: KyselyImageRepository;
    let cleanup: () => Promise<void>;
    before(async () => {
      const fresh = await freshDatabase(dialect);
      cleanup = fresh.drop;
      db = await openDatabase(fresh.url);
      await migrateToLatest(db);
      await migrateToLatest(db); // twice: a no-op
      repo = new KyselyImageRepository(db);
    });
    after(async () => {
      await db?.close();
      await cleanup?.();
    });

    test('every field round-trips (bigints near 2^50, unicode, JSON)', async () => {
      const img = image({
        name: 'Ubuntu 24.04 — サーバー',
        description: 'x'.repeat(3000),
        diskFormat: 'qcow2',
        containerFormat: 'bare',
        architecture: 'x86_64',
        osDistro: 'ubuntu',
        osVersion: '24.04',
        osType: 'linux',
        minDisk: 20,
        minRam: 2048,
        persistent: true,
        properties: { hw_disk_bus: 'virtio', 'org.openstack.glance.os_distro': 'ubuntu' },
        tags: ['lts', 'cloud'],
        state: 'ready',
        digest: `sha256:${'ab'.repeat(32)}`,
        storedSize: 2 ** 50 + 3,
        virtualSize: 2 ** 52 - 1,
        checksums: { md5: 'f'.repeat(32), sha512: 'e'.repeat(128) },
        inspection: { format: 'qcow2', subformat: 'v3', details: { clusterSize: 65536 }, findings: [] },
      });
      await repo.create(img);
      assert.deepEqual(await repo.get(img.id), img);
    });

    test('idempotency: replay returns the first image, a different request is refused, racing creates make one image', async () => {
      const key = randomUUID();
      const a = await repo.create(image({ name: 'idem' }), { key, requestHash: 'h1' });
      const b = await repo.create(image({ name: 'idem' }), { key, requestHash: 'h1' });
      assert.equal(b.replayed, true);
      assert.equal(b.image.id, a.image.id);
      await assert.rejects(repo.create(image(), { key, requestHash: 'h2' }), /already used for a different request/);
      const k2 = randomUUID();
      const results = await Promise.all(Array.from({ length: 5 }, () => repo.create(image({ name: 'race' }), { key: k2, requestHash: 'h' })));
      assert.equal(new Set(results.map((r) => r.image.id)).size, 1);
      assert.equal(results.filter((r) => !r.replayed).length, 1);
    });

    test('compare-and-set: of racing updates from pending, exactly one wins', async () => {
      const img = image();
      await repo.create(img);
      const tries = await Promise.all(
        Array.from({ length: 6 }, (_, i) => repo.update(img.id, { state: 'importing', ingestId: `i${i}` }, { fromStates: ['pending'], expectedVersion: 1 })),
      );
      assert.equal(tries.filter(Boolean).length, 1);
      const now = await repo.get(img.id);
      assert.equal(now!.state, 'importing');
      assert.equal(now!.version, 2);
      assert.equal(await repo.update(img.id, { state: 'ready' }, { fromStates: ['pending'] }), undefined);
    });

    test('filters: name, prefix, state, type, format, tags (all), properties (all), date ranges', async () => {
      const t = randomUUID().slice(0, 8);
      const t0 = Date.now();
      const mk = (o: Partial<Image>) => repo.create(image({ tags: [t], ...o }));
      await mk({ name: `${t}-a`, type: 'OS', diskFormat: 'qcow2', state: 'ready', tags: [t, 'x'], properties: { os_distro: 'debian', k: '1' } });
      await mk({ name: `${t}-b`, type: 'DATABLOCK', diskFormat: 'raw', state: 'ready', properties: { os_distro: 'debian' } });
      await mk({ name: `${t}-c`, type: 'OS', diskFormat: 'qcow2', state: 'error', tags: [t, 'x', 'y'], createdAt: new Date(t0 + 3600_000) });
      await mk({ name: `other%_${t}`, type: 'CDROM' });
      const names = async (q: Parameters<typeof repo.list>[0]) => (await repo.list(q)).items.map((i) => i.name).sort();
      assert.deepEqual(await names({ limit: 100, tags: [t] }), [`${t}-a`, `${t}-b`, `${t}-c`, `other%_${t}`]);
      assert.deepEqual(await names({ limit: 100, name: `${t}-a` }), [`${t}-a`]);
      assert.deepEqual(await names({ limit: 100, name: `${t}-*` }), [`${t}-a`, `${t}-b`, `${t}-c`]);
      assert.deepEqual(await names({ limit: 100, name: 'other%*' }), [`other%_${t}`], 'LIKE wildcards in the prefix are literal');
      assert.deepEqual(await names({ limit: 100, tags: [t], state: ['ready'] }), [`${t}-a`, `${t}-b`]);
      assert.deepEqual(await names({ limit: 100, tags: [t], type: ['OS'], diskFormat: ['qcow2'] }), [`${t}-a`, `${t}-c`]);
      assert.deepEqual(await names({ limit: 100, tags: [t, 'x'] }), [`${t}-a`, `${t}-c`]);
      assert.deepEqual(await names({ limit: 100, tags: [t], properties: { os_distro: 'debian', k: '1' } }), [`${t}-a`]);
      assert.deepEqual(await names({ limit: 100, tags: [t], createdAfter: new Date(t0 + 60_000) }), [`${t}-c`]);
    });

    test('keyset pagination walks 2,500 rows with no duplicate or miss, even with inserts between pages', async () => {
      const tag = `page-${randomUUID().slice(0, 8)}`;
      const base = Date.now() - 10_000_000;
      const rows = Array.from({ length: 2500 }, (_, i) =>
        image({
          name: `n${String(i % 97).padStart(3, '0')}`,
          tags: [tag],
          storedSize: i % 13 === 0 ? undefined : (i * 7919) % 5000,
          createdAt: new Date(base + (i % 1000) * 1000),
        }),
      );
      for (let i = 0; i < rows.length; i += 250) await Promise.all(rows.slice(i, i + 250).map((r) => repo.create(r)));
      for (const sort of [
        { key: 'createdAt', dir: 'asc' },
        { key: 'name', dir: 'desc' },
        { key: 'storedSize', dir: 'asc' },
      ] as const) {
        const seen = new Set<string>();
        let cursor: string | undefined;
        let pages = 0;
        const inserted: string[] = [];
        do {
          const page = await repo.list({ limit: 100, tags: [tag], sort: [sort], cursor });
          for (const i of page.items) {
            assert.ok(!seen.has(i.id), `duplicate ${i.id} with sort ${sort.key}`);
            seen.add(i.id);
          }
          cursor = page.nextCursor;
          if (pages++ % 5 === 0) {
            // rows appended behind the cursor (older) must not shift the walk
            const late = image({ name: 'a-late', tags: [`${tag}-late`], createdAt: new Date(base - 1) });
            await repo.create(late);
            inserted.push(late.id);
          }
          assert.ok(pages < 100, 'terminates');
        } while (cursor);
        for (const r of rows) assert.ok(seen.has(r.id), `missed ${r.id} with sort ${sort.key}`);
      }
      await assert.rejects(repo.list({ limit: 10, cursor: 'garbage' }), /cursor/);
      await assert.rejects(repo.list({ limit: 0 }), /limit/);
    });

    test('remove, inStates, referencedDigests, count', async () => {
      const d = `sha256:${'cd'.repeat(32)}` as const;
      const a = image({ state: 'importing', digest: d });
      const b = image({ state: 'ready', digest: d });
      await repo.create(a);
      await repo.create(b);
      assert.ok((await repo.inStates(['importing'])).some((i) => i.id === a.id));
      assert.ok((await repo.referencedDigests()).has(d));
      const before = await repo.count();
      assert.equal(await repo.remove(a.id), true);
      assert.equal(await repo.remove(a.id), false);
      assert.equal(await repo.count(), before - 1);
      assert.equal(await repo.get(a.id), undefined);
    });
  });
}

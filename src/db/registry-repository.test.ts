/**
 * KyselyRegistryRepository on both dialects: the generated-layer cache (issue 10 §4) and its
 * pruning when garbage collection deletes the disks it was derived from.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { freshDatabase } from '../../test/support/server.js';
import type { Digest } from '../store/blob-store.js';
import { openDatabase, type Database } from './database.js';
import { migrateToLatest } from './migrations.js';
import { KyselyRegistryRepository } from './registry-repository.js';

const digest = (): Digest => `sha256:${randomBytes(32).toString('hex')}`;

for (const dialect of ['sqlite', 'postgres'] as const) {
  describe(`registry repository (${dialect})`, () => {
    let db: Database;
    let repo: KyselyRegistryRepository;
    let cleanup: () => Promise<void>;
    before(async () => {
      const fresh = await freshDatabase(dialect);
      cleanup = fresh.drop;
      db = await openDatabase(fresh.url);
      await migrateToLatest(db);
      repo = new KyselyRegistryRepository(db);
    });
    after(async () => {
      await db.close();
      await cleanup();
    });

    test('generated layers are cached per disk and file name, and forgotten with their disks only', async () => {
      const [kept, gone, gone2] = [digest(), digest(), digest()];
      const layers = new Map<string, Digest>();
      for (const disk of [kept, gone, gone2]) {
        for (const name of ['disk.img', 'disk.qcow2']) {
          const layer = digest();
          layers.set(`${disk} ${name}`, layer);
          await repo.recordGeneratedLayer(disk, name, layer);
        }
      }
      // a second record of the same disk and name keeps the first
      await repo.recordGeneratedLayer(kept, 'disk.img', digest());
      assert.equal(await repo.generatedLayer(kept, 'disk.img'), layers.get(`${kept} disk.img`));

      await repo.forgetGeneratedLayers([gone, gone2]);
      for (const name of ['disk.img', 'disk.qcow2']) {
        assert.equal(await repo.generatedLayer(gone, name), undefined);
        assert.equal(await repo.generatedLayer(gone2, name), undefined);
        assert.equal(await repo.generatedLayer(kept, name), layers.get(`${kept} ${name}`));
      }
      await repo.forgetGeneratedLayers([]); // nothing to forget: no statement, no error
      assert.equal(await repo.generatedLayer(kept, 'disk.qcow2'), layers.get(`${kept} disk.qcow2`));
    });

    test('forgetting more disks than one statement may bind goes in slices', async () => {
      const many = Array.from({ length: 1200 }, digest);
      const last = many[many.length - 1]!;
      await repo.recordGeneratedLayer(last, 'disk.img', digest());
      await repo.forgetGeneratedLayers(many);
      assert.equal(await repo.generatedLayer(last, 'disk.img'), undefined);
    });
  });
}

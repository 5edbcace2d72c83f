import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { Image } from '../domain/images/image.js';
import { KyselyImageRepository } from './image-repository.js';
import { openDatabase } from './database.js';
import { migrateToLatest } from './migrations.js';

test('0005-cluster-scope: cluster-scope images created as project/660 become private/600 (public ones 604)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'imago-migrate-'));
  const db = await openDatabase(`sqlite:${join(dir, 'imago.db')}`);
  try {
    // as a server from before issue 18 left them: the schema up to 0004, images made then
    await migrateToLatest(db, { upTo: '0004-variants' });
    const repo = new KyselyImageRepository(db);
    const now = new Date();
    const base = {
      name: 'old',
      type: 'OS',
      minDisk: 0,
      minRam: 0,
      persistent: false,
      properties: {},
      tags: [],
      state: 'pending',
      usedBy: 0,
      reservedBytes: 0,
      checksums: {},
      createdAt: now,
      updatedAt: now,
      version: 1,
    } as const;
    const made = async (over: Partial<Image>) =>
      (await repo.create({ ...base, id: randomUUID(), visibility: 'project', perms: 0o660, ...over } as Image)).image.id;
    const cluster = await made({});
    const clusterPublic = await made({ visibility: 'public', perms: 0o664 });
    const inProject = await made({ project: 'p' });
    await migrateToLatest(db);
    const get = async (id: string) => {
      const i = (await repo.get(id))!;
      return [i.visibility, i.perms.toString(8)];
    };
    assert.deepEqual(await get(cluster), ['private', '600']);
    assert.deepEqual(await get(clusterPublic), ['public', '604']);
    assert.deepEqual(await get(inProject), ['project', '660'], 'images in a project are untouched');
  } finally {
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

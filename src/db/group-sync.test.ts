import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { groupSync, openDatabase } from './database.js';

test('groupSync: calls during a sync share the next one; a call after all settled starts its own', async () => {
  const started: number[] = [];
  let done = 0;
  const durable = groupSync(async () => {
    started.push(Date.now());
    await sleep(30);
    done++;
  });
  const first = durable();
  // these arrive while the first sync runs: what they committed may have missed it
  const during = Array.from({ length: 20 }, () => durable());
  await first;
  assert.equal(done, 1);
  await Promise.all(during);
  assert.equal(started.length, 2, 'twenty callers during one sync were served by one more sync');
  await durable();
  assert.equal(started.length, 3);
});

test('groupSync: a failed sync fails its callers, and the next call tries again', async () => {
  let n = 0;
  const durable = groupSync(async () => {
    n++;
    if (n === 1) throw new Error('disk gone');
  });
  await assert.rejects(durable(), /disk gone/);
  await durable();
  assert.equal(n, 2);
});

test('SQLite: durable() syncs the WAL of a real database (and is a no-op once it is closed)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'imago-durable-'));
  try {
    const db = await openDatabase(join(dir, 'imago.db'));
    await db.kysely.schema.createTable('t').addColumn('x', 'integer').execute();
    await db.kysely
      .insertInto('t' as never)
      .values({ x: 1 } as never)
      .execute();
    await db.durable();
    await db.close();
    await db.durable();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

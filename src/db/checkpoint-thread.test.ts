import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { sql } from 'kysely';
import { openDatabase } from './database.js';

type Db = Awaited<ReturnType<typeof openDatabase>>;
const pragma = async (db: Db, name: 'wal_autocheckpoint' | 'synchronous'): Promise<number> =>
  Number(Object.values((await sql<Record<string, number>>`pragma ${sql.raw(name)}`.execute(db.kysely)).rows[0]!)[0]);

test('checkpointThread: the serving connection never checkpoints; the thread copies the WAL into the database file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'imago-ckpt-'));
  try {
    const path = join(dir, 'imago.db');
    const db = await openDatabase(path, { checkpointThread: true });
    assert.equal(await pragma(db, 'wal_autocheckpoint'), 0, 'automatic checkpoints are off on the serving connection');
    assert.equal(await pragma(db, 'synchronous'), 0, 'the serving connection makes no sync of its own (durable() does)');
    await sql`create table t (n integer, v text)`.execute(db.kysely);
    // ~6 MB of WAL: past the 1,000 pages at which the serving connection would checkpoint itself
    for (let i = 0; i < 3000; i++) await sql`insert into t values (${i}, ${'x'.repeat(2000)})`.execute(db.kysely);
    let size = statSync(path).size;
    for (let waited = 0; size < 6_000_000 && waited < 10_000; waited += 100) {
      await sleep(100);
      size = statSync(path).size;
    }
    assert.ok(size >= 6_000_000, `the database file holds the rows after the thread's checkpoint (${size} bytes)`);
    await db.close();
    assert.equal(existsSync(`${path}-wal`), false, 'the last close checkpointed and removed the WAL');
    const again = await openDatabase(path);
    const { rows } = await sql<{ n: number }>`select count(*) as n from t`.execute(again.kysely);
    assert.equal(rows[0]!.n, 3000);
    assert.equal(await pragma(again, 'wal_autocheckpoint'), 1000, 'without the thread, SQLite checkpoints in the commits (its default)');
    assert.equal(await pragma(again, 'synchronous'), 1, 'and syncs them (NORMAL)');
    await again.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

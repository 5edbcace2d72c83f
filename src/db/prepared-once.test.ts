import assert from 'node:assert/strict';
import { test } from 'node:test';
import SqliteDatabase from 'better-sqlite3';
import { preparedOnce } from './database.js';

test('preparedOnce: one statement per SQL text, reused with new parameters; the oldest text leaves the bounded cache first', () => {
  const db = new SqliteDatabase(':memory:');
  const kysely = preparedOnce(db, 2);
  kysely.prepare('create table t (k text, v integer)').run([]);
  const insert = kysely.prepare('insert into t values (?, ?)');
  insert.run(['a', 1]);
  assert.equal(kysely.prepare('insert into t values (?, ?)'), insert, 'the same text gives the same statement');
  kysely.prepare('insert into t values (?, ?)').run(['b', 2]);
  const select = kysely.prepare('select v from t where k = ?');
  assert.deepEqual(select.all(['a']), [{ v: 1 }]);
  assert.deepEqual(kysely.prepare('select v from t where k = ?').all(['b']), [{ v: 2 }], 'a reused statement binds the new parameters');
  // the cache holds 2: 'create', 'insert', 'select' → 'create' was dropped, then 'insert' by this one
  kysely.prepare('select count(*) as n from t');
  assert.notEqual(kysely.prepare('insert into t values (?, ?)'), insert, 'the oldest text was prepared again after it left the cache');
  assert.equal(kysely.prepare('select count(*) as n from t').all([]).length, 1);
  kysely.close();
});

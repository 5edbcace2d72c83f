/**
 * The job queue adapter on both dialects, through the port's conformance suite: a real SQLite file
 * (two connections) and the real PostgreSQL at 127.0.0.1:5432 (a fresh database per test, two pools).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freshPgDatabase } from '../../test/support/server.js';
import { jobQueueConformance } from '../domain/jobs/job-queue.conformance.js';
import { openDatabase } from './database.js';
import { KyselyJobQueue } from './job-queue.js';
import { migrateToLatest } from './migrations.js';

jobQueueConformance('Kysely on SQLite', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'imago-jobs-'));
  const url = `sqlite:${join(dir, 'imago.db')}`;
  const a = await openDatabase(url);
  await migrateToLatest(a);
  const b = await openDatabase(url);
  return {
    nodes: [new KyselyJobQueue(a), new KyselyJobQueue(b)],
    async cleanup() {
      await a.close();
      await b.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});

jobQueueConformance('Kysely on PostgreSQL', async () => {
  const pg = await freshPgDatabase();
  const a = await openDatabase(pg.url);
  await migrateToLatest(a);
  const b = await openDatabase(pg.url);
  return {
    nodes: [new KyselyJobQueue(a), new KyselyJobQueue(b)],
    async cleanup() {
      await a.close();
      await b.close();
      await pg.drop();
    },
  };
});

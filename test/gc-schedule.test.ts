/**
 * Scheduled GC runs as a job on the queue: the schedule (IMAGO_GC_SCHEDULE) enqueues one `gc` job
 * per tick and the runner collects with it; with two nodes on one PostgreSQL catalog and the same
 * schedule, each tick is still one job, run by one node.
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { adminFetch as fetch, freshPgDatabase, startTestServer } from './support/server.js';

const EVERY_SECOND = '* * * * * *';

async function until(cond: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('the GC schedule enqueues gc jobs that collect an unreferenced blob', async () => {
  const s = await startTestServer({ env: { IMAGO_GC_SCHEDULE: EVERY_SECOND } });
  try {
    const img = (await (
      await fetch(`${s.url}/api/v1/images`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"name":"gc-me"}' })
    ).json()) as { id: string };
    const up = await fetch(`${s.url}/api/v1/images/${img.id}/file`, {
      method: 'PUT',
      body: Buffer.alloc(1 << 20, 7),
      headers: { 'content-type': 'application/octet-stream' },
    });
    const { digest } = (await up.json()) as { digest: `sha256:${string}` };
    assert.ok(await s.app.store.stat(digest));
    assert.equal((await fetch(`${s.url}/api/v1/images/${img.id}`, { method: 'DELETE' })).status, 204);
    await until(async () => (await s.app.store.stat(digest)) === undefined, 10_000, 'the scheduled GC to collect the blob');
    const jobs = await s.app.db.kysely.selectFrom('jobs').selectAll().where('kind', '=', 'gc').execute();
    assert.ok(
      jobs.some((j) => j.state === 'done'),
      JSON.stringify(jobs),
    );
    for (const j of jobs) assert.match(j.id, /^gc@\d+$/);
  } finally {
    await s.stop();
  }
});

test('two nodes on one catalog with the same schedule: one gc job per tick, each run once by one node', async () => {
  const pg = await freshPgDatabase();
  const env = { IMAGO_GC_SCHEDULE: EVERY_SECOND, IMAGO_DATABASE_URL: pg.url };
  const a = await startTestServer({ env });
  // the second node finds the admin already made: it gets the first node's token file
  const dataDirB = mkdtempSync(join(tmpdir(), 'imago-test-'));
  copyFileSync(join(a.dataDir, 'admin.token'), join(dataDirB, 'admin.token'));
  const b = await startTestServer({ env, dataDir: dataDirB });
  try {
    await new Promise((r) => setTimeout(r, 3500));
    await until(
      async () => (await a.app.db.kysely.selectFrom('jobs').select('id').where('kind', '=', 'gc').where('state', '!=', 'done').execute()).length === 0,
      10_000,
      'the gc jobs to end',
    );
    const jobs = await a.app.db.kysely.selectFrom('jobs').selectAll().where('kind', '=', 'gc').execute();
    assert.ok(jobs.length >= 2, `gc ran at several ticks: ${jobs.length}`);
    assert.equal(new Set(jobs.map((j) => j.id)).size, jobs.length);
    for (const j of jobs) {
      assert.equal(j.state, 'done', JSON.stringify(j));
      assert.equal(j.attempts, 1, `${j.id} was claimed once`);
    }
  } finally {
    await b.stop();
    await a.stop();
    rmSync(dataDirB, { recursive: true, force: true });
    await pg.drop();
  }
});

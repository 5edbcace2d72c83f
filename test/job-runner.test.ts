/**
 * The job runner on the real queue (SQLite file, Kysely adapter): phases run in order and are
 * persisted, a restarted node resumes at the phase it reached, heartbeats keep a long step's lease
 * from another node, a failure runs the handler's undo, and `close` resumes or fails what it stops.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { openDatabase, type Database } from '../src/db/database.js';
import { KyselyJobQueue } from '../src/db/job-queue.js';
import { migrateToLatest } from '../src/db/migrations.js';
import type { JobHandler } from '../src/domain/jobs/job-handler.js';
import type { JobQueue } from '../src/domain/jobs/job-queue.js';
import { JobRunner } from '../src/domain/jobs/job-runner.js';

type Phase = 'a' | 'b' | 'c';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let dir: string;
let db: Database;
let queue: JobQueue;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'imago-runner-'));
  db = await openDatabase(`sqlite:${join(dir, 'imago.db')}`);
  await migrateToLatest(db);
  queue = new KyselyJobQueue(db);
});
after(async () => {
  await db.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A three-phase handler that logs each step; `hold` makes phase `b` wait until its signal aborts or `release()`. */
function phased(log: string[], opts: { onShutdown?: 'resume' | 'fail'; hold?: boolean; failIn?: Phase } = {}) {
  let release = () => undefined as void;
  const held = new Promise<void>((r) => (release = r));
  const handler: JobHandler<{ n: number }, Phase> = {
    kind: 'gc',
    firstPhase: 'a',
    onShutdown: opts.onShutdown ?? 'resume',
    parse: (p) => ({ n: Number((p as { n?: number }).n ?? 0) }),
    async step(job, ctx) {
      log.push(`${job.phase}:${job.payload.n}:${job.attempts}`);
      if (opts.failIn === job.phase) throw new Error(`broke in ${job.phase}`);
      if (job.phase === 'a') return { next: 'b', payload: { n: job.payload.n + 1 } };
      if (job.phase === 'b') {
        if (opts.hold) {
          await Promise.race([held, new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error)))]);
        }
        return { next: 'c', progress: 50 };
      }
      return { done: true };
    },
    async failed(job, e) {
      log.push(`failed:${job.phase}:${(e as Error).message}`);
      return undefined;
    },
  };
  return { handler, release: () => release() };
}

async function until(cond: () => Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('timed out');
    await sleep(10);
  }
}

test('runs the phases in order, passing each next payload, and completes the job', async () => {
  const log: string[] = [];
  const runner = new JobRunner(queue, { owner: 'n1' });
  runner.register(phased(log).handler);
  const job = (await queue.enqueue({ kind: 'gc', payload: { n: 1 } }))!;
  runner.wake();
  await runner.settled(job.id, 5000);
  assert.deepEqual(log, ['a:1:1', 'b:2:1', 'c:2:1']);
  const done = await queue.get(job.id);
  assert.equal(done!.state, 'done');
  assert.equal(done!.phase, 'c');
  assert.equal(done!.progress, 50);
  await runner.close();
});

test('a restarted node resumes its jobs at the phase they reached; close leaves a `resume` job for the next start', async () => {
  // the state kill -9 leaves: the job claimed by this node (a long lease), phase b reached
  const job = (await queue.enqueue({ kind: 'gc', payload: { n: 7 } }))!;
  await queue.claim('n2', 600_000);
  await queue.advance(job.id, 'n2', 'b', { n: 8 });
  const log: string[] = [];
  const first = phased(log, { hold: true });
  const runner = new JobRunner(queue, { owner: 'n2' });
  runner.register(first.handler);
  assert.deepEqual(await runner.start(), { gc: 1 });
  await until(async () => log.length === 1);
  assert.deepEqual(log, ['b:8:2']);
  await runner.close(); // stops phase b: released, not failed
  const left = await queue.get(job.id);
  assert.equal(left!.state, 'queued');
  assert.equal(left!.phase, 'b');

  const again = new JobRunner(queue, { owner: 'n2' });
  const log2: string[] = [];
  again.register(phased(log2).handler);
  await again.start();
  await until(async () => (await queue.get(job.id))!.state === 'done');
  assert.deepEqual(log2, ['b:8:3', 'c:8:3']);
  await again.close();
});

test('heartbeats keep a long step from another node; a failure runs the undo and records the reason', async () => {
  const log: string[] = [];
  const slow = phased(log, { hold: true });
  const a = new JobRunner(queue, { owner: 'node-a', leaseMs: 150, pollMs: 20 });
  a.register(slow.handler);
  const otherLog: string[] = [];
  const b = new JobRunner(queue, { owner: 'node-b', leaseMs: 150, pollMs: 20 });
  b.register(phased(otherLog).handler);
  await b.start();
  const job = (await queue.enqueue({ kind: 'gc', payload: { n: 0 } }))!;
  a.wake();
  await until(async () => log.includes('b:1:1'));
  await sleep(600); // four leases long: only heartbeats keep node-b from claiming it
  assert.deepEqual(otherLog, [], 'node-b never ran the job');
  slow.release();
  await until(async () => (await queue.get(job.id))!.state === 'done');
  assert.equal((await queue.get(job.id))!.attempts, 1);

  const failing = (await queue.enqueue({ kind: 'gc', payload: { n: 0 } }))!;
  await b.close();
  await a.close();
  const c = new JobRunner(queue, { owner: 'node-c' });
  const log3: string[] = [];
  c.register(phased(log3, { failIn: 'b' }).handler);
  c.wake();
  await c.settled(failing.id, 5000);
  assert.deepEqual(log3, ['a:0:1', 'b:1:1', 'failed:b:broke in b']);
  const failed = await queue.get(failing.id);
  assert.equal(failed!.state, 'failed');
  assert.equal(failed!.error, 'broke in b');
  await c.close();
});

test('close fails a running `fail` job (running the undo); a job whose lease was taken over is left to its new holder', async () => {
  const log: string[] = [];
  const runner = new JobRunner(queue, { owner: 'n4' });
  runner.register(phased(log, { hold: true, onShutdown: 'fail' }).handler);
  const job = (await queue.enqueue({ kind: 'gc', payload: { n: 0 } }))!;
  runner.wake();
  await until(async () => log.length === 2);
  await runner.close();
  assert.deepEqual(log, ['a:0:1', 'b:1:1', 'failed:b:server shutting down']);
  assert.equal((await queue.get(job.id))!.state, 'failed');

  const log2: string[] = [];
  const stalled = new JobRunner(queue, { owner: 'n5', leaseMs: 300 });
  stalled.register(phased(log2, { hold: true, onShutdown: 'fail' }).handler);
  const taken = (await queue.enqueue({ kind: 'gc', payload: { n: 0 } }))!;
  stalled.wake();
  await until(async () => log2.length === 2);
  // another node takes the job over (as after an expired lease): n5's next heartbeat finds it gone
  await queue.release('n5', taken.id);
  assert.equal((await queue.claim('n6', 100_000))?.id, taken.id);
  await until(async () => !stalled.isRunning(taken.id));
  const now = await queue.get(taken.id);
  assert.equal(now!.state, 'running');
  assert.equal(now!.leaseOwner, 'n6', 'the old holder neither released nor failed the job');
  await stalled.close();
  assert.deepEqual(
    log2.filter((l) => l.startsWith('failed')),
    [],
  );
});

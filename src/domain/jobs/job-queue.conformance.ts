/**
 * The JobQueue conformance suite: every adapter runs it (as the BlobStore's does). `make` opens
 * two queues on the same storage through separate connections — two nodes — so that claims race
 * for real.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import type { JobQueue } from './job-queue.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function jobQueueConformance(name: string, make: () => Promise<{ nodes: [JobQueue, JobQueue]; cleanup(): Promise<void> }>): void {
  describe(`JobQueue conformance: ${name}`, () => {
    /** Claims until nothing is left (the queue is shared by the tests: each drains what it made). */
    async function drain(q: JobQueue, owner: string): Promise<void> {
      for (let j = await q.claim(owner, 60_000); j; j = await q.claim(owner, 60_000)) await q.complete(j.id, owner);
    }

    test('enqueue → claim → complete; the claim counts the attempt and holds the lease', async () => {
      const {
        nodes: [q],
        cleanup,
      } = await make();
      try {
        const made = await q.enqueue({ kind: 'import', imageId: 'img-1', payload: { url: 'http://x/' } });
        assert.ok(made);
        assert.equal(made.state, 'queued');
        assert.equal(made.attempts, 0);
        const before = Date.now();
        const got = await q.claim('node-a', 5000);
        assert.ok(got);
        assert.equal(got.id, made.id);
        assert.equal(got.kind, 'import');
        assert.equal(got.imageId, 'img-1');
        assert.deepEqual(got.payload, { url: 'http://x/' });
        assert.equal(got.state, 'running');
        assert.equal(got.attempts, 1);
        assert.equal(got.leaseOwner, 'node-a');
        assert.ok(got.leaseUntil! >= before + 5000);
        assert.equal(await q.claim('node-b', 5000), undefined, 'a held job is not claimable');
        assert.equal(await q.complete(got.id, 'node-b'), false, 'only the holder completes');
        assert.equal(await q.complete(got.id, 'node-a'), true);
        assert.equal((await q.get(got.id))!.state, 'done');
        assert.equal(await q.claim('node-b', 5000), undefined, 'a done job is not claimable');
      } finally {
        await cleanup();
      }
    });

    test('jobs are claimed oldest first; fail records the error; a job on no image has no imageId', async () => {
      const {
        nodes: [q],
        cleanup,
      } = await make();
      try {
        const a = await q.enqueue({ kind: 'gc', payload: {} });
        await sleep(2);
        const b = await q.enqueue({ kind: 'convert', imageId: 'img-2', payload: { n: 2 } });
        const first = await q.claim('n', 5000);
        const second = await q.claim('n', 5000);
        assert.deepEqual([first?.id, second?.id], [a?.id, b?.id]);
        assert.equal(first!.imageId, undefined);
        assert.equal(await q.fail(first!.id, 'n', 'it broke'), true);
        const failed = await q.get(first!.id);
        assert.equal(failed!.state, 'failed');
        assert.equal(failed!.error, 'it broke');
        assert.deepEqual(
          (await q.unfinished()).map((j) => j.id),
          [b!.id],
        );
        assert.deepEqual(await q.unfinished('import'), []);
        await q.complete(second!.id, 'n');
      } finally {
        await cleanup();
      }
    });

    test('an id makes enqueue idempotent: a second enqueue with it adds nothing', async () => {
      const {
        nodes: [q, r],
        cleanup,
      } = await make();
      try {
        const id = `gc@${randomUUID()}`;
        assert.ok(await q.enqueue({ id, kind: 'gc', payload: {} }));
        assert.equal(await r.enqueue({ id, kind: 'gc', payload: {} }), undefined);
        assert.equal((await q.unfinished('gc')).filter((j) => j.id === id).length, 1);
        await drain(q, 'n');
      } finally {
        await cleanup();
      }
    });

    test('two claimers never get the same job', async () => {
      const { nodes, cleanup } = await make();
      try {
        const n = 40;
        for (let i = 0; i < n; i++) await nodes[i % 2]!.enqueue({ kind: 'import', imageId: `race-${i}`, payload: { i } });
        const claimed: string[] = [];
        const worker = async (q: JobQueue, owner: string) => {
          for (;;) {
            const j = await q.claim(owner, 60_000);
            if (!j) return;
            claimed.push(j.id);
          }
        };
        await Promise.all([worker(nodes[0], 'a1'), worker(nodes[1], 'b1'), worker(nodes[0], 'a2'), worker(nodes[1], 'b2')]);
        assert.equal(claimed.length, n, 'every job claimed once');
        assert.equal(new Set(claimed).size, n, 'no job claimed twice');
        for (const id of claimed) {
          const j = await nodes[0].get(id);
          assert.equal(j!.attempts, 1);
          await nodes[0].complete(id, j!.leaseOwner!);
        }
      } finally {
        await cleanup();
      }
    });

    test('an expired lease is reclaimed (resume after a worker died), and the old holder can no longer end the job', async () => {
      const {
        nodes: [q, r],
        cleanup,
      } = await make();
      try {
        const made = await q.enqueue({ kind: 'convert', imageId: 'img-3', payload: {} });
        const held = await q.claim('dead-node', 50);
        assert.equal(held?.id, made!.id);
        assert.equal(await r.claim('live-node', 5000), undefined, 'not before the lease expires');
        await sleep(80);
        const again = await r.claim('live-node', 5000);
        assert.equal(again?.id, made!.id);
        assert.equal(again!.attempts, 2);
        assert.equal(await q.heartbeat(made!.id, 'dead-node', 5000), false);
        assert.equal(await q.complete(made!.id, 'dead-node'), false);
        assert.equal(await r.complete(made!.id, 'live-node'), true);
      } finally {
        await cleanup();
      }
    });

    test('heartbeat extends the lease (and records progress)', async () => {
      const {
        nodes: [q, r],
        cleanup,
      } = await make();
      try {
        const made = await q.enqueue({ kind: 'import', imageId: 'img-4', payload: {} });
        await q.claim('worker', 100);
        for (let i = 0; i < 4; i++) {
          await sleep(50);
          assert.equal(await q.heartbeat(made!.id, 'worker', 100, i * 10), true);
        }
        assert.equal(await r.claim('thief', 5000), undefined, 'the lease was kept alive past its first 100 ms');
        const j = await q.get(made!.id);
        assert.equal(j!.progress, 30);
        assert.ok(j!.leaseUntil! > Date.now());
        await sleep(150);
        assert.equal((await r.claim('thief', 5000))?.id, made!.id, 'without heartbeats the lease ends');
        await r.complete(made!.id, 'thief');
      } finally {
        await cleanup();
      }
    });

    test('advance persists the phase and payload; release hands a worker its jobs back at once', async () => {
      const {
        nodes: [q, r],
        cleanup,
      } = await make();
      try {
        const made = await q.enqueue({ kind: 'convert', imageId: 'img-5', payload: { step: 1 } });
        const j = await q.claim('restarting-node', 60_000);
        assert.equal(j!.phase, '');
        assert.equal(await q.advance(made!.id, 'restarting-node', 'swap', { step: 2 }, 100), true);
        assert.equal(await r.advance(made!.id, 'other', 'x', {}), false);
        assert.equal(await q.release('restarting-node'), 1);
        const resumed = await r.claim('restarting-node', 60_000);
        assert.equal(resumed?.id, made!.id);
        assert.equal(resumed!.phase, 'swap');
        assert.deepEqual(resumed!.payload, { step: 2 });
        assert.equal(resumed!.progress, 100);
        assert.equal(resumed!.attempts, 2);
        assert.equal(await q.release('someone-else'), 0);
        await r.complete(made!.id, 'restarting-node');
      } finally {
        await cleanup();
      }
    });

    test('list: ended jobs too, by kind, image and state, newest or oldest first, paged after a job id', async () => {
      const {
        nodes: [q, r],
        cleanup,
      } = await make();
      try {
        const image = `img-${randomUUID()}`;
        const made: string[] = [];
        for (let i = 0; i < 5; i++) {
          made.push((await q.enqueue({ kind: 'import', imageId: i < 4 ? image : 'elsewhere', payload: { n: i } }))!.id);
          await sleep(3);
        }
        await q.enqueue({ kind: 'gc', payload: {} });
        // the oldest ends done, the next one failed: both are still listed
        const a = await q.claim('n', 60_000);
        assert.equal(a!.id, made[0]);
        await q.complete(a!.id, 'n');
        const b = await q.claim('n', 60_000);
        await q.fail(b!.id, 'n', 'broken');
        const ids = (jobs: { id: string }[]) => jobs.map((j) => j.id);
        const newest = { key: 'createdAt', dir: 'desc' } as const;
        assert.deepEqual(ids(await r.list({ kind: 'import', imageId: image, sort: newest, limit: 10 })), [made[3], made[2], made[1], made[0]]);
        assert.deepEqual(ids(await r.list({ kind: 'import', imageId: image, sort: { key: 'createdAt', dir: 'asc' }, limit: 2 })), [made[0], made[1]]);
        const page1 = await r.list({ kind: 'import', imageId: image, sort: newest, limit: 2 });
        assert.deepEqual(ids(page1), [made[3], made[2]]);
        assert.deepEqual(ids(await r.list({ kind: 'import', imageId: image, sort: newest, limit: 2, after: page1[1]!.id })), [made[1], made[0]]);
        assert.deepEqual(ids(await r.list({ kind: 'import', imageId: image, sort: newest, limit: 2, after: made[0] })), []);
        assert.deepEqual(await r.list({ kind: 'import', sort: newest, limit: 2, after: randomUUID() }), [], 'an unknown marker answers nothing');
        const failed = await r.list({ kind: 'import', imageId: image, states: ['failed'], sort: newest, limit: 10 });
        assert.deepEqual(ids(failed), [made[1]]);
        assert.equal(failed[0]!.error, 'broken');
        assert.deepEqual(ids(await r.list({ kind: 'import', imageId: image, states: ['done', 'queued'], sort: newest, limit: 10 })), [
          made[3],
          made[2],
          made[0],
        ]);
        assert.deepEqual(await r.list({ kind: 'import', states: [], sort: newest, limit: 10 }), []);
        const all = await r.list({ kind: 'import', sort: newest, limit: 100 });
        assert.ok(ids(all).includes(made[4]!) && all.every((j) => j.kind === 'import'), 'kind filters, image unfiltered');
        const byState = await r.list({
          kind: 'import',
          imageId: image,
          sort: { key: 'state', order: ['failed', 'queued', 'running', 'done'], dir: 'asc' },
          limit: 10,
        });
        assert.equal(byState.length, 4);
        assert.equal(byState[0]!.id, made[1], 'failed first, in the order given');
        assert.equal(byState[3]!.id, made[0], 'done last');
        assert.deepEqual(ids(byState.slice(1, 3)), [made[2]!, made[3]!].sort(), 'the two queued jobs between them, by id');
        const stateDesc = { key: 'state', order: ['failed', 'queued', 'running', 'done'], dir: 'desc' } as const;
        const s1 = await r.list({ kind: 'import', imageId: image, sort: stateDesc, limit: 2 });
        const s2 = await r.list({ kind: 'import', imageId: image, sort: stateDesc, limit: 2, after: s1[1]!.id });
        assert.deepEqual([...ids(s1), ...ids(s2)], ids([...byState].reverse()), 'paged through in the same order');
        const byId = await r.list({ kind: 'import', imageId: image, sort: { key: 'id', dir: 'asc' }, limit: 10 });
        assert.deepEqual(ids(byId), [...made.slice(0, 4)].sort());
        await drain(q, 'n');
        const byUpdate = await r.list({ kind: 'import', imageId: image, sort: { key: 'updatedAt', dir: 'desc' }, limit: 10 });
        assert.equal(byUpdate.length, 4);
        for (let i = 1; i < byUpdate.length; i++) assert.ok(byUpdate[i - 1]!.updatedAt >= byUpdate[i]!.updatedAt);
      } finally {
        await cleanup();
      }
    });
  });
}

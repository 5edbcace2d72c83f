/**
 * The job queue on Kysely, the adapter behind domain/jobs/job-queue.ts. Jobs are rows of `jobs`;
 * a claim is one UPDATE of the oldest claimable row that sets the lease and counts the attempt,
 * RETURNING the row:
 * - PostgreSQL: the row is chosen by a sub-select `FOR UPDATE SKIP LOCKED`, so concurrent
 *   claimers on other nodes each lock a different row instead of waiting on (or taking) the same;
 *   the outer UPDATE repeats the claimable condition, so a row another claimer changed meanwhile
 *   is not taken twice.
 * - SQLite: one statement under the database's write lock is atomic; the same conditional UPDATE
 *   cannot interleave with another one.
 * Every change to a claimed job is conditional on the lease owner.
 */
import { randomUUID } from 'node:crypto';
import { sql, type Expression, type ExpressionBuilder, type Kysely, type Selectable, type SqlBool, type Updateable } from 'kysely';
import { isUniqueViolation, type Database } from './database.js';
import type { JobsTable, Schema } from './schema.js';

type JobRow = Selectable<JobsTable>;
import type { Job, JobKind, JobListQuery, JobQueue, NewJob } from '../domain/jobs/job-queue.js';

export class KyselyJobQueue implements JobQueue {
  private readonly db: Kysely<Schema>;
  private readonly dialect: Database['dialect'];
  constructor(database: Database) {
    this.db = database.kysely;
    this.dialect = database.dialect;
  }

  async enqueue(job: NewJob): Promise<Job | undefined> {
    const now = Date.now();
    const row: JobRow = {
      id: job.id ?? randomUUID(),
      kind: job.kind,
      image_id: job.imageId ?? '',
      state: 'queued',
      payload: JSON.stringify(job.payload ?? null),
      phase: '',
      progress: null,
      attempts: 0,
      error: null,
      lease_owner: null,
      lease_until: null,
      created_at: now,
      updated_at: now,
    };
    try {
      await this.db.insertInto('jobs').values(row).execute();
    } catch (e) {
      if (job.id !== undefined && isUniqueViolation(e)) return undefined;
      throw e;
    }
    return fromRow(row);
  }

  async claim(owner: string, leaseMs: number): Promise<Job | undefined> {
    const now = Date.now();
    let pick = this.db.selectFrom('jobs').select('id').where(claimable(now)).orderBy('created_at').orderBy('id').limit(1);
    if (this.dialect === 'postgres') pick = pick.forUpdate().skipLocked();
    const row = await this.db
      .updateTable('jobs')
      .set({ state: 'running', lease_owner: owner, lease_until: now + leaseMs, attempts: sql`attempts + 1`, updated_at: now })
      .where('id', '=', pick)
      .where(claimable(now))
      .returningAll()
      .executeTakeFirst();
    return row ? fromRow(row) : undefined;
  }

  async heartbeat(id: string, owner: string, leaseMs: number, progress?: number): Promise<boolean> {
    const now = Date.now();
    const set: Updateable<JobsTable> = { lease_until: now + leaseMs, updated_at: now };
    if (progress !== undefined) set.progress = progress;
    return this.changeHeld(id, owner, set);
  }

  advance(id: string, owner: string, phase: string, payload: unknown, progress?: number): Promise<boolean> {
    const set: Updateable<JobsTable> = { phase, payload: JSON.stringify(payload ?? null), updated_at: Date.now() };
    if (progress !== undefined) set.progress = progress;
    return this.changeHeld(id, owner, set);
  }

  complete(id: string, owner: string): Promise<boolean> {
    return this.changeHeld(id, owner, { state: 'done', error: null, lease_until: null, updated_at: Date.now() });
  }

  fail(id: string, owner: string, error: string): Promise<boolean> {
    return this.changeHeld(id, owner, { state: 'failed', error: error.slice(0, 4000), lease_until: null, updated_at: Date.now() });
  }

  async release(owner: string, id?: string): Promise<number> {
    let u = this.db
      .updateTable('jobs')
      .set({ state: 'queued', lease_owner: null, lease_until: null, updated_at: Date.now() })
      .where('state', '=', 'running')
      .where('lease_owner', '=', owner);
    if (id !== undefined) u = u.where('id', '=', id);
    const r = await u.executeTakeFirst();
    return Number(r.numUpdatedRows);
  }

  async get(id: string): Promise<Job | undefined> {
    const row = await this.db.selectFrom('jobs').selectAll().where('id', '=', id).executeTakeFirst();
    return row ? fromRow(row) : undefined;
  }

  async unfinished(kind?: JobKind): Promise<Job[]> {
    let q = this.db.selectFrom('jobs').selectAll().where('state', 'in', ['queued', 'running']);
    if (kind) q = q.where('kind', '=', kind);
    return (await q.orderBy('created_at').orderBy('id').execute()).map(fromRow);
  }

  async list(q: JobListQuery): Promise<Job[]> {
    const desc = q.sort.dir === 'desc';
    const sort = q.sort;
    // the sort key as an expression, and its value for one row (the marker)
    const key =
      sort.key === 'state'
        ? sql<number>`case ${sql.join(
            sort.order.map((st, i) => sql`when state = ${st} then ${i}`),
            sql` `,
          )} else ${sort.order.length} end`
        : sql.ref<number | string>(sort.key === 'createdAt' ? 'created_at' : sort.key === 'updatedAt' ? 'updated_at' : 'id');
    const keyOf = (r: JobRow): number | string => {
      if (sort.key === 'state') return sort.order.includes(r.state) ? sort.order.indexOf(r.state) : sort.order.length;
      if (sort.key === 'id') return r.id;
      return Number(sort.key === 'createdAt' ? r.created_at : r.updated_at);
    };
    let query = this.db.selectFrom('jobs').selectAll();
    if (q.kind) query = query.where('kind', '=', q.kind);
    if (q.imageId !== undefined) query = query.where('image_id', '=', q.imageId);
    if (q.states) {
      if (q.states.length === 0) return [];
      query = query.where('state', 'in', [...q.states]);
    }
    if (q.after !== undefined) {
      const m = await this.db.selectFrom('jobs').selectAll().where('id', '=', q.after).executeTakeFirst();
      if (!m) return [];
      const at = keyOf(m);
      // strictly after the marker in (key, id) order
      query = query.where((eb) => eb.or([eb(key, desc ? '<' : '>', at), eb.and([eb(key, '=', at), eb('id', desc ? '<' : '>', m.id)])]));
    }
    const rows = await query
      .orderBy(key, desc ? 'desc' : 'asc')
      .orderBy('id', desc ? 'desc' : 'asc')
      .limit(q.limit)
      .execute();
    return rows.map(fromRow);
  }

  private async changeHeld(id: string, owner: string, set: Updateable<JobsTable>): Promise<boolean> {
    const r = await this.db
      .updateTable('jobs')
      .set(set)
      .where('id', '=', id)
      .where('state', '=', 'running')
      .where('lease_owner', '=', owner)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }
}

/** Queued, or running with no lease (left by a stopped worker or an older version) or an expired one. */
function claimable(now: number) {
  return (eb: ExpressionBuilder<Schema, 'jobs'>): Expression<SqlBool> =>
    eb.or([eb('state', '=', 'queued'), eb.and([eb('state', '=', 'running'), eb.or([eb('lease_until', 'is', null), eb('lease_until', '<', now)])])]);
}

function fromRow(r: JobRow): Job {
  const job: Job = {
    id: r.id,
    kind: r.kind,
    state: r.state,
    payload: JSON.parse(r.payload) as unknown,
    phase: r.phase,
    attempts: Number(r.attempts),
    createdAt: new Date(Number(r.created_at)),
    updatedAt: new Date(Number(r.updated_at)),
  };
  if (r.image_id !== '') job.imageId = r.image_id;
  if (r.progress !== null) job.progress = Number(r.progress);
  if (r.error !== null) job.error = r.error;
  if (r.lease_owner !== null) job.leaseOwner = r.lease_owner;
  if (r.lease_until !== null) job.leaseUntil = Number(r.lease_until);
  return job;
}

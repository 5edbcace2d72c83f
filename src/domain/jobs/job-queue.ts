/**
 * The job queue port: background work (URL imports, convert-on-import, scheduled GC) as rows any
 * worker may claim. A claim takes a lease (`leaseMs`); the worker renews it with `heartbeat` while
 * the job runs and ends it with `complete` or `fail`. A worker that dies stops renewing: once the
 * lease has expired the job is claimable again, by any node — that is "resume after restart".
 * `release` hands a worker's own jobs back at once (a restarted node resuming what it held, or a
 * graceful stop leaving a job to be resumed).
 *
 * Every call that changes a claimed job names the worker (`owner`) and succeeds only while that
 * worker still holds the lease: a worker that lost its lease (paused past it, another node
 * reclaimed the job) cannot complete or fail a job someone else is running.
 *
 * The adapter is db/job-queue.ts (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: an atomic
 * conditional UPDATE). No import of ours here: db/schema.ts types its columns with these unions.
 */

export const JOB_KINDS = ['import', 'convert', 'gc'] as const;
export type JobKind = (typeof JOB_KINDS)[number];

/** queued: waiting for a worker; running: claimed (its lease may have expired); done / failed: ended */
export const JOB_STATES = ['queued', 'running', 'done', 'failed'] as const;
export type JobState = (typeof JOB_STATES)[number];

export interface Job {
  id: string;
  kind: JobKind;
  /** the image the job works on; absent for jobs on no image (GC) */
  imageId?: string;
  state: JobState;
  /** the handler's own data, as it parses it */
  payload: unknown;
  /** the phase the next run starts in; '' = the handler's first phase */
  phase: string;
  /** 0..100 when known */
  progress?: number;
  /** how many times the job was claimed (1 on its first run) */
  attempts: number;
  error?: string;
  leaseOwner?: string;
  /** milliseconds since the epoch */
  leaseUntil?: number;
  createdAt: Date;
  updatedAt: Date;
}

export interface NewJob {
  /** a chosen id makes enqueueing idempotent (a scheduled job enqueued by several nodes at one tick) */
  id?: string;
  kind: JobKind;
  imageId?: string;
  payload: unknown;
}

export interface JobQueue {
  /** Adds a queued job; answers it. With an `id` already used, answers undefined and adds nothing. */
  enqueue(job: NewJob): Promise<Job | undefined>;
  /**
   * Takes the oldest claimable job — queued, or running with an expired (or no) lease — for
   * `owner` until now + `leaseMs`, and counts the attempt. Two claimers never get the same job.
   * Undefined when none is claimable.
   */
  claim(owner: string, leaseMs: number): Promise<Job | undefined>;
  /** Extends the lease to now + `leaseMs` (and records progress); false when `owner` no longer holds it. */
  heartbeat(id: string, owner: string, leaseMs: number, progress?: number): Promise<boolean>;
  /** Persists the phase the job has reached (and its payload): a later claim starts there. */
  advance(id: string, owner: string, phase: string, payload: unknown, progress?: number): Promise<boolean>;
  complete(id: string, owner: string): Promise<boolean>;
  fail(id: string, owner: string, error: string): Promise<boolean>;
  /** Ends the leases of `owner` (all its jobs, or only `id`): the jobs are claimable again at once. */
  release(owner: string, id?: string): Promise<number>;
  get(id: string): Promise<Job | undefined>;
  /** Jobs not ended yet (queued or running), oldest first. */
  unfinished(kind?: JobKind): Promise<Job[]>;
  /**
   * Jobs, ended ones included, in the order asked (ties broken by id in the same direction),
   * starting after the job `after` in that order. An unknown `after` answers no jobs.
   */
  list(query: JobListQuery): Promise<Job[]>;
}

export interface JobListQuery {
  kind?: JobKind;
  imageId?: string;
  states?: readonly JobState[];
  /** by a time, by id, or by state in the order `states` gives (every state named once) */
  sort: { key: 'createdAt' | 'updatedAt' | 'id'; dir: 'asc' | 'desc' } | { key: 'state'; order: readonly JobState[]; dir: 'asc' | 'desc' };
  /** a job id: the page starts after it */
  after?: string;
  /** at most this many jobs */
  limit: number;
}

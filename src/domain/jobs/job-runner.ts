/**
 * The one job runner: claims jobs from the queue with a lease, runs their handler's phases,
 * renews the lease while a phase runs (a third of the lease, so two missed beats still hold it),
 * persists each next phase, and completes or fails the job. A handler whose lease is lost (another
 * node reclaimed the job after this one stalled) is aborted and the job left to its new holder.
 *
 * `start` resumes what this node held before it stopped (its leases are released at once; jobs of
 * other, dead nodes come back when their leases expire) and polls for work; `wake` claims at once
 * (after an enqueue). `close` stops claiming, interrupts running jobs (each kind's `onShutdown`
 * says whether the job resumes at the next start or fails) and waits for them.
 */
import type { JobContext, JobHandler, RunningJob, StepResult } from './job-handler.js';
import type { Job, JobKind, JobQueue } from './job-queue.js';

export interface JobRunnerOptions {
  /** this node's stable identity: a restarted node takes its own jobs back at once */
  owner: string;
  leaseMs?: number;
  /** how often to look for claimable jobs (other nodes' expired leases, jobs enqueued elsewhere) */
  pollMs?: number;
}

interface Active {
  job: Job;
  ac: AbortController;
  /** the lease was lost: the job belongs to someone else now */
  lost: boolean;
  done: Promise<void>;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- each handler has its own payload and phases
type AnyHandler = JobHandler<any, string>;

export class JobRunner {
  private readonly handlers = new Map<JobKind, AnyHandler>();
  private readonly active = new Map<string, Active>();
  private readonly settledWaiters = new Map<string, Set<() => void>>();
  private readonly leaseMs: number;
  private readonly pollMs: number;
  private poll: NodeJS.Timeout | undefined;
  private pumping: Promise<void> | undefined;
  private pumpAgain = false;
  private closing = false;

  constructor(
    private readonly queue: JobQueue,
    private readonly opts: JobRunnerOptions,
  ) {
    this.leaseMs = opts.leaseMs ?? 30_000;
    this.pollMs = opts.pollMs ?? 1000;
  }

  register<P, Phase extends string>(handler: JobHandler<P, Phase>): void {
    if (this.handlers.has(handler.kind)) throw new Error(`a handler for ${handler.kind} jobs is already registered`);
    this.handlers.set(handler.kind, handler as unknown as AnyHandler);
  }

  get isClosing(): boolean {
    return this.closing;
  }

  /**
   * Resumes the jobs this node left running (after kill -9 or a restart) and starts polling.
   * Answers how many of each kind it took back.
   */
  async start(): Promise<Partial<Record<JobKind, number>>> {
    const left = (await this.queue.unfinished()).filter((j) => j.state === 'running' && (j.leaseOwner === this.opts.owner || j.leaseOwner === undefined));
    await this.queue.release(this.opts.owner);
    const resumed: Partial<Record<JobKind, number>> = {};
    for (const j of left) resumed[j.kind] = (resumed[j.kind] ?? 0) + 1;
    this.poll = setInterval(() => this.wake(), this.pollMs);
    this.poll.unref();
    await this.pump();
    return resumed;
  }

  /** Claims and starts jobs now (call after an enqueue). */
  wake(): void {
    void this.pump();
  }

  /** The running job of `kind` on this image, when this node runs one. */
  runningFor(kind: JobKind, imageId: string): string | undefined {
    for (const a of this.active.values()) if (a.job.kind === kind && a.job.imageId === imageId && !a.ac.signal.aborted) return a.job.id;
    return undefined;
  }

  isRunning(jobId: string): boolean {
    return this.active.has(jobId);
  }

  /** Interrupts a job this node runs; false when it runs none with this id. */
  abort(jobId: string, reason: unknown): boolean {
    const a = this.active.get(jobId);
    if (!a) return false;
    a.ac.abort(reason);
    return true;
  }

  /** Resolves when this node has finished running the job, or after `ms` (it may run elsewhere). */
  settled(jobId: string, ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      let waiters = this.settledWaiters.get(jobId);
      if (!waiters) this.settledWaiters.set(jobId, (waiters = new Set()));
      const set = waiters;
      const done = () => {
        clearTimeout(timer);
        set.delete(done);
        if (set.size === 0 && this.settledWaiters.get(jobId) === set) this.settledWaiters.delete(jobId);
        resolve();
      };
      const timer = setTimeout(done, ms);
      set.add(done);
    });
  }

  /** Stops claiming, interrupts running jobs and waits for them. */
  async close(): Promise<void> {
    this.closing = true;
    if (this.poll) clearInterval(this.poll);
    await this.pumping;
    for (const a of this.active.values()) a.ac.abort(new Error('server shutting down'));
    await Promise.allSettled([...this.active.values()].map((a) => a.done));
  }

  private pump(): Promise<void> {
    if (this.pumping) {
      this.pumpAgain = true;
      return this.pumping;
    }
    this.pumping = (async () => {
      do {
        this.pumpAgain = false;
        while (!this.closing) {
          const job = await this.queue.claim(this.opts.owner, this.leaseMs).catch(() => undefined);
          if (!job) break;
          if (this.closing) {
            await this.queue.release(this.opts.owner, job.id).catch(() => undefined);
            break;
          }
          this.run(job);
        }
      } while (this.pumpAgain && !this.closing);
    })().finally(() => {
      this.pumping = undefined;
    });
    return this.pumping;
  }

  private run(job: Job): void {
    const ac = new AbortController();
    const entry: Active = { job, ac, lost: false, done: Promise.resolve() };
    this.active.set(job.id, entry);
    const beat = setInterval(() => void this.renew(entry), Math.max(10, Math.floor(this.leaseMs / 3)));
    entry.done = this.execute(entry)
      .catch(() => undefined)
      .finally(() => {
        clearInterval(beat);
        this.active.delete(job.id);
        for (const w of [...(this.settledWaiters.get(job.id) ?? [])]) w();
      });
  }

  private async renew(entry: Active, progress?: number): Promise<void> {
    const held = await this.queue.heartbeat(entry.job.id, this.opts.owner, this.leaseMs, progress).catch(() => true);
    if (!held && !entry.lost) {
      entry.lost = true;
      entry.ac.abort(new Error('the job was taken over by another worker (its lease expired)'));
    }
  }

  private async execute(entry: Active): Promise<void> {
    const { job, ac } = entry;
    const owner = this.opts.owner;
    const handler = this.handlers.get(job.kind);
    if (!handler) {
      await this.queue.fail(job.id, owner, `no handler for ${job.kind} jobs on this node`);
      return;
    }
    const ctx: JobContext = { signal: ac.signal, progress: (pct) => void this.renew(entry, pct) };
    let running: RunningJob<unknown, string> | undefined;
    try {
      running = { id: job.id, payload: handler.parse(job.payload), phase: job.phase || handler.firstPhase, attempts: job.attempts };
      if (job.imageId !== undefined) running.imageId = job.imageId;
      for (;;) {
        const r: StepResult<unknown, string> = await handler.step(running, ctx);
        if (entry.lost) return;
        if ('done' in r) {
          await this.queue.complete(job.id, owner);
          return;
        }
        if ('fail' in r) {
          await this.queue.fail(job.id, owner, r.fail);
          return;
        }
        if (r.payload !== undefined) running.payload = r.payload;
        running.phase = r.next;
        await this.queue.advance(job.id, owner, running.phase, running.payload, r.progress);
      }
    } catch (e) {
      if (entry.lost) return;
      if (this.closing && ac.signal.aborted && handler.onShutdown === 'resume') {
        await this.queue.release(owner, job.id);
        return;
      }
      const why = (running && (await handler.failed?.(running, e, ctx).catch(() => undefined))) ?? (e instanceof Error ? e.message : String(e));
      await this.queue.fail(job.id, owner, why);
    }
  }
}

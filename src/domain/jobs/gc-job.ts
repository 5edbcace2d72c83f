/**
 * Scheduled garbage collection as a job (kind `gc`, one phase: `collect`). The schedule
 * (`IMAGO_GC_SCHEDULE`, a cron pattern kept by the composition root) only enqueues; the job runs
 * on the queue under a lease like any other. Every node on the schedule enqueues at the same
 * tick with the same id (`gc@<tick in epoch seconds>`), so the tick yields one job and one node
 * runs it. What a collection does is domain/images/gc.ts's (`planGc`, then `runGc`).
 */
import type { BlobStore, Digest } from '../../store/blob-store.js';
import { planGc, runGc } from '../images/gc.js';
import type { JobHandler } from './job-handler.js';
import type { JobQueue } from './job-queue.js';
import type { JobRunner } from './job-runner.js';

export interface GcJobSettings {
  store: BlobStore;
  /** every digest an image or variant references now */
  referenced(): Promise<Set<Digest>>;
  /** told the digests a collection deleted (see runGc) */
  forget?: (deleted: Digest[]) => Promise<void>;
  graceMs: number;
  /** told what a scheduled collection freed, or why it failed */
  log?: { info(obj: object, msg: string): void; error(obj: object, msg: string): void };
}

type GcPhase = 'collect';

export class GcJob {
  readonly handler: JobHandler<Record<string, never>, GcPhase>;

  constructor(
    private readonly queue: JobQueue,
    private readonly runner: JobRunner,
    private readonly settings: GcJobSettings,
  ) {
    this.handler = {
      kind: 'gc',
      firstPhase: 'collect',
      onShutdown: 'resume',
      parse: () => ({}),
      step: async () => {
        const { store, referenced, forget, graceMs } = this.settings;
        const plan = await planGc({ store, referenced: await referenced(), now: new Date(), graceMs });
        const deleted = await runGc(plan, store, { recheck: referenced, forget });
        this.settings.log?.info({ deleted }, 'scheduled gc');
        return { done: true };
      },
      failed: async (_job, e) => {
        this.settings.log?.error({ err: e }, 'scheduled gc failed');
        return undefined;
      },
    };
    runner.register(this.handler);
  }

  /** Enqueues the collection of the schedule's tick `at` (once, however many nodes call this). */
  async enqueue(at: Date): Promise<void> {
    await this.queue.enqueue({ id: `gc@${Math.floor(at.getTime() / 1000)}`, kind: 'gc', payload: {} });
    this.runner.wake();
  }
}

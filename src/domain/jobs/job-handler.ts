/**
 * What one job kind brings to the runner: a phase machine. `parse` checks the stored payload;
 * `step` runs one phase and answers the next (persisted before it runs, so a worker that restarts
 * after a crash starts there) or the end. A new job kind is one file holding one of these.
 */
import type { JobKind } from './job-queue.js';

export interface RunningJob<P, Phase extends string> {
  id: string;
  imageId?: string;
  payload: P;
  phase: Phase;
  /** how many times the job was claimed, this run included (1 on its first run) */
  attempts: number;
}

export interface JobContext {
  /** aborted when the job is cancelled, the server stops, or the lease was lost */
  signal: AbortSignal;
  /** records progress (0..100) on the job and renews its lease */
  progress(pct: number): void;
}

export type StepResult<P, Phase extends string> =
  /** go on with `next` (and this payload, when given) */
  | { next: Phase; payload?: P; progress?: number }
  /** the job is done */
  | { done: true }
  /** the job ends failed with this reason, with nothing to undo (`failed` is not called) */
  | { fail: string };

export interface JobHandler<P, Phase extends string> {
  kind: JobKind;
  /** where a new job starts */
  firstPhase: Phase;
  /** A stored payload as this kind's data; throws when it is not. */
  parse(payload: unknown): P;
  step(job: RunningJob<P, Phase>, ctx: JobContext): Promise<StepResult<P, Phase>>;
  /**
   * After a step threw: undoes what the job held (unlocks, marks the image failed). Answers the
   * reason to record when it is not the error's message.
   */
  failed?(job: RunningJob<P, Phase>, error: unknown, ctx: JobContext): Promise<string | undefined>;
  /** A job the stopping server interrupts is `resume`d at the next start, or ends `fail`ed. */
  onShutdown: 'resume' | 'fail';
}

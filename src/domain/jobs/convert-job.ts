/**
 * Convert-on-import (the policy Glance's image-conversion import plugin applies) as jobs (kind
 * `convert`): once an ingest has stored an image whose detected format is not the target — the
 * project's `convert_to`, else the server's `IMAGO_CONVERT_TO` — the stored blob is converted.
 *
 * The image is `locked` (lockReason `convert`) while the job runs; at the end, in one
 * transaction, the converted blob becomes the image's (digest, storedSize, diskFormat, checksums,
 * inspection) and the original is kept as a variant in its own format, so a download of
 * `?format=<original>` still returns the uploaded bytes. A failed conversion unlocks the image as
 * it was uploaded (stateReason says why).
 *
 * Phases: `convert` (payload: source blob, source format, target) → `swap` (payload also: the
 * committed result). A run after a restart redoes `convert` from the start (a writer's state
 * cannot be persisted mid-way) and finishes a `swap` whose result blob still exists; a job claimed
 * more than MAX_ATTEMPTS times gives up the way a failed one does. At start, `freeStrandedLocks`
 * unlocks any image left locked for a conversion that has no job: no image stays locked forever.
 */
import type { Digest } from '../../store/blob-store.js';
import type { ConvertFormat, Image, ImagePatch } from '../images/image.js';
import type { BlobStore } from '../../store/blob-store.js';
import type { ImageCatalog } from '../images/image-catalog.js';
import { inspectionSummary } from '../images/inspection-summary.js';
import { LOST_RACE, updateWithRetry } from '../images/update-with-retry.js';
import { transition } from '../images/lifecycle.js';
import { canConvertFrom, parseConvertTarget, type Converter, type ConvertResult } from '../images/variants.js';
import type { JobContext, JobHandler, RunningJob, StepResult } from './job-handler.js';
import type { JobQueue } from './job-queue.js';
import type { JobRunner } from './job-runner.js';

export interface ConvertPolicy {
  /** the server-wide target; absent = keep images as uploaded */
  serverTarget?: ConvertFormat;
}

interface ConvertPayload {
  source: Digest;
  sourceFormat: string;
  sourceSize: number;
  target: ConvertFormat;
  result?: { digest: Digest; sizeBytes: number; sha512: string; md5?: string };
}

type ConvertPhase = 'convert' | 'swap';
type Step = StepResult<ConvertPayload, ConvertPhase>;
type ConvertJob = RunningJob<ConvertPayload, ConvertPhase>;

const MAX_ATTEMPTS = 3;
const PROGRESS_EVERY_MS = 500;

export class ConvertJobs {
  readonly handler: JobHandler<ConvertPayload, ConvertPhase>;

  constructor(
    private readonly queue: JobQueue,
    private readonly runner: JobRunner,
    private readonly images: ImageCatalog,
    private readonly store: BlobStore,
    private readonly converter: Converter,
    private readonly policy: ConvertPolicy,
  ) {
    this.handler = {
      kind: 'convert',
      firstPhase: 'convert',
      onShutdown: 'resume',
      parse: (payload) => {
        const p = payload as Partial<ConvertPayload> | null;
        if (!p || typeof p.source !== 'string' || typeof p.sourceFormat !== 'string' || typeof p.target !== 'string')
          throw new Error('a convert job without its source and target');
        const out: ConvertPayload = { source: p.source, sourceFormat: p.sourceFormat, sourceSize: Number(p.sourceSize ?? 0), target: p.target };
        if (p.result) out.result = p.result;
        return out;
      },
      step: (job, ctx) => this.step(job, ctx),
      failed: (job, e) => this.giveUp(job, e instanceof Error ? e.message : String(e)),
    };
    runner.register(this.handler);
  }

  /** The format this image must be stored in, when it is not already (undefined: keep it). */
  async targetFor(img: Image): Promise<ConvertFormat | undefined> {
    let target: string | undefined = this.policy.serverTarget;
    if (img.project !== undefined) {
      const own = await this.images.repo.projectConvertTo(img.project);
      if (own === 'none') target = undefined;
      else if (own) target = own;
    }
    const detected = img.inspection?.format;
    if (target === undefined || img.containerFormat === 'ova' || detected === 'iso' || !canConvertFrom(detected) || detected === target) return undefined;
    return target as ConvertFormat;
  }

  /**
   * The IngestCoordinator hook after a stored ingest: locks the image, records the job and starts the
   * conversion; returns the image as it is then (locked, or unchanged when there is nothing to do).
   */
  async afterIngest(img: Image): Promise<Image> {
    try {
      return await this.startFor(img);
    } catch {
      // the policy is best effort: the upload itself succeeded, the image stays as uploaded
      return (await this.images.repo.get(img.id).catch(() => undefined)) ?? img;
    }
  }

  /** After a restart: unlocks images locked for a conversion that has no job (its row never landed). */
  async freeStrandedLocks(): Promise<number> {
    const withJob = new Set((await this.queue.unfinished('convert')).map((j) => j.imageId));
    let unlocked = 0;
    for (const img of await this.images.repo.inStates(['locked'])) {
      if (img.lockReason !== 'convert' || withJob.has(img.id)) continue;
      const freed = await this.images.repo.update(
        img.id,
        { state: transition(img.state, 'unlock'), lockReason: null, progress: null },
        { fromStates: ['locked'], expectedVersion: img.version },
      );
      if (freed) {
        this.images.events.publish('updated', freed);
        unlocked++;
      }
    }
    return unlocked;
  }

  private async startFor(img: Image): Promise<Image> {
    if (this.runner.isClosing || img.state !== 'ready' || !img.digest) return img;
    const target = await this.targetFor(img).catch(() => undefined);
    if (!target) return img;
    const payload: ConvertPayload = { source: img.digest, sourceFormat: img.inspection!.format, sourceSize: img.storedSize ?? 0, target };
    // the lock first: a job claimed at once must find its image locked; a crash between the two
    // leaves a lock without a job, which freeStrandedLocks frees at the next start
    const locked = await this.images.repo.update(
      img.id,
      { state: transition(img.state, 'lock'), lockReason: 'convert', progress: 0 },
      { fromStates: ['ready'], expectedVersion: img.version },
    );
    if (!locked) return (await this.images.repo.get(img.id)) ?? img;
    try {
      await this.queue.enqueue({ kind: 'convert', imageId: img.id, payload });
    } catch (e) {
      await this.unlock(img.id, `conversion to ${target} could not be queued (${e instanceof Error ? e.message : String(e)}); the image is kept as uploaded`);
      throw e;
    }
    this.images.events.publish('updated', locked);
    this.runner.wake();
    return locked;
  }

  private async step(job: ConvertJob, ctx: JobContext): Promise<Step> {
    const p = job.payload;
    const imageId = job.imageId!;
    const img = await this.images.repo.get(imageId);
    if (!img || img.state !== 'locked' || img.lockReason !== 'convert' || img.digest !== p.source) {
      // swapped just before a stop (done), or the image is no longer waiting for this conversion
      if (img !== undefined && p.result !== undefined && img.digest === p.result.digest) return { done: true };
      return { fail: 'the image was no longer waiting for this conversion' };
    }
    if (job.attempts > MAX_ATTEMPTS) throw new Error(`it was interrupted ${job.attempts - 1} times`);
    if (job.phase === 'convert') return this.convert(job, ctx);
    return this.swap(job, ctx.signal);
  }

  private async convert(job: ConvertJob, ctx: JobContext): Promise<Step> {
    const p = job.payload;
    let last = 0;
    let lastPct = -1;
    const r: ConvertResult = await this.converter.convert(p.source, p.sourceFormat, parseConvertTarget(p.target), {
      signal: ctx.signal,
      onProgress: ({ done, total }) => {
        const pct = total > 0 ? Math.min(99, Math.floor((done * 100) / total)) : 0;
        const now = Date.now();
        if (pct === lastPct || now - last < PROGRESS_EVERY_MS) return;
        last = now;
        lastPct = pct;
        ctx.progress(pct);
        void this.imageProgress(job.imageId!, pct);
      },
    });
    // a conversion's output is an image's bytes: stageBlob hashes its sha512 (only OCI blobs skip it)
    const result: NonNullable<ConvertPayload['result']> = { digest: r.blob.digest, sizeBytes: r.blob.sizeBytes, sha512: r.sha512! };
    if (r.md5) result.md5 = r.md5;
    return { next: 'swap', payload: { ...p, result }, progress: 100 };
  }

  private async swap(job: ConvertJob, signal: AbortSignal): Promise<Step> {
    const p = job.payload;
    const imageId = job.imageId!;
    const result = p.result;
    if (!result || !(await this.store.stat(result.digest))) {
      // collected meanwhile: convert again
      const again: ConvertPayload = { ...p };
      delete again.result;
      return { next: 'convert', payload: again };
    }
    signal.throwIfAborted();
    // what is stored is checked like an upload: the format engine's verdict on the converted bytes
    const report = await this.converter.inspect(result.digest);
    const blocking = report.findings.filter((f) => f.severity === 'error');
    if (report.format !== p.target || blocking.length > 0) {
      throw new Error(`the converted image did not pass inspection (${report.format}: ${blocking.map((f) => f.code).join(', ') || 'format mismatch'})`);
    }
    const checksums: Image['checksums'] = { sha512: result.sha512 };
    if (result.md5) checksums.md5 = result.md5;
    return updateWithRetry<Step>(
      10,
      async () => {
        const img = await this.images.repo.get(imageId);
        if (!img || img.state !== 'locked' || img.lockReason !== 'convert') return { fail: 'the image was no longer locked for this conversion' };
        const patch: ImagePatch = {
          state: transition(img.state, 'unlock'),
          lockReason: null,
          progress: null,
          stateReason: null,
          digest: result.digest,
          storedSize: result.sizeBytes,
          diskFormat: p.target,
          checksums,
          inspection: inspectionSummary(report),
          virtualSize: report.virtualSize === undefined ? (img.virtualSize ?? null) : Number(report.virtualSize),
        };
        const keep = {
          imageId,
          format: p.sourceFormat === 'iso' ? 'raw' : p.sourceFormat,
          optionsKey: '',
          digest: p.source,
          sizeBytes: p.sourceSize,
          createdAt: new Date(),
        };
        const done = await this.images.repo.finishConversion(imageId, patch, { fromStates: ['locked'], expectedVersion: img.version }, keep);
        if (!done) return LOST_RACE;
        this.images.events.publish('updated', done);
        return { done: true };
      },
      () => {
        throw new Error('the image kept changing while the conversion was committed');
      },
    );
  }

  private async imageProgress(imageId: string, pct: number): Promise<void> {
    const updated = await this.images.repo.update(imageId, { progress: pct }, { fromStates: ['locked'] }).catch(() => undefined);
    if (updated) this.images.events.publish('progress', updated);
  }

  /** Ends a failed conversion: the image goes back to `ready` as it was uploaded. */
  private async giveUp(job: ConvertJob, why: string): Promise<string | undefined> {
    const img = await this.images.repo.get(job.imageId!);
    if (!img) return 'the image is gone';
    if (img.state !== 'locked' || img.lockReason !== 'convert') return undefined;
    await this.unlock(
      img.id,
      `conversion to ${job.payload.target} failed (${why.slice(0, 500)}); the image is kept as uploaded (${img.inspection?.format ?? 'unknown format'})`,
    );
    return undefined;
  }

  private async unlock(imageId: string, reason: string): Promise<void> {
    await updateWithRetry(
      10,
      async () => {
        const now = await this.images.repo.get(imageId);
        if (!now || now.state !== 'locked' || now.lockReason !== 'convert') return;
        const freed = await this.images.repo.update(
          imageId,
          { state: transition(now.state, 'unlock'), lockReason: null, progress: null, stateReason: reason },
          { fromStates: ['locked'], expectedVersion: now.version },
        );
        if (!freed) return LOST_RACE;
        this.images.events.publish('updated', freed);
      },
      () => undefined,
    );
  }
}

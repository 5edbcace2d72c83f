/**
 * Convert-on-import (the policy Glance's image-conversion import plugin applies): once an ingest
 * has stored an image whose detected format is not the target — the project's `convert_to`, else
 * the server's `IMAGO_CONVERT_TO` — the stored blob is converted as a background job.
 *
 * The image is `locked` (lockReason `convert`) while the job runs; at the end, in one
 * transaction, the converted blob becomes the image's (digest, storedSize, diskFormat, checksums,
 * inspection) and the original is kept as a variant in its own format, so a download of
 * `?format=<original>` still returns the uploaded bytes. A failed conversion unlocks the image as
 * it was uploaded (stateReason says why).
 *
 * The job is a phase machine persisted in `jobs` (kind `convert`): `convert` (payload: source
 * blob, source format, target) → `swap` (payload also: the committed result). After a restart,
 * `resume` redoes a `convert` job from the start (a writer's state cannot be persisted mid-way),
 * finishes a `swap` job whose result blob still exists, and unlocks any image left locked for a
 * conversion that has no running job — no image stays locked forever. A job that was started
 * MAX_ATTEMPTS times gives up the same way a failed one does.
 */
import { LOST_RACE, updateWithRetry } from './images/update-with-retry.js';
import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Database } from '../db/database.js';
import type { Schema } from '../db/schema.js';
import type { BlobStore, Digest } from '../store/blob-store.js';
import type { ConvertFormat, Image, ImagePatch } from './images/image.js';
import type { ImageCatalog } from './images/image-catalog.js';
import { inspectionSummary } from './images/inspection-summary.js';
import { transition } from './images/lifecycle.js';
import { canConvertFrom, parseConvertTarget, type Converter, type ConvertResult } from './images/variants.js';

export interface ConvertPolicy {
  /** the server-wide target; absent = keep images as uploaded */
  serverTarget?: ConvertFormat;
}

interface ConvertPayload {
  phase: 'convert' | 'swap';
  source: Digest;
  sourceFormat: string;
  sourceSize: number;
  target: ConvertFormat;
  result?: { digest: Digest; sizeBytes: number; sha512: string; md5?: string };
}

const MAX_ATTEMPTS = 3;
const PROGRESS_EVERY_MS = 500;

export class ConvertRunner {
  private readonly db: Kysely<Schema>;
  private readonly running = new Map<string, AbortController>();
  private readonly done = new Set<Promise<unknown>>();
  private closing = false;

  constructor(
    database: Database,
    private readonly images: ImageCatalog,
    private readonly store: BlobStore,
    private readonly converter: Converter,
    private readonly policy: ConvertPolicy,
  ) {
    this.db = database.kysely;
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
   * The IngestCoordinator hook after a stored ingest: records the job, locks the image and starts the
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

  private async startFor(img: Image): Promise<Image> {
    if (this.closing || img.state !== 'ready' || !img.digest) return img;
    const target = await this.targetFor(img).catch(() => undefined);
    if (!target) return img;
    const payload: ConvertPayload = { phase: 'convert', source: img.digest, sourceFormat: img.inspection!.format, sourceSize: img.storedSize ?? 0, target };
    const jobId = randomUUID();
    const now = Date.now();
    // the job first: a crash between the two leaves a job whose image is not locked (closed by resume)
    await this.db
      .insertInto('jobs')
      .values({ id: jobId, kind: 'convert', image_id: img.id, state: 'running', payload: JSON.stringify(payload), progress: 0, attempts: 1, error: null, lease_owner: null, lease_until: null, created_at: now, updated_at: now })
      .execute();
    const locked = await this.images.repo.update(img.id, { state: transition(img.state, 'lock'), lockReason: 'convert', progress: 0 }, { fromStates: ['ready'], expectedVersion: img.version });
    if (!locked) {
      await this.endJob(jobId, 'failed', 'the image changed before the conversion could start');
      return (await this.images.repo.get(img.id)) ?? img;
    }
    this.images.events.publish('updated', locked);
    this.run(jobId, img.id, payload);
    return locked;
  }

  /** After a restart: resumes or closes every convert job left running, and frees stranded locks. */
  async resume(): Promise<{ resumed: number; unlocked: number }> {
    let resumed = 0;
    let unlocked = 0;
    const jobs = await this.db.selectFrom('jobs').selectAll().where('kind', '=', 'convert').where('state', '=', 'running').execute();
    const withJob = new Set<string>();
    for (const j of jobs) {
      if (this.running.has(j.image_id)) {
        withJob.add(j.image_id);
        continue;
      }
      const payload = JSON.parse(j.payload) as ConvertPayload;
      const img = await this.images.repo.get(j.image_id);
      if (!img || img.state !== 'locked' || img.lockReason !== 'convert' || img.digest !== payload.source) {
        // swapped just before the stop (done), or the image was never locked / is gone (failed)
        const swapped = img !== undefined && payload.result !== undefined && img.digest === payload.result.digest;
        await this.endJob(j.id, swapped ? 'done' : 'failed', swapped ? null : 'the image was no longer waiting for this conversion after a restart');
        continue;
      }
      withJob.add(j.image_id);
      if (j.attempts >= MAX_ATTEMPTS) {
        await this.giveUp(j.id, img, payload.target, `it was interrupted ${j.attempts} times`);
        continue;
      }
      await this.db.updateTable('jobs').set({ attempts: j.attempts + 1, updated_at: Date.now() }).where('id', '=', j.id).execute();
      this.run(j.id, j.image_id, payload);
      resumed++;
    }
    for (const img of await this.images.repo.inStates(['locked'])) {
      if (img.lockReason !== 'convert' || withJob.has(img.id)) continue;
      const freed = await this.images.repo.update(img.id, { state: transition(img.state, 'unlock'), lockReason: null, progress: null }, { fromStates: ['locked'], expectedVersion: img.version });
      if (freed) {
        this.images.events.publish('updated', freed);
        unlocked++;
      }
    }
    return { resumed, unlocked };
  }

  /** Stops running conversions and waits for them; their jobs stay `running` and resume at the next start. */
  async drain(): Promise<void> {
    this.closing = true;
    for (const ac of this.running.values()) ac.abort(new Error('server shutting down'));
    await Promise.allSettled([...this.done]);
  }

  private run(jobId: string, imageId: string, payload: ConvertPayload): void {
    const ac = new AbortController();
    this.running.set(imageId, ac);
    const p = this.execute(jobId, imageId, payload, ac.signal)
      .catch(async (e: unknown) => {
        if (ac.signal.aborted && this.closing) return; // resumed at the next start
        const img = await this.images.repo.get(imageId);
        if (img) await this.giveUp(jobId, img, payload.target, e instanceof Error ? e.message : String(e));
        else await this.endJob(jobId, 'failed', 'the image is gone');
      })
      .catch(() => undefined)
      .finally(() => {
        if (this.running.get(imageId) === ac) this.running.delete(imageId);
      });
    this.done.add(p);
    void p.finally(() => this.done.delete(p));
  }

  private async execute(jobId: string, imageId: string, payload: ConvertPayload, signal: AbortSignal): Promise<void> {
    let result = payload.phase === 'swap' ? payload.result : undefined;
    if (result && !(await this.store.stat(result.digest))) result = undefined; // collected meanwhile: convert again
    if (!result) {
      let last = 0;
      let lastPct = -1;
      const r: ConvertResult = await this.converter.convert(payload.source, payload.sourceFormat, parseConvertTarget(payload.target), {
        signal,
        onProgress: ({ done, total }) => {
          const pct = total > 0 ? Math.min(99, Math.floor((done * 100) / total)) : 0;
          const now = Date.now();
          if (pct === lastPct || now - last < PROGRESS_EVERY_MS) return;
          last = now;
          lastPct = pct;
          void this.progress(jobId, imageId, pct);
        },
      });
      result = { digest: r.blob.digest, sizeBytes: r.blob.sizeBytes, sha512: r.sha512 };
      if (r.md5) result.md5 = r.md5;
      const next: ConvertPayload = { ...payload, phase: 'swap', result };
      await this.db.updateTable('jobs').set({ payload: JSON.stringify(next), progress: 100, updated_at: Date.now() }).where('id', '=', jobId).execute();
    }
    signal.throwIfAborted();
    // what is stored is checked like an upload: the format engine's verdict on the converted bytes
    const report = await this.converter.inspect(result.digest);
    const blocking = report.findings.filter((f) => f.severity === 'error');
    if (report.format !== payload.target || blocking.length > 0) {
      throw new Error(`the converted image did not pass inspection (${report.format}: ${blocking.map((f) => f.code).join(', ') || 'format mismatch'})`);
    }
    const checksums: Image['checksums'] = { sha512: result.sha512 };
    if (result.md5) checksums.md5 = result.md5;
    await updateWithRetry(
      10,
      async () => {
        const img = await this.images.repo.get(imageId);
        if (!img || img.state !== 'locked' || img.lockReason !== 'convert') {
          await this.endJob(jobId, 'failed', 'the image was no longer locked for this conversion');
          return;
        }
        const patch: ImagePatch = {
          state: transition(img.state, 'unlock'),
          lockReason: null,
          progress: null,
          stateReason: null,
          digest: result.digest,
          storedSize: result.sizeBytes,
          diskFormat: payload.target,
          checksums,
          inspection: inspectionSummary(report),
          virtualSize: report.virtualSize === undefined ? (img.virtualSize ?? null) : Number(report.virtualSize),
        };
        const keep = { imageId, format: payload.sourceFormat === 'iso' ? 'raw' : payload.sourceFormat, optionsKey: '', digest: payload.source, sizeBytes: payload.sourceSize, createdAt: new Date() };
        const done = await this.images.repo.finishConversion(imageId, patch, { fromStates: ['locked'], expectedVersion: img.version }, keep);
        if (!done) return LOST_RACE;
        this.images.events.publish('updated', done);
        await this.endJob(jobId, 'done', null);
      },
      () => {
        throw new Error('the image kept changing while the conversion was committed');
      },
    );
  }

  private async progress(jobId: string, imageId: string, pct: number): Promise<void> {
    await this.db.updateTable('jobs').set({ progress: pct, updated_at: Date.now() }).where('id', '=', jobId).execute().catch(() => undefined);
    const updated = await this.images.repo.update(imageId, { progress: pct }, { fromStates: ['locked'] }).catch(() => undefined);
    if (updated) this.images.events.publish('progress', updated);
  }

  /** Ends a failed conversion: the image goes back to `ready` as it was uploaded. */
  private async giveUp(jobId: string, img: Image, target: string, why: string): Promise<void> {
    await this.endJob(jobId, 'failed', why);
    if (img.state !== 'locked' || img.lockReason !== 'convert') return;
    const reason = `conversion to ${target} failed (${why.slice(0, 500)}); the image is kept as uploaded (${img.inspection?.format ?? 'unknown format'})`;
    await updateWithRetry(
      10,
      async () => {
        const now = await this.images.repo.get(img.id);
        if (!now || now.state !== 'locked' || now.lockReason !== 'convert') return;
        const freed = await this.images.repo.update(img.id, { state: transition(now.state, 'unlock'), lockReason: null, progress: null, stateReason: reason }, { fromStates: ['locked'], expectedVersion: now.version });
        if (!freed) return LOST_RACE;
        this.images.events.publish('updated', freed);
      },
      () => undefined,
    );
  }

  private async endJob(jobId: string, state: 'done' | 'failed', error: string | null): Promise<void> {
    await this.db.updateTable('jobs').set({ state, error, updated_at: Date.now() }).where('id', '=', jobId).execute();
  }
}

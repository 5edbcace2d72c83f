/**
 * Imports as jobs (kind `import`, one phase: `download`), from one of two sources:
 * - a URL: the job records the URL so a restarted server resumes it; the bytes go through the
 *   same ingest path as an upload (IngestCoordinator.upload with kind `import`). Progress is the
 *   share of Content-Length received. Within one run a dropped connection resumes with Range
 *   (io/http-source.ts); across a restart the download starts over (a hash state cannot be
 *   persisted mid-stream). A cancelled import, or one the stopping server interrupts, fails: the
 *   image goes to `error`.
 * - the image's staged bytes (Glance's glance-direct): they went through the ingest path when
 *   they were staged; the job makes them the image's (`staged` → `ready`). A job a restart
 *   interrupted runs again and finds the work done or still to do, never half of it.
 * Ended jobs stay in the queue: they are the import's record (Glance's tasks, `list`).
 */
import { HttpSourceError, openUrl } from '../../io/http-source.js';
import { UrlNotAllowed, type UrlPolicy } from '../../io/url-policy.js';
import { DomainError } from '../errors.js';
import type { Image } from '../images/image.js';
import type { ImageCatalog } from '../images/image-catalog.js';
import type { IngestCoordinator } from '../images/ingest-coordinator.js';
import type { JobHandler, RunningJob } from './job-handler.js';
import type { Job, JobListQuery, JobQueue } from './job-queue.js';
import type { JobRunner } from './job-runner.js';

export interface ImportSettings {
  policy: UrlPolicy;
  maxImageBytes: number;
  connectTimeoutMs?: number;
  idleTimeoutMs?: number;
}

/** Where an import's bytes come from, and who asked for it (the record a task shows). */
export type ImportPayload = ({ source: 'url'; url: string } | { source: 'stage' }) & {
  /** the user who started the import */
  user?: string;
  /** the image's project when the import started (the task's owner) */
  project?: string;
};

export interface ImportRequester {
  user?: string;
}

type ImportPhase = 'download';

export class ImportJobs {
  readonly handler: JobHandler<ImportPayload, ImportPhase>;

  constructor(
    private readonly queue: JobQueue,
    private readonly runner: JobRunner,
    private readonly images: ImageCatalog,
    private readonly ingests: IngestCoordinator,
    private readonly settings: ImportSettings,
  ) {
    this.handler = {
      kind: 'import',
      firstPhase: 'download',
      onShutdown: 'fail',
      parse: parseImportPayload,
      step: (job, ctx) => this.download(job, ctx.signal),
      failed: (job, e, ctx) => this.failed(job, e, ctx.signal),
    };
    runner.register(this.handler);
  }

  /** Validates the URL against the policy, records the job and starts it; returns the image as it is now. */
  async start(imageId: string, url: string, by: ImportRequester = {}): Promise<Image> {
    try {
      this.settings.policy.checkUrl(url);
    } catch (e) {
      if (e instanceof UrlNotAllowed) throw new DomainError('URL_NOT_ALLOWED', e.message, { url: url.slice(0, 500), reason: e.reason });
      throw e;
    }
    const img = await this.images.get(imageId);
    if (img.state === 'importing') throw new DomainError('CONFLICT', `image ${imageId} is already receiving data; cancel that import first`, { id: imageId });
    if (img.state !== 'pending' && img.state !== 'error') {
      throw new DomainError('INVALID_STATE', `image ${imageId} already has data (state ${img.state}); create a new image to import other bytes`, {
        id: imageId,
      });
    }
    const job = await this.queue.enqueue({ kind: 'import', imageId, payload: withRequester({ source: 'url', url }, by, img) });
    this.runner.wake();
    // let the image enter `importing` before answering, so the client sees the import under way
    await Promise.race([
      this.runner.settled(job!.id, 2000),
      waitFor(() => this.images.get(imageId).then((i) => i.state !== img.state || i.version !== img.version), 2000),
    ]);
    return this.images.get(imageId).catch(() => img);
  }

  /**
   * Imports a staged image's bytes (they were inspected, hashed and accepted when staged): records
   * the job, starts it, and answers the image once the job has run (or after 2 s, still `staged`).
   */
  async startStaged(imageId: string, by: ImportRequester = {}): Promise<Image> {
    const img = await this.images.get(imageId);
    if (img.state !== 'staged') {
      throw new DomainError('INVALID_STATE', `image ${imageId} has no staged data to import (state ${img.state}); stage its data first`, {
        id: imageId,
        state: img.state,
      });
    }
    // one import at a time (Glance's import lock): a second request while the first is still queued
    // (a busy runner) is refused. Two requests at the same instant may both pass; the second job then
    // finds the image already made ready from its stage and ends with nothing to do.
    if ((await this.queue.unfinished('import')).some((j) => j.imageId === imageId)) {
      throw new DomainError('CONFLICT', `an import of image ${imageId} is already under way; wait for it to finish`, { id: imageId });
    }
    const job = await this.queue.enqueue({ kind: 'import', imageId, payload: withRequester({ source: 'stage' }, by, img) });
    this.runner.wake();
    await this.runner.settled(job!.id, 2000);
    return this.images.get(imageId).catch(() => img);
  }

  /** The import jobs of one image (ended ones too), newest first. */
  ofImage(imageId: string, limit = 100): Promise<Job[]> {
    return this.queue.list({ kind: 'import', imageId, sort: { key: 'createdAt', dir: 'desc' }, limit });
  }

  /** Import jobs, ended ones too: a page in the order asked, after the job `after` (an unknown one is INVALID_REQUEST). */
  async list(query: Omit<JobListQuery, 'kind'>): Promise<Job[]> {
    if (query.after !== undefined) {
      const marker = await this.queue.get(query.after);
      if (!marker || marker.kind !== 'import')
        throw new DomainError('INVALID_REQUEST', `no import job has the id ${query.after.slice(0, 80)}`, { marker: query.after.slice(0, 80) });
    }
    return this.queue.list({ ...query, kind: 'import' });
  }

  /** One import job, or undefined. */
  async get(jobId: string): Promise<Job | undefined> {
    const job = await this.queue.get(jobId);
    return job?.kind === 'import' ? job : undefined;
  }

  /** Cancels a running import: the image goes to `error` ("cancelled"). */
  async cancel(imageId: string): Promise<Image> {
    const jobId = this.runner.runningFor('import', imageId);
    if (!jobId) throw new DomainError('INVALID_STATE', `no import is running for image ${imageId}`, { id: imageId });
    this.runner.abort(jobId, new DomainError('CONFLICT', 'the import was cancelled'));
    for (let i = 0; i < 100 && this.runner.isRunning(jobId); i++) await new Promise((r) => setTimeout(r, 20));
    return this.images.get(imageId);
  }

  private async download(job: RunningJob<ImportPayload, ImportPhase>, signal: AbortSignal): Promise<{ done: true }> {
    if (job.payload.source === 'stage') {
      await this.ingests.importStaged(job.imageId!);
      return { done: true };
    }
    const src = await openUrl(job.payload.url, {
      policy: this.settings.policy,
      maxBytes: this.settings.maxImageBytes,
      signal,
      connectTimeoutMs: this.settings.connectTimeoutMs,
      idleTimeoutMs: this.settings.idleTimeoutMs,
    });
    await this.ingests.upload(job.imageId!, src.body, { announcedSize: src.totalBytes, kind: 'import', signal });
    return { done: true };
  }

  /** A source that failed (or a cancel) fails the image's ingest; other errors the ingest has recorded itself. */
  private async failed(job: RunningJob<ImportPayload, ImportPhase>, e: unknown, signal: AbortSignal): Promise<undefined> {
    if (e instanceof HttpSourceError || e instanceof UrlNotAllowed || (e instanceof Error && e.name === 'AbortError') || signal.aborted) {
      const error = e instanceof Error ? e.message : String(e);
      const from = job.payload.source === 'url' ? job.payload.url.slice(0, 200) : 'the staged data';
      const reason = signal.aborted ? `the import was cancelled` : `import from ${from} failed: ${error}`;
      await this.ingests.failIngest(job.imageId!, reason).catch(() => undefined);
    }
    return undefined;
  }
}

/** A stored payload as an import's: `{ url }` as older servers recorded it, or one of the sources. */
export function parseImportPayload(payload: unknown): ImportPayload {
  const p = (payload ?? {}) as Record<string, unknown>;
  const who: Pick<ImportPayload, 'user' | 'project'> = {};
  if (typeof p.user === 'string') who.user = p.user;
  if (typeof p.project === 'string') who.project = p.project;
  if (p.source === 'stage') return { source: 'stage', ...who };
  if ((p.source === 'url' || p.source === undefined) && typeof p.url === 'string') return { source: 'url', url: p.url, ...who };
  throw new Error('an import job without a URL or a staged source');
}

function withRequester(source: ImportPayload, by: ImportRequester, img: Image): ImportPayload {
  const p: ImportPayload = { ...source };
  if (by.user !== undefined) p.user = by.user;
  if (img.project !== undefined) p.project = img.project;
  return p;
}

async function waitFor(cond: () => Promise<boolean>, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond().catch(() => true)) return;
    await new Promise((r) => setTimeout(r, 10));
  }
}

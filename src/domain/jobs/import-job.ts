/**
 * URL imports as jobs (kind `import`, one phase: `download`). The job records the URL so a
 * restarted server resumes it; the bytes go through the same ingest path as an upload
 * (IngestCoordinator.upload with kind `import`). Progress is the share of Content-Length received.
 * Within one run a dropped connection resumes with Range (io/http-source.ts); across a restart
 * the download starts over (a hash state cannot be persisted mid-stream). A cancelled import, or
 * one the stopping server interrupts, fails: the image goes to `error`.
 */
import { HttpSourceError, openUrl } from '../../io/http-source.js';
import { UrlNotAllowed, type UrlPolicy } from '../../io/url-policy.js';
import { DomainError } from '../errors.js';
import type { Image } from '../images/image.js';
import type { ImageCatalog } from '../images/image-catalog.js';
import type { IngestCoordinator } from '../images/ingest-coordinator.js';
import type { JobHandler, RunningJob } from './job-handler.js';
import type { JobQueue } from './job-queue.js';
import type { JobRunner } from './job-runner.js';

export interface ImportSettings {
  policy: UrlPolicy;
  maxImageBytes: number;
  connectTimeoutMs?: number;
  idleTimeoutMs?: number;
}

interface ImportPayload {
  url: string;
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
      parse: (payload) => {
        const url = (payload as Partial<ImportPayload> | null)?.url;
        if (typeof url !== 'string') throw new Error('an import job without a URL');
        return { url };
      },
      step: (job, ctx) => this.download(job, ctx.signal),
      failed: (job, e, ctx) => this.failed(job, e, ctx.signal),
    };
    runner.register(this.handler);
  }

  /** Validates the URL against the policy, records the job and starts it; returns the image as it is now. */
  async start(imageId: string, url: string): Promise<Image> {
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
    const job = await this.queue.enqueue({ kind: 'import', imageId, payload: { url } satisfies ImportPayload });
    this.runner.wake();
    // let the image enter `importing` before answering, so the client sees the import under way
    await Promise.race([
      this.runner.settled(job!.id, 2000),
      waitFor(() => this.images.get(imageId).then((i) => i.state !== img.state || i.version !== img.version), 2000),
    ]);
    return this.images.get(imageId).catch(() => img);
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
      const reason = signal.aborted ? `the import was cancelled` : `import from ${job.payload.url.slice(0, 200)} failed: ${error}`;
      await this.ingests.failIngest(job.imageId!, reason).catch(() => undefined);
    }
    return undefined;
  }
}

async function waitFor(cond: () => Promise<boolean>, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond().catch(() => true)) return;
    await new Promise((r) => setTimeout(r, 10));
  }
}

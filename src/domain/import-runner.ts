/**
 * URL imports as background jobs. A job row (kind `import`) records the URL and its phase so a
 * restarted server resumes it; the bytes go through the same ingest path as an upload
 * (IngestCoordinator.upload with kind `import`). Progress is the share of Content-Length received.
 * Within one run a dropped connection resumes with Range (io/http-source.ts); across a restart
 * the download starts over (a hash state cannot be persisted mid-stream).
 */
import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Database } from '../db/database.js';
import type { Schema } from '../db/schema.js';
import { HttpSourceError, openUrl } from '../io/http-source.js';
import { UrlNotAllowed, type UrlPolicy } from '../io/url-policy.js';
import { DomainError } from './errors.js';
import type { Image } from './images/image.js';
import type { ImageCatalog } from './images/image-catalog.js';
import type { IngestCoordinator } from './images/ingest-coordinator.js';

export interface ImportSettings {
  policy: UrlPolicy;
  maxImageBytes: number;
  connectTimeoutMs?: number;
  idleTimeoutMs?: number;
}

export class ImportRunner {
  private readonly db: Kysely<Schema>;
  private readonly running = new Map<string, AbortController>();
  private readonly done = new Set<Promise<unknown>>();

  constructor(
    database: Database,
    private readonly images: ImageCatalog,
    private readonly ingests: IngestCoordinator,
    private readonly settings: ImportSettings,
  ) {
    this.db = database.kysely;
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
      throw new DomainError('INVALID_STATE', `image ${imageId} already has data (state ${img.state}); create a new image to import other bytes`, { id: imageId });
    }
    const now = Date.now();
    const jobId = randomUUID();
    await this.db
      .insertInto('jobs')
      .values({ id: jobId, kind: 'import', image_id: imageId, state: 'running', payload: JSON.stringify({ url }), progress: null, attempts: 1, error: null, lease_owner: null, lease_until: null, created_at: now, updated_at: now })
      .execute();
    const started = this.run(jobId, imageId, url);
    // let the image enter `importing` before answering, so the client sees the import under way
    await Promise.race([started.catch(() => undefined), waitFor(() => this.images.get(imageId).then((i) => i.state !== img.state || i.version !== img.version), 2000)]);
    return this.images.get(imageId).catch(() => img);
  }

  /** Cancels a running import: the image goes to `error` ("cancelled"). */
  async cancel(imageId: string): Promise<Image> {
    const ac = this.running.get(imageId);
    if (!ac) throw new DomainError('INVALID_STATE', `no import is running for image ${imageId}`, { id: imageId });
    ac.abort(new DomainError('CONFLICT', 'the import was cancelled'));
    for (let i = 0; i < 100 && this.running.has(imageId); i++) await new Promise((r) => setTimeout(r, 20));
    return this.images.get(imageId);
  }

  /** Resumes imports a previous process left running (after kill -9 or a restart). */
  async resume(): Promise<number> {
    const jobs = await this.db.selectFrom('jobs').selectAll().where('kind', '=', 'import').where('state', '=', 'running').execute();
    for (const j of jobs) {
      const { url } = JSON.parse(j.payload) as { url: string };
      await this.db.updateTable('jobs').set({ attempts: j.attempts + 1, updated_at: Date.now() }).where('id', '=', j.id).execute();
      void this.run(j.id, j.image_id, url);
    }
    return jobs.length;
  }

  /** Waits for running imports to end (used at shutdown and by tests). */
  async drain(): Promise<void> {
    for (const ac of this.running.values()) ac.abort(new Error('server shutting down'));
    await Promise.allSettled([...this.done]);
  }

  private run(jobId: string, imageId: string, url: string): Promise<void> {
    const ac = new AbortController();
    this.running.set(imageId, ac);
    const p = (async () => {
      let error: string | null = null;
      try {
        const src = await openUrl(url, {
          policy: this.settings.policy,
          maxBytes: this.settings.maxImageBytes,
          signal: ac.signal,
          connectTimeoutMs: this.settings.connectTimeoutMs,
          idleTimeoutMs: this.settings.idleTimeoutMs,
        });
        await this.ingests.upload(imageId, src.body, { announcedSize: src.totalBytes, kind: 'import', signal: ac.signal });
      } catch (e) {
        error = e instanceof Error ? e.message : String(e);
        if (e instanceof HttpSourceError || e instanceof UrlNotAllowed || (e instanceof Error && e.name === 'AbortError') || ac.signal.aborted) {
          const reason = ac.signal.aborted ? `the import was cancelled` : `import from ${url.slice(0, 200)} failed: ${error}`;
          await this.ingests.failIngest(imageId, reason).catch(() => undefined);
        }
      } finally {
        if (this.running.get(imageId) === ac) this.running.delete(imageId);
        await this.db
          .updateTable('jobs')
          .set({ state: error ? 'failed' : 'done', error, updated_at: Date.now() })
          .where('id', '=', jobId)
          .execute()
          .catch(() => undefined);
      }
    })();
    this.done.add(p);
    void p.finally(() => this.done.delete(p));
    return p;
  }
}

async function waitFor(cond: () => Promise<boolean>, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond().catch(() => true)) return;
    await new Promise((r) => setTimeout(r, 10));
  }
}

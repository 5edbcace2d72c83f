/**
 * Resumable uploads (the tus door's domain side): an upload that arrives in several requests,
 * across dropped connections and server restarts, and is still one ingest through the one path.
 *
 *   create ─► IngestCoordinator.reserve: image `importing`, announced size reserved (quota)
 *   PATCH  ─► part file <data>/uploads-resumable/<id> (appended, fdatasync'd: its length is the offset)
 *                 └─► followed from byte 0 by IngestCoordinator.upload(…, { resume }) — unwrap,
 *                     hashes, inspection, staging exactly as a PUT body — waiting for bytes to come
 *   last byte ─► the ingest's verdict and commit (ready | error with the findings) ─► row and file removed
 *
 * The ingest of an upload runs in the process that receives its bytes. After a restart it is
 * started again on the next PATCH and reads the part file from its start: hashes and inspector
 * state are rebuilt from the bytes already received (one sequential read of them), then it follows
 * the new ones. The part file is scratch data of this node, never in the content-addressed store:
 * a crash leaves nothing half-written there (the staging of the ingest is swept as for any upload).
 */
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { GrowingFile } from '../../io/growing-file.js';
import { DomainError } from '../errors.js';
import type { Image } from './image.js';
import { IngestSuspended, type IngestCoordinator } from './ingest-coordinator.js';

export interface ResumableUpload {
  id: string;
  imageId: string;
  /** the announced length (tus Upload-Length) */
  sizeBytes: number;
  /** tus Upload-Metadata, decoded */
  metadata: Record<string, string | null>;
  /** who created it (a principal's label), for the audit and the owner check */
  createdBy: string;
  createdAt: Date;
  expiresAt: Date;
}

/** The persistence port (src/db/upload-repository.ts). */
export interface ResumableUploadRepository {
  createResumable(u: ResumableUpload): Promise<void>;
  resumable(id: string): Promise<ResumableUpload | undefined>;
  deleteResumable(id: string): Promise<boolean>;
  /** every upload, or those that expired before `expiredBefore`, or those of image `imageId` */
  resumables(opts?: { expiredBefore?: Date; imageId?: string }): Promise<ResumableUpload[]>;
}

export interface ResumableUploadsOptions {
  /** where part files live (a local directory of this node) */
  dir: string;
  /** an upload not finished this long after its creation expires */
  ttlMs: number;
  /**
   * an upload that receives nothing this long has its ingest suspended (its staging copy deleted,
   * its hasher and inspector freed); the next PATCH rebuilds it from the part file. Default 5 min.
   */
  suspendIdleMs?: number;
  now?: () => number;
}

interface Live {
  file: GrowingFile;
  abort: AbortController;
  /** the ingest: the ready image, or its failure */
  done: Promise<Image>;
  /** settles once the outcome is recorded and the upload's row and file are gone */
  settled: Promise<void>;
  failure?: unknown;
  /** PATCHes writing now */
  appending: number;
  /** suspends the ingest once nothing arrives for suspendIdleMs */
  idleTimer?: NodeJS.Timeout;
}

const ID_RE = /^[0-9a-f-]{36}$/;

/**
 * How an upload ended, remembered: its image, or the error later requests get — with, when its
 * ingest failed, that failure (`cause`) for the request that sent the last byte.
 */
type Ended = { error: unknown; cause?: unknown } | { upload: ResumableUpload; image: Image };

export class ResumableUploads {
  private readonly live = new Map<string, Promise<Live>>();
  /** the Live each entry of `live` resolved to (one per upload: a suspended one is replaced) */
  private readonly current = new Map<string, Live>();
  /**
   * How uploads this process ended, for the requests that come after: a failure is answered as
   * such; a finished upload still answers HEAD (offset = length) and a repeated last PATCH with its
   * image, so a client whose connection dropped while it waited for the verdict sees it completed.
   */
  private readonly ended = new Map<string, Ended>();

  constructor(
    private readonly repo: ResumableUploadRepository,
    private readonly ingests: IngestCoordinator,
    private readonly opts: ResumableUploadsOptions,
  ) {}

  get ttlMs(): number {
    return this.opts.ttlMs;
  }

  private now(): number {
    return this.opts.now?.() ?? Date.now();
  }

  private path(id: string): string {
    return join(this.opts.dir, id);
  }

  /**
   * A new upload of `sizeBytes` into image `imageId` (the caller has checked the right to upload
   * to it): the image starts its ingest now (`importing`, quota reserved), its bytes come later.
   */
  async create(u: { id: string; imageId: string; sizeBytes: number; metadata: Record<string, string | null>; createdBy: string }): Promise<ResumableUpload> {
    if (!ID_RE.test(u.id)) throw new DomainError('INVALID_REQUEST', `upload id ${u.id.slice(0, 64)} is not a UUID`);
    if (!Number.isSafeInteger(u.sizeBytes) || u.sizeBytes < 0) throw new DomainError('INVALID_REQUEST', 'Upload-Length must be a byte count');
    await mkdir(this.opts.dir, { recursive: true });
    await this.ingests.reserve(u.imageId, u.id, u.sizeBytes);
    const now = this.now();
    const rec: ResumableUpload = { ...u, createdAt: new Date(now), expiresAt: new Date(now + this.opts.ttlMs) };
    try {
      const f = await GrowingFile.create(this.path(u.id));
      await f.close();
      await this.repo.createResumable(rec);
    } catch (e) {
      await rm(this.path(u.id), { force: true });
      await this.ingests
        .failIngest(u.imageId, `the upload could not be started (${(e as Error).message}); upload the image again`, { ingestId: u.id, kind: 'upload' })
        .catch(() => undefined);
      throw e;
    }
    return rec;
  }

  /** The upload and its offset (the bytes the server holds durably). UPLOAD_NOT_FOUND when unknown. */
  async status(id: string): Promise<{ upload: ResumableUpload; offset: number; image?: Image }> {
    // looked up again after each wait: the ingest may end meanwhile (its end is recorded before
    // its row and file go)
    const upload = this.endedStatus(id) ?? (ID_RE.test(id) ? await this.repo.resumable(id) : undefined);
    if (!upload) {
      // the ingest may have ended while the row was read (its end is remembered before the row is
      // deleted): a creation-with-upload on PostgreSQL was answered 404 by its own finish hook so
      const ended = this.endedStatus(id);
      if (ended) return ended;
      throw notFound(id);
    }
    if ('image' in upload) return upload;
    const live = this.live.get(id);
    const offset = live ? (await live).file.length : await GrowingFile.lengthOf(this.path(id));
    if (offset === undefined) {
      const ended = this.endedStatus(id);
      if (ended) return ended;
      throw notFound(id, 'its received bytes are not on this server');
    }
    return { upload, offset };
  }

  /** How the upload ended, if this process ended it: its status (finished), or its error thrown. */
  private endedStatus(id: string): { upload: ResumableUpload; offset: number; image: Image } | undefined {
    const ended = this.ended.get(id);
    if (ended === undefined) return undefined;
    if ('error' in ended) throw ended.error;
    return { upload: ended.upload, offset: ended.upload.sizeBytes, image: ended.image };
  }

  /**
   * Appends one request's bytes at `offset` (which must be the current offset); the ingest follows
   * them. Returns the new offset. Whatever stops the request, the bytes received are kept.
   */
  async append(id: string, offset: number, part: AsyncIterable<Uint8Array>): Promise<number> {
    const { upload, offset: now, image } = await this.status(id);
    if (offset !== now) {
      throw new DomainError('CONFLICT', `the request starts at byte ${offset}, but upload ${id} holds ${now} bytes; send the bytes from ${now}`, {
        upload: id,
        offset: now,
      });
    }
    // finished: an empty repeat of the last PATCH (the client did not see its answer)
    if (image || this.endedStatus(id)) return now;
    const live = await this.ensureLive(upload);
    // (synchronously after the await: an idle suspension cannot come in between)
    live.appending++;
    clearTimeout(live.idleTimer);
    try {
      return await live.file.append(part, {
        max: upload.sizeBytes,
        tooLong: (n) =>
          new DomainError('SIZE_LIMIT', `upload ${id} was announced as ${upload.sizeBytes} bytes; ${n} is more — create a new upload with the right length`, {
            upload: id,
          }),
        check: () => {
          if (live.failure !== undefined) throw live.failure;
        },
      });
    } finally {
      live.appending--;
      if (live.appending === 0 && live.file.length < upload.sizeBytes && live.failure === undefined) {
        live.idleTimer = setTimeout(() => this.suspendIdle(id, live), this.opts.suspendIdleMs ?? 5 * 60_000);
        live.idleTimer.unref();
      }
    }
  }

  /**
   * Once every byte is there: the ingest's outcome — the ready image, or its refusal (UNSAFE_IMAGE
   * ...). Asked by the request that sent the last byte, so an ingest that already failed (and whose
   * upload is gone, "not found" to any later request) is answered with its own error: on PostgreSQL
   * a hostile image's refusal could land between the last append and this look, and the PATCH was
   * answered 404 instead of 422.
   */
  async finished(id: string): Promise<Image> {
    try {
      return await this.outcome(id);
    } catch (e) {
      const ended = this.ended.get(id);
      if (ended && 'cause' in ended) throw ended.cause;
      throw e;
    }
  }

  private async outcome(id: string): Promise<Image> {
    const { upload, offset, image } = await this.status(id);
    if (image) return image;
    // (no wait between this look and ensureLive: an ingest that just ended is not started again)
    const ended = this.endedStatus(id);
    if (ended) return ended.image;
    if (offset !== upload.sizeBytes) {
      throw new DomainError('CONFLICT', `upload ${id} holds ${offset} of its ${upload.sizeBytes} bytes; send the rest first`, { upload: id, offset });
    }
    const live = await this.ensureLive(upload);
    await live.settled;
    return live.done;
  }

  /** tus termination (and expiry): the ingest ends, the image fails with `reason`, the bytes go. */
  async terminate(id: string, reason: string): Promise<void> {
    const upload = ID_RE.test(id) ? await this.repo.resumable(id) : undefined;
    if (!upload) throw notFound(id);
    await this.end(upload, reason);
  }

  /**
   * The image is being deleted: its uploads go (a running ingest is stopped, and its upload
   * removed when it ends).
   */
  async imageDeleted(imageId: string): Promise<void> {
    for (const u of await this.repo.resumables({ imageId })) {
      const live = this.live.get(u.id);
      if (live) {
        // its follower may be waiting for bytes: wake it with the reason (the ingest ends, the upload is dropped)
        (await live.catch(() => undefined))?.abort.abort(new DomainError('CONFLICT', 'the image was deleted during the upload'));
        continue;
      }
      await rm(this.path(u.id), { force: true });
      await this.repo.deleteResumable(u.id);
      this.remember(u.id, { error: notFound(u.id, 'its image was deleted') });
    }
  }

  /** Ends the uploads past their lifetime (on a schedule and at GC); returns how many. */
  async expire(): Promise<number> {
    let n = 0;
    for (const u of await this.repo.resumables({ expiredBefore: new Date(this.now()) })) {
      await this.end(u, `the resumable upload ${u.id} expired at ${u.expiresAt.toISOString()} before all its bytes arrived; upload the image again`);
      n++;
    }
    return n;
  }

  /** What GC reports: the uploads in flight and the bytes their part files hold (scratch, not blobs). */
  async inFlightBytes(): Promise<{ count: number; bytes: number }> {
    let count = 0;
    let bytes = 0;
    for (const u of await this.repo.resumables()) {
      count++;
      bytes += (await GrowingFile.lengthOf(this.path(u.id))) ?? 0;
    }
    return { count, bytes };
  }

  /** The ingest ids (= upload ids) start-up recovery must leave `importing`: they resume. */
  async inFlight(): Promise<Set<string>> {
    return new Set((await this.repo.resumables()).map((u) => u.id));
  }

  /**
   * After a restart: uploads whose bytes all arrived before the stop get their ingest now (no
   * request will come to start it). Returns how many were started.
   */
  async resumeComplete(onError: (id: string, e: unknown) => void): Promise<number> {
    let n = 0;
    for (const u of await this.repo.resumables()) {
      if (this.live.has(u.id) || (await GrowingFile.lengthOf(this.path(u.id))) !== u.sizeBytes) continue;
      n++;
      this.ensureLive(u).then(
        (l) => l.done.catch(() => undefined),
        (e: unknown) => onError(u.id, e),
      );
    }
    return n;
  }

  /** At shutdown: the running ingests stop without failing their images (they resume at the next start). */
  async suspendAll(): Promise<void> {
    const lives = await Promise.all([...this.live.values()].map((p) => p.catch(() => undefined)));
    for (const l of lives) l?.abort.abort(new IngestSuspended('the server is stopping'));
    await Promise.all(lives.map((l) => l?.settled));
  }

  // ---- internals ----------------------------------------------------------------------------

  private ensureLive(u: ResumableUpload): Promise<Live> {
    let p = this.live.get(u.id);
    if (!p) {
      p = this.startLive(u);
      this.live.set(u.id, p);
      p.catch(() => {
        if (this.live.get(u.id) === p) this.live.delete(u.id);
      });
    }
    return p;
  }

  private async startLive(u: ResumableUpload): Promise<Live> {
    const file = await GrowingFile.open(this.path(u.id));
    const abort = new AbortController();
    const done = this.ingests.upload(u.imageId, file.follow(u.sizeBytes, abort.signal), {
      announcedSize: u.sizeBytes,
      resume: u.id,
      signal: abort.signal,
    });
    const live: Live = { file, abort, done, settled: Promise.resolve(), appending: 0 };
    this.current.set(u.id, live);
    live.settled = done.then(
      (image) => {
        this.remember(u.id, { upload: u, image });
        return this.drop(u.id, live);
      },
      (e: unknown) => {
        live.failure = e;
        if (e instanceof IngestSuspended) {
          this.forget(u.id, live);
          return file.close().catch(() => undefined);
        }
        // later requests: not found, saying why (the request that was running got the error itself)
        this.remember(u.id, { error: notFound(u.id, `it ended: ${e instanceof Error ? e.message : String(e)}`), cause: e });
        return this.drop(u.id, live);
      },
    );
    live.settled = live.settled.catch(() => undefined);
    return live;
  }

  /** the last 1,000 ends, in memory (after a restart an ended upload is simply not found) */
  private remember(id: string, why: Ended): void {
    this.ended.set(id, why);
    if (this.ended.size > 1000) this.ended.delete(this.ended.keys().next().value!);
  }

  private async drop(id: string, live: Live): Promise<void> {
    this.forget(id, live);
    await live.file.remove().catch(() => undefined);
    await this.repo.deleteResumable(id);
  }

  private forget(id: string, live: Live): void {
    clearTimeout(live.idleTimer);
    if (this.current.get(id) !== live) return;
    this.current.delete(id);
    this.live.delete(id);
  }

  /**
   * Nothing arrived for a while: the ingest stops without failing (IngestSuspended), its staging is
   * deleted and its memory freed; the upload stays, and its next PATCH starts the ingest again from
   * the part file. The entry is forgotten at once, so that PATCH does not find the stopping one.
   */
  private suspendIdle(id: string, live: Live): void {
    if (live.appending > 0 || this.current.get(id) !== live) return;
    this.forget(id, live);
    live.abort.abort(new IngestSuspended(`upload ${id} received nothing for a while`));
  }

  private async end(u: ResumableUpload, reason: string): Promise<void> {
    const live = this.live.get(u.id);
    const l = live ? await live.catch(() => undefined) : undefined;
    const failure = new DomainError('CONFLICT', reason, { upload: u.id });
    if (l) {
      l.abort.abort(failure);
      // the ingest has failed the image and the upload is dropped (row, file) when this settles
      await l.settled;
    } else {
      await this.ingests.failIngest(u.imageId, reason, { ingestId: u.id, kind: 'upload' });
      const file = await GrowingFile.open(this.path(u.id)).catch(() => undefined);
      if (file) await file.remove();
      await this.repo.deleteResumable(u.id);
    }
    this.remember(u.id, { error: notFound(u.id, 'it was terminated or expired') });
  }
}

export function notFound(id: string, why?: string): DomainError {
  return new DomainError(
    'UPLOAD_NOT_FOUND',
    `upload ${id.slice(0, 64)} is not open${why ? ` (${why})` : ''}: it never existed, finished, was terminated, or expired; create a new upload with POST /api/v1/uploads`,
    { upload: id.slice(0, 64) },
  );
}

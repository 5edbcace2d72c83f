/**
 * Ingest coordination: an image receives its bytes here, from every door (upload, URL import,
 * stage, OCI push, later clone). Starting moves the image to `importing` and reserves the project's
 * quota; the bytes run through the one ingest path (ingest.ts); finishing records the outcome
 * (`ready`, or `staged` for a stage until `importStaged`, or `error` with the reason) and hands the
 * stored image to the StoredHook (convert-on-import). Every state change is a lifecycle transition.
 */
import type { FormatName } from '../../formats/format.js';
import { randomUUID } from 'node:crypto';
import type { InspectLimits } from '../../formats/limits.js';
import type { BlobStore, Digest } from '../../store/blob-store.js';
import { DomainError, conflict, notFound } from '../errors.js';
import type { ImageEvents } from './events.js';
import { withoutExternalNames } from './external-names.js';
import type { DiskFormat, Image, ImagePatch, ImageRepository } from './image.js';
import type { ImageCatalog } from './image-catalog.js';
import { ingest, refusalReason, withClaims, type IngestOutcome } from './ingest.js';
import { inspectionSummary } from './inspection-summary.js';
import { canTransition, transition, type ImageState } from './lifecycle.js';
import { quotaExceeded } from './quota-exceeded.js';
import { LOST_RACE, updateWithRetry } from './update-with-retry.js';

export interface IngestSettings {
  maxImageBytes: number;
  md5: boolean;
  inspectLimits: Partial<InspectLimits>;
}

/** How bytes come in: an upload, a URL import, or a stage (kept `staged` until imported). */
export type IngestKind = NonNullable<Image['ingestKind']>;
/**
 * The reason to abort a running ingest with when it must stop without failing the image: a
 * resumable upload's pipeline torn down while its bytes stay on disk (it is rebuilt from them on
 * the next PATCH). The image stays `importing`, its reservation held.
 */
export class IngestSuspended extends Error {
  constructor(why: string) {
    super(why);
    this.name = 'IngestSuspended';
  }
}

/** What runs once an ingest stored an image (convert-on-import): returns the image as it is then; never throws. */
export type StoredHook = (image: Image) => Promise<Image>;

/** Detected format (format engine names) → Glance disk_format; undefined: none (left unset). */
const GLANCE_DISK_FORMAT = {
  raw: 'raw',
  qcow2: 'qcow2',
  vmdk: 'vmdk',
  vdi: 'vdi',
  vhd: 'vhd',
  vhdx: 'vhdx',
  iso: 'iso',
  parallels: 'ploop',
  qcow: undefined,
  qed: undefined,
  luks: undefined,
  ova: undefined,
} as const satisfies Record<FormatName, DiskFormat | undefined>;

export class IngestCoordinator {
  /** ingests running in this process, by image id: delete cancels them */
  private readonly running = new Map<string, AbortController>();
  private storedHook: StoredHook | undefined;
  private readonly repo: ImageRepository;
  private readonly events: ImageEvents;

  constructor(
    private readonly catalog: ImageCatalog,
    private readonly store: BlobStore,
    private readonly settings: IngestSettings,
  ) {
    this.repo = catalog.repo;
    this.events = catalog.events;
  }

  /** Sets what runs after every successful ingest (the composition root wires convert-on-import). */
  whenStored(hook: StoredHook): void {
    this.storedHook = hook;
  }

  /** The image is being deleted: its ingest running in this process stops (and fails). */
  imageDeleted(id: string): void {
    this.running.get(id)?.abort(new DomainError('CONFLICT', 'the image was deleted during the upload'));
  }

  /**
   * Streams `body` into the image through the one ingest path. One ingest per image at a time:
   * a second concurrent upload gets CONFLICT. The image ends `ready` (safe), `error` (refused:
   * UNSAFE_IMAGE is thrown after the state is saved) or `error` (interrupted).
   */
  upload(
    id: string,
    body: AsyncIterable<Uint8Array>,
    opts: {
      announcedSize?: number;
      kind?: IngestKind;
      signal?: AbortSignal;
      /**
       * The ingest id of an ingest `reserve` started (a resumable upload): the image is already
       * `importing` with its quota reserved, and this call feeds it its bytes — again after a restart.
       */
      resume?: string;
      /** the digest the bytes must hash to (an OCI push names it): any other is DIGEST_MISMATCH */
      expectDigest?: Digest;
    } = {},
  ): Promise<Image> {
    return this.run(id, opts, (started, signal, onProgress) =>
      ingest(body, this.store, {
        signal,
        claimedFormat: started.diskFormat,
        claimedContainerFormat: started.containerFormat,
        announcedSize: opts.announcedSize,
        maxImageBytes: Math.min(this.settings.maxImageBytes, started.quotaRoom ?? Infinity),
        inspectLimits: this.settings.inspectLimits,
        md5: this.settings.md5,
        onProgress,
      }),
    );
  }

  /**
   * An ingest whose bytes already ran through the pipeline — hashed, inspected, staged and
   * committed content-addressed by `ingest()` before this image existed, without its claims (an OCI
   * containerDisk layer's disk, ingested while the layer arrived: domain/registry/
   * early-layer-ingests.ts) — becomes the image's, through the same lifecycle as `upload`: start
   * (quota reserved for `announcedSize`), the image's claims applied to the report (`withClaims`:
   * a declared format the bytes are not is refused as the ingest would have), the size limit and
   * quota room, the verdict (UNSAFE_IMAGE, the image in `error`), finish. The caller makes sure the
   * outcome's blob is still stored.
   */
  adoptIngested(id: string, outcome: IngestOutcome, opts: { announcedSize?: number; expectDigest?: Digest } = {}): Promise<Image> {
    return this.run(id, opts, (started) =>
      Promise.resolve(
        withClaims(outcome, {
          claimedFormat: started.diskFormat,
          claimedContainerFormat: started.containerFormat,
          maxImageBytes: Math.min(this.settings.maxImageBytes, started.quotaRoom ?? Infinity),
        }),
      ),
    );
  }

  /** One ingest of image `id`: start (or resume), `produce` the outcome, record it; every failure is recorded on the image. */
  private async run(
    id: string,
    opts: { announcedSize?: number; kind?: IngestKind; signal?: AbortSignal; resume?: string; expectDigest?: Digest },
    produce: (started: Image & { quotaRoom?: number }, signal: AbortSignal, onProgress: (bytes: number) => void) => Promise<IngestOutcome>,
  ): Promise<Image> {
    const img = await this.catalog.get(id);
    const what = opts.kind ?? 'upload';
    // an announced empty upload is refused before the image changes state (it stays as it was);
    // an import runs in the background, so its refusal is recorded on the image (below)
    if (opts.announcedSize === 0 && what !== 'import') throw emptyImage(id, what);
    const ingestId = opts.resume ?? randomUUID();
    const started =
      opts.resume === undefined
        ? await this.start(img, ingestId, opts.kind ?? 'upload', opts.announcedSize, opts.expectDigest)
        : await this.resumed(img, opts.resume);
    const quotaRoom = started.quotaRoom;
    const abort = new AbortController();
    this.running.set(id, abort);
    const onAbort = () => abort.abort(opts.signal?.reason);
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    let lastProgress = -1;
    try {
      const outcome = await produce(started, abort.signal, (bytes) => {
        if (!opts.announcedSize) return;
        const pct = Math.min(99, Math.floor((bytes * 100) / opts.announcedSize));
        if (pct === lastProgress) return;
        lastProgress = pct;
        // progress is advisory: a failed update must not become an unhandled rejection
        this.progress(id, ingestId, pct).catch(() => undefined);
      });
      // what the server stores and answers never names files on the uploader's machine
      outcome.report = { ...outcome.report, findings: withoutExternalNames(outcome.report.findings) };
      if (outcome.kind === 'refused') {
        await this.finish(id, ingestId, 'fail', { stateReason: refusalReason(outcome.report), inspection: inspectionSummary(outcome.report), progress: null });
        throw new DomainError('UNSAFE_IMAGE', `image refused: ${refusalReason(outcome.report)}`, { findings: outcome.report.findings });
      }
      if (outcome.blob.sizeBytes === 0) {
        const empty = emptyImage(id, what);
        await this.finish(id, ingestId, 'fail', { stateReason: empty.message, inspection: inspectionSummary(outcome.report), progress: null });
        throw empty;
      }
      const r = outcome.report;
      const patch: ImagePatch = {
        digest: outcome.blob.digest,
        storedSize: outcome.blob.sizeBytes,
        virtualSize: r.virtualSize === undefined ? null : Number(r.virtualSize),
        checksums: outcome.checksums,
        inspection: inspectionSummary(r),
        progress: 100,
        stateReason: null,
      };
      if (!started.diskFormat && GLANCE_DISK_FORMAT[r.format]) patch.diskFormat = GLANCE_DISK_FORMAT[r.format]!;
      if (!started.containerFormat) patch.containerFormat = r.format === 'ova' ? 'ova' : 'bare';
      if (started.project !== undefined) await this.checkStoredQuota(started.project, id, outcome.blob, quotaRoom);
      // staged bytes are the image's, committed and counted, but it becomes ready only when imported
      if (what === 'stage') return await this.finish(id, ingestId, 'stage', patch);
      const stored = await this.finish(id, ingestId, 'succeed', patch);
      return this.storedHook ? await this.storedHook(stored) : stored;
    } catch (e) {
      if (e instanceof DomainError && (e.code === 'UNSAFE_IMAGE' || e.code === 'EMPTY_IMAGE')) throw e;
      // suspended, not failed: the image keeps its state and reservation for the next resume
      if (abort.signal.reason instanceof IngestSuspended) throw abort.signal.reason;
      if (
        e instanceof DomainError &&
        e.code === 'SIZE_LIMIT' &&
        quotaRoom !== undefined &&
        quotaRoom < this.settings.maxImageBytes &&
        started.project !== undefined
      ) {
        // the cap that hit was the project's remaining quota, not the server's size limit
        const q = await this.quotaError(started.project, id);
        await this.finish(id, ingestId, 'fail', { stateReason: q.message, progress: null }).catch(() => undefined);
        throw q;
      }
      const cause = abort.signal.aborted && abort.signal.reason !== undefined ? abort.signal.reason : e;
      const reason =
        cause instanceof DomainError
          ? cause.message
          : `the ${what} was interrupted (${cause instanceof Error ? cause.message : String(cause)}); ${what} the image again`;
      await this.finish(id, ingestId, 'fail', { stateReason: reason, progress: null }).catch(() => undefined);
      throw e instanceof DomainError ? e : new DomainError('CONFLICT', reason, { id });
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
      if (this.running.get(id) === abort) this.running.delete(id);
    }
  }

  /**
   * The import of a staged image: its bytes, accepted and committed when they were staged, become
   * the image's (`staged` → `ready`, one conditional update), then the StoredHook runs. An image
   * already made ready from its stage answers as it is (a resumed import job after a restart).
   */
  async importStaged(id: string): Promise<Image> {
    const ready = await updateWithRetry(
      5,
      async () => {
        const img = await this.catalog.get(id);
        if (img.state === 'ready' && img.ingestKind === 'stage') return { image: img, moved: false };
        if (img.state !== 'staged') throw notStaged(img);
        const updated = await this.repo.update(
          id,
          { state: transition(img.state, 'succeed'), progress: 100 },
          { fromStates: ['staged'], expectedVersion: img.version },
        );
        if (!updated) return LOST_RACE;
        this.events.publish('updated', updated);
        return { image: updated, moved: true };
      },
      () => {
        throw conflict(`image ${id} is changing too fast to import; try again`);
      },
    );
    return ready.moved && this.storedHook ? await this.storedHook(ready.image) : ready.image;
  }

  /**
   * Marks an ingest of `kind` that failed before or outside `upload` (e.g. a URL that could not be
   * fetched, a resumable upload that expired). With `ingestId`, only while the image is still that
   * ingest's.
   */
  async failIngest(id: string, reason: string, opts: { kind?: IngestKind; ingestId?: string } = {}): Promise<void> {
    const { kind = 'import', ingestId } = opts;
    await updateWithRetry(
      5,
      async () => {
        const img = await this.repo.get(id);
        if (!img || !['pending', 'importing', 'error'].includes(img.state)) return;
        if (ingestId !== undefined && img.ingestId !== ingestId) return;
        const updated = await this.repo.update(
          id,
          { state: transition(img.state, 'fail'), stateReason: reason, progress: null, ingestId: null, reservedBytes: 0, ingestKind: kind },
          { expectedVersion: img.version },
        );
        if (!updated) return LOST_RACE;
        this.events.publish('updated', updated);
      },
      () => undefined,
    );
  }

  /**
   * Starts the ingest of a resumable upload: the image moves to `importing` with the whole
   * announced size reserved against the project's quota, as `upload` does, but no byte is read
   * yet: `upload(id, bytes, { resume: ingestId })` feeds it, in this process or after a restart.
   */
  async reserve(id: string, ingestId: string, announcedSize: number): Promise<Image> {
    if (announcedSize === 0) throw emptyImage(id, 'upload');
    if (announcedSize > this.settings.maxImageBytes) {
      throw new DomainError(
        'SIZE_LIMIT',
        `the announced size (${announcedSize} bytes) is over the ${this.settings.maxImageBytes}-byte limit for one image; upload a smaller image or ask an administrator to raise IMAGO_MAX_IMAGE_SIZE`,
        { size: announcedSize, limit: this.settings.maxImageBytes },
      );
    }
    const { quotaRoom: _room, ...img } = await this.start(await this.catalog.get(id), ingestId, 'upload', announcedSize);
    return img;
  }

  /**
   * Start-up recovery after a crash or kill -9: uploads that were running are interrupted (their
   * staging is debris) and staging is swept — except the ingests of resumable uploads
   * (`resumable(ingestId)`), whose received bytes are kept and which resume on their next request.
   * Imports are resumed by the import runner. Returns what was done, for the log.
   */
  async recover(resumable: (ingestId: string) => boolean = () => false): Promise<{ interrupted: number; swept: number }> {
    let interrupted = 0;
    for (const img of await this.repo.inStates(['importing'])) {
      if (img.ingestKind === 'upload' && img.ingestId !== undefined && resumable(img.ingestId)) continue;
      const reason =
        img.ingestKind === 'import'
          ? 'the import was interrupted by a server restart; it starts again'
          : img.ingestKind === 'stage'
            ? 'the stage was interrupted by a server restart; stage the image data again'
            : 'the upload was interrupted by a server restart; upload the image again';
      const patch: ImagePatch = { state: transition(img.state, 'fail'), stateReason: reason, progress: null, ingestId: null, reservedBytes: 0 };
      const done = await this.repo.update(img.id, patch, { fromStates: ['importing'], expectedVersion: img.version });
      if (done) interrupted++;
    }
    const swept = await this.store.sweepStaging(new Date());
    return { interrupted, swept };
  }

  // ---- internals ----------------------------------------------------------------------------

  /**
   * Moves the image to `importing`. For a project image this happens under the project's quota
   * lock: the announced size is reserved (staging) and checked against the stored and staging
   * limits before any byte is accepted; returns how many stored bytes the ingest may still add.
   * `expectDigest`: the bytes are expected to be that blob (an OCI layer becoming the image), which
   * the project's usage may count already (as a registry blob): that much is not reserved again.
   */
  private async start(img: Image, ingestId: string, kind: IngestKind, announcedSize?: number, expectDigest?: Digest): Promise<Image & { quotaRoom?: number }> {
    if (!canTransition(img.state, 'start')) throw cannotStart(img);
    const patch: ImagePatch = {
      state: transition(img.state, 'start'),
      ingestKind: kind,
      ingestId,
      progress: announcedSize ? 0 : null,
      stateReason: null,
      reservedBytes: announcedSize ?? 0,
    };
    const cond = { fromStates: ['pending', 'error'] as ImageState[], expectedVersion: img.version };
    let quotaRoom: number | undefined;
    const project = img.project;
    const started =
      project === undefined
        ? await this.repo.update(img.id, patch, cond)
        : await this.repo.underProjectLock(project, async (tx) => {
            const { limits } = tx;
            // the usage once the image holds its bytes: a registry blob it will be counts once
            const used = await tx.usage(img.id, expectDigest);
            const add = announcedSize ?? 0;
            const countedNow = expectDigest === undefined ? 0 : (await tx.usage(img.id)).storedBytes - used.storedBytes;
            const reserve = Math.max(0, add - countedNow);
            patch.reservedBytes = reserve;
            const fix = 'delete images the project no longer needs, or ask an administrator to raise the limit';
            if (kind === 'import' && limits.imports !== undefined && used.imports + 1 > limits.imports) {
              throw quotaExceeded(
                project,
                'imports',
                limits.imports,
                used.imports,
                1,
                'wait for a running import to finish, or ask an administrator to raise the limit',
              );
            }
            if (limits.stagingBytes !== undefined && used.stagingBytes + reserve > limits.stagingBytes) {
              throw quotaExceeded(
                project,
                'stagingBytes',
                limits.stagingBytes,
                used.stagingBytes,
                reserve,
                'wait for running uploads to finish, or ask an administrator to raise the limit',
              );
            }
            if (limits.storedBytes !== undefined) {
              const committed = used.storedBytes + used.stagingBytes;
              if (committed + add > limits.storedBytes) throw quotaExceeded(project, 'storedBytes', limits.storedBytes, committed, add, fix);
              quotaRoom = limits.storedBytes - committed;
            }
            return tx.update(img.id, patch, cond);
          });
    if (!started) {
      const now = await this.catalog.get(img.id);
      throw cannotStart(now);
    }
    this.events.publish('updated', started);
    return quotaRoom === undefined ? started : { ...started, quotaRoom };
  }

  /**
   * An ingest `reserve` started, taken up again: the image must still be `importing` under that
   * ingest id. Returns it with the quota room `start` would have given.
   */
  private async resumed(img: Image, ingestId: string): Promise<Image & { quotaRoom?: number }> {
    if (img.state !== 'importing' || img.ingestId !== ingestId) {
      throw new DomainError(
        'CONFLICT',
        `image ${img.id} is no longer waiting for this upload (it is ${img.state}); create a new upload for it, or a new image`,
        { id: img.id, state: img.state },
      );
    }
    const project = img.project;
    if (project === undefined) return img;
    const room = await this.repo.underProjectLock(project, async (tx) => {
      if (tx.limits.storedBytes === undefined) return undefined;
      const used = await tx.usage(img.id);
      return tx.limits.storedBytes - (used.storedBytes + used.stagingBytes);
    });
    return room === undefined ? img : { ...img, quotaRoom: room };
  }

  /** At commit: the actual stored size (known only now for unannounced or compressed uploads) must still fit. */
  private async checkStoredQuota(project: string, id: string, blob: { digest: Digest; sizeBytes: number }, quotaRoom: number | undefined): Promise<void> {
    if (quotaRoom === undefined) return;
    const size = blob.sizeBytes;
    await this.repo.underProjectLock(project, async (tx) => {
      if (tx.limits.storedBytes === undefined) return;
      // as the project will count once the image holds the blob (a registry blob of it then counts once)
      const used = await tx.usage(id, blob.digest);
      const committed = used.storedBytes + used.stagingBytes;
      if (committed + size > tx.limits.storedBytes) {
        // the caller marks the image failed (after this transaction); the committed blob has no
        // reference and is collected by GC
        throw quotaExceeded(
          project,
          'storedBytes',
          tx.limits.storedBytes,
          committed,
          size,
          'delete images the project no longer needs, or ask an administrator to raise the limit',
        );
      }
    });
  }

  private async quotaError(project: string, id: string): Promise<DomainError> {
    const p = await this.repo.underProjectLock(project, async (tx) => ({ limits: tx.limits, used: await tx.usage(id) }));
    const committed = p.used.storedBytes + p.used.stagingBytes;
    return quotaExceeded(
      project,
      'storedBytes',
      p.limits.storedBytes ?? 0,
      committed,
      undefined,
      'delete images the project no longer needs, or ask an administrator to raise the limit',
    );
  }

  private async progress(id: string, ingestId: string, pct: number): Promise<void> {
    const img = await this.repo.get(id);
    if (!img || img.ingestId !== ingestId || img.state !== 'importing') return;
    const updated = await this.repo.update(id, { progress: pct }, { fromStates: ['importing'], expectedVersion: img.version });
    if (updated) this.events.publish('progress', updated);
  }

  private async finish(id: string, ingestId: string, event: 'succeed' | 'stage' | 'fail', patch: ImagePatch): Promise<Image> {
    return updateWithRetry(
      10,
      async () => {
        const img = await this.repo.get(id);
        if (!img || img.state === 'deleting') throw notFound(id);
        if (img.ingestId !== ingestId || img.state !== 'importing') {
          throw conflict(`image ${id} was changed by another operation during this upload (now ${img.state})`);
        }
        const updated = await this.repo.update(
          id,
          { ...patch, state: transition(img.state, event), ingestId: null, reservedBytes: 0 },
          { fromStates: ['importing'], expectedVersion: img.version },
        );
        if (!updated) return LOST_RACE;
        this.events.publish('updated', updated);
        return updated;
      },
      () => {
        throw conflict(`image ${id} could not be updated after the upload; try again`);
      },
    );
  }
}

function cannotStart(img: Image): DomainError {
  if (img.state === 'importing') {
    return new DomainError(
      'CONFLICT',
      `image ${img.id} is already receiving data (another upload or import is running); wait for it to finish or delete the image`,
      {
        id: img.id,
        state: img.state,
      },
    );
  }
  return new DomainError(
    'INVALID_STATE',
    `image ${img.id} already has data (state ${img.state}); image data is immutable — create a new image to upload other bytes`,
    {
      id: img.id,
      state: img.state,
    },
  );
}

function notStaged(img: Image): DomainError {
  return new DomainError(
    'INVALID_STATE',
    `image ${img.id} has no staged data to import (state ${img.state}); stage its data first (PUT /image/v2/images/${img.id}/stage), then import it`,
    { id: img.id, state: img.state },
  );
}

/** Every image type holds a disk or file; 0 bytes is always a mistake (a wrong path, an empty pipe). */
function emptyImage(id: string, what: IngestKind): DomainError {
  return new DomainError(
    'EMPTY_IMAGE',
    `the ${what} of image ${id} had no bytes (0 bytes after unwrapping); send the image file's contents — for an empty disk, create a blank one (qemu-img create -f qcow2 disk.qcow2 10G) and upload that`,
    { id },
  );
}

/**
 * The image service: catalog operations, the lifecycle and the one ingest path, behind every door.
 * Framework-free; the HTTP edges (REST now, Glance and OCI later) call these methods and map
 * DomainError codes to their wire shapes.
 */
import { createHash, randomUUID } from 'node:crypto';
import { PassThrough, type Readable } from 'node:stream';
import type { InspectLimits } from '../../formats/limits.js';
import type { ImageReport } from '../../inspect/inspect-stream.js';
import { exactLength } from '../../io/exact-length.js';
import { BlobNotFound, type BlobStore, type ByteRange, type Digest } from '../../store/blob-store.js';
import { DEFAULT_PERMS } from '../access.js';
import { DomainError, conflict, notFound } from '../errors.js';
import type { ImageEvents } from './events.js';
import type { DiskFormat, Image, ImagePage, ImagePatch, ImageQuery, ImageRepository, ImageVariant, InspectionSummary } from './image.js';
import type { CreateImageInput } from './image-input.js';
import { withoutExternalDetails, withoutExternalNames } from './external-names.js';
import { ingest, refusalReason } from './ingest.js';
import { LOST_RACE, updateWithRetry } from './update-with-retry.js';
import { canTransition, transition, type ImageEvent, type ImageState } from './lifecycle.js';
import { isSameFormat, streamableWith, type ConvertOptions, type Converter, type ConvertTarget } from './variants.js';

export interface ImageServiceSettings {
  maxImageBytes: number;
  md5: boolean;
  inspectLimits: Partial<InspectLimits>;
}

/**
 * An image's bytes in a requested format: a stored blob (the original when the format is the
 * image's own, else a variant), or — for a streamable target not stored yet — the output of a
 * conversion running now, which is stored as a variant as it is sent.
 */
export type VariantRead =
  | { kind: 'blob'; image: Image; source: 'original' | 'variant'; format: string; digest: Digest; sizeBytes: number; sha512?: string; md5?: string; range?: ByteRange; stream?: Readable }
  | { kind: 'converting'; image: Image; format: string; stream?: Readable };

/** What runs once an ingest stored an image (convert-on-import): returns the image as it is then; never throws. */
export type StoredHook = (image: Image) => Promise<Image>;

/** Detected format (format engine names) → Glance disk_format. */
const GLANCE_DISK_FORMAT: Partial<Record<string, DiskFormat>> = {
  raw: 'raw',
  qcow2: 'qcow2',
  vmdk: 'vmdk',
  vdi: 'vdi',
  vhd: 'vhd',
  vhdx: 'vhdx',
  iso: 'iso',
  parallels: 'ploop',
};

export class ImageService {
  /** ingests running in this process, by image id: delete cancels them */
  private readonly running = new Map<string, AbortController>();
  /** variant conversions running in this process, by image, format and options: one at a time each */
  private readonly conversions = new Map<string, Promise<ImageVariant>>();
  private storedHook: StoredHook | undefined;

  constructor(
    readonly repo: ImageRepository,
    readonly store: BlobStore,
    readonly events: ImageEvents,
    private readonly settings: ImageServiceSettings,
    /** absent: downloads in another format are UNAVAILABLE */
    readonly converter?: Converter,
  ) {}

  /** Sets what runs after every successful ingest (the composition root wires convert-on-import). */
  whenStored(hook: StoredHook): void {
    this.storedHook = hook;
  }

  async create(input: CreateImageInput, idempotencyKey?: string, ownership: Partial<Pick<Image, 'project' | 'owner' | 'visibility' | 'perms'>> = {}): Promise<{ image: Image; replayed: boolean }> {
    const now = new Date();
    const image: Image = {
      id: randomUUID(),
      name: input.name,
      description: input.description,
      type: input.type ?? 'OS',
      diskFormat: input.diskFormat,
      containerFormat: input.containerFormat,
      architecture: input.architecture,
      osDistro: input.osDistro,
      osVersion: input.osVersion,
      osType: input.osType,
      minDisk: input.minDisk ?? 0,
      minRam: input.minRam ?? 0,
      persistent: input.persistent ?? false,
      properties: input.properties ?? {},
      tags: input.tags ?? [],
      state: 'pending',
      usedBy: 0,
      checksums: {},
      createdAt: now,
      updatedAt: now,
      version: 1,
      visibility: ownership.visibility ?? 'project',
      perms: ownership.perms ?? DEFAULT_PERMS,
      reservedBytes: 0,
    };
    if (ownership.project !== undefined) image.project = ownership.project;
    if (ownership.owner !== undefined) image.owner = ownership.owner;
    const idem = idempotencyKey === undefined ? undefined : { key: idempotencyKey, requestHash: requestHash({ ...input, project: ownership.project }) };
    const project = image.project;
    const result =
      project === undefined
        ? await this.repo.create(image, idem)
        : await this.repo.underProjectLock(project, (tx) =>
            tx.create(image, idem, async () => {
              if (tx.limits.images === undefined) return;
              const used = await tx.usage();
              if (used.images + 1 > tx.limits.images) {
                throw quotaExceeded(project, 'images', tx.limits.images, used.images, 1, 'delete images the project no longer needs, or ask an administrator to raise the limit');
              }
            }),
          );
    if (!result.replayed) this.events.publish('created', result.image);
    return result;
  }

  async get(id: string): Promise<Image> {
    const img = await this.repo.get(id);
    if (!img || img.state === 'deleting') throw notFound(id);
    return img;
  }

  list(query: ImageQuery): Promise<ImagePage> {
    return this.repo.list(query);
  }

  async update(id: string, patch: ImagePatch): Promise<Image> {
    return updateWithRetry(
      5,
      async () => {
        const img = await this.get(id);
        const updated = await this.repo.update(id, patch, { expectedVersion: img.version, fromStates: liveStates });
        if (!updated) return LOST_RACE;
        this.events.publish('updated', updated);
        return updated;
      },
      () => {
        throw conflict(`image ${id} is changing too fast to update; try again`);
      },
    );
  }

  disable(id: string): Promise<Image> {
    return this.move(id, 'disable', {});
  }

  enable(id: string): Promise<Image> {
    return this.move(id, 'enable', {});
  }

  /** Removes the image record. Its blob stays until GC finds no image referencing it. */
  async delete(id: string): Promise<void> {
    const img = await this.get(id);
    if (img.state === 'locked') {
      throw new DomainError('IMAGE_LOCKED', `image ${id} is locked by a ${img.lockReason ?? 'running operation'}; wait for it to finish, then delete`, { id });
    }
    if (img.usedBy > 0) {
      throw new DomainError('IMAGE_IN_USE', `image ${id} is used by ${img.usedBy} disk(s); detach or delete them first`, { id, usedBy: img.usedBy });
    }
    await this.move(id, 'delete', {});
    this.running.get(id)?.abort(new DomainError('CONFLICT', 'the image was deleted during the upload'));
    await this.repo.remove(id);
    this.events.publish('deleted', { ...img, state: 'deleting' });
  }

  /**
   * Streams `body` into the image through the one ingest path. One ingest per image at a time:
   * a second concurrent upload gets CONFLICT. The image ends `ready` (safe), `error` (refused:
   * UNSAFE_IMAGE is thrown after the state is saved) or `error` (interrupted).
   */
  async upload(id: string, body: AsyncIterable<Uint8Array>, opts: { announcedSize?: number; kind?: 'upload' | 'import'; signal?: AbortSignal } = {}): Promise<Image> {
    const img = await this.get(id);
    const what = opts.kind === 'import' ? 'import' : 'upload';
    // an announced empty upload is refused before the image changes state (it stays as it was);
    // an import runs in the background, so its refusal is recorded on the image (below)
    if (opts.announcedSize === 0 && what === 'upload') throw emptyImage(id, what);
    const ingestId = randomUUID();
    const started = await this.startIngest(img, ingestId, opts.kind ?? 'upload', opts.announcedSize);
    const quotaRoom = started.quotaRoom;
    const abort = new AbortController();
    this.running.set(id, abort);
    const onAbort = () => abort.abort(opts.signal?.reason);
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    let lastProgress = -1;
    try {
      const source = abortable(body, abort.signal);
      const outcome = await ingest(source, this.store, {
        claimedFormat: started.diskFormat,
        claimedContainerFormat: started.containerFormat,
        announcedSize: opts.announcedSize,
        maxImageBytes: Math.min(this.settings.maxImageBytes, started.quotaRoom ?? Infinity),
        inspectLimits: this.settings.inspectLimits,
        md5: this.settings.md5,
        onProgress: (bytes) => {
          if (!opts.announcedSize) return;
          const pct = Math.min(99, Math.floor((bytes * 100) / opts.announcedSize));
          if (pct === lastProgress) return;
          lastProgress = pct;
          // progress is advisory: a failed update must not become an unhandled rejection
          this.progress(id, ingestId, pct).catch(() => undefined);
        },
      });
      // what the server stores and answers never names files on the uploader's machine
      outcome.report = { ...outcome.report, findings: withoutExternalNames(outcome.report.findings) };
      if (outcome.kind === 'refused') {
        await this.finishIngest(id, ingestId, 'fail', { stateReason: refusalReason(outcome.report), inspection: summary(outcome.report), progress: null });
        throw new DomainError('UNSAFE_IMAGE', `image refused: ${refusalReason(outcome.report)}`, { findings: outcome.report.findings });
      }
      if (outcome.blob.sizeBytes === 0) {
        const empty = emptyImage(id, what);
        await this.finishIngest(id, ingestId, 'fail', { stateReason: empty.message, inspection: summary(outcome.report), progress: null });
        throw empty;
      }
      const r = outcome.report;
      const patch: ImagePatch = {
        digest: outcome.blob.digest,
        storedSize: outcome.blob.sizeBytes,
        virtualSize: r.virtualSize === undefined ? null : Number(r.virtualSize),
        checksums: outcome.checksums,
        inspection: summary(r),
        progress: 100,
        stateReason: null,
      };
      if (!started.diskFormat && GLANCE_DISK_FORMAT[r.format]) patch.diskFormat = GLANCE_DISK_FORMAT[r.format]!;
      if (!started.containerFormat) patch.containerFormat = r.format === 'ova' ? 'ova' : 'bare';
      if (started.project !== undefined) await this.checkStoredQuota(started.project, id, outcome.blob.sizeBytes, quotaRoom);
      const stored = await this.finishIngest(id, ingestId, 'succeed', patch);
      return this.storedHook ? await this.storedHook(stored) : stored;
    } catch (e) {
      if (e instanceof DomainError && (e.code === 'UNSAFE_IMAGE' || e.code === 'EMPTY_IMAGE')) throw e;
      if (e instanceof DomainError && e.code === 'SIZE_LIMIT' && quotaRoom !== undefined && quotaRoom < this.settings.maxImageBytes && started.project !== undefined) {
        // the cap that hit was the project's remaining quota, not the server's size limit
        const q = await this.quotaError(started.project, id);
        await this.finishIngest(id, ingestId, 'fail', { stateReason: q.message, progress: null }).catch(() => undefined);
        throw q;
      }
      const cause = abort.signal.aborted && abort.signal.reason !== undefined ? abort.signal.reason : e;
      const reason =
        cause instanceof DomainError
          ? cause.message
          : `the ${what} was interrupted (${cause instanceof Error ? cause.message : String(cause)}); ${what} the image again`;
      await this.finishIngest(id, ingestId, 'fail', { stateReason: reason, progress: null }).catch(() => undefined);
      throw e instanceof DomainError ? e : new DomainError('CONFLICT', reason, { id });
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
      if (this.running.get(id) === abort) this.running.delete(id);
    }
  }

  /** Marks an ingest that failed before or outside `upload` (e.g. a URL that could not be fetched). */
  async failIngest(id: string, reason: string): Promise<void> {
    await updateWithRetry(
      5,
      async () => {
        const img = await this.repo.get(id);
        if (!img || !['pending', 'importing', 'error'].includes(img.state)) return;
        const updated = await this.repo.update(id, { state: 'error', stateReason: reason, progress: null, ingestId: null, reservedBytes: 0 }, { expectedVersion: img.version });
        if (!updated) return LOST_RACE;
        this.events.publish('updated', updated);
      },
      () => undefined,
    );
  }

  /** The image's bytes (or an inclusive range of them). */
  async openFile(id: string, range?: ByteRange): Promise<{ image: Image; stream: Readable }> {
    const img = await this.downloadable(id);
    if (range && (range.start > range.end || range.end >= (img.storedSize ?? 0))) {
      throw new DomainError('RANGE_NOT_SATISFIABLE', `range ${range.start}-${range.end} is outside the image's ${img.storedSize} bytes`, { size: img.storedSize });
    }
    return { image: img, stream: await this.readBlob(img, img.digest, img.storedSize ?? 0, range) };
  }

  /**
   * The image's bytes as `target`. The image's own format (writer defaults) is the original blob;
   * a stored variant is a plain blob read (`rangeFor` picks the byte range once the size is
   * known); otherwise the stored blob is converted now. A streamable target is sent while it is
   * made and stored as a variant at the same time (the stream ends only once the variant is
   * recorded; a client that leaves early does not stop it); any other target is converted to a
   * variant first and then read like one. One conversion per image, format and options runs at
   * a time: a concurrent request waits for it and reads the variant. `head`: look, convert nothing.
   */
  async openVariant(id: string, target: ConvertTarget, opts: { rangeFor?: (sizeBytes: number, digest: Digest) => ByteRange | null; head?: boolean } = {}): Promise<VariantRead> {
    const img = await this.downloadable(id);
    const detected = img.inspection?.format;
    if (isSameFormat(detected, target)) {
      const size = img.storedSize ?? 0;
      const range = opts.rangeFor?.(size, img.digest) ?? undefined;
      const base = { kind: 'blob', image: img, source: 'original', format: target.format, digest: img.digest, sizeBytes: size, sha512: img.checksums.sha512, md5: img.checksums.md5, range } as const;
      if (opts.head) return base;
      return { ...base, stream: await this.readBlob(img, img.digest, size, range) };
    }
    const stored = await this.readVariant(img, target, opts);
    if (stored) return stored;
    if (opts.head) return { kind: 'converting', image: img, format: target.format };
    if (!this.converter) throw new DomainError('UNAVAILABLE', `this server does not convert images; download image ${id} as it is (${detected ?? 'unknown format'})`);
    const key = `${id}\n${target.format}\n${target.optionsKey}`;
    const running = this.conversions.get(key);
    if (running || !streamableWith(target)) {
      await (running ?? this.makeVariant(img, target, key));
      const made = await this.readVariant(img, target, opts);
      if (made) return made;
      throw conflict(`the ${target.format} variant of image ${id} disappeared while it was made; try again`);
    }
    const tap = new PassThrough({ highWaterMark: 1024 * 1024 });
    // the consumer (the HTTP edge) handles the stream's errors; a consumer already gone must not crash the process
    tap.on('error', () => undefined);
    let onStarted!: () => void;
    const started = new Promise<void>((resolve) => (onStarted = resolve));
    const made = this.makeVariant(img, target, key, { tap, onStarted });
    let handedOut = false;
    made.then(
      () => tap.end(),
      // an error after the stream was handed out resets the response; before, the caller gets it thrown
      (e: unknown) => (handedOut ? tap.destroy(e instanceof Error ? e : new Error(String(e))) : tap.destroy()),
    );
    // a refusal (bad option, unsafe source) comes before the first byte: it becomes a clean error reply
    await Promise.race([started, made]);
    handedOut = true;
    return { kind: 'converting', image: img, format: target.format, stream: tap };
  }

  /**
   * Start-up recovery after a crash or kill -9: uploads that were running are interrupted
   * (their staging is debris), deletions are finished, staging is swept. Imports are resumed by
   * the import runner. Returns what was done, for the log.
   */
  async recover(): Promise<{ interrupted: number; deleted: number; swept: number }> {
    let interrupted = 0;
    let deleted = 0;
    for (const img of await this.repo.inStates(['importing', 'deleting'])) {
      if (img.state === 'deleting') {
        if (await this.repo.remove(img.id)) deleted++;
      } else {
        const reason =
          img.ingestKind === 'import'
            ? 'the import was interrupted by a server restart; it starts again'
            : 'the upload was interrupted by a server restart; upload the image again';
        const done = await this.repo.update(img.id, { state: 'error', stateReason: reason, progress: null, ingestId: null, reservedBytes: 0 }, { fromStates: ['importing'], expectedVersion: img.version });
        if (done) interrupted++;
      }
    }
    const swept = await this.store.sweepStaging(new Date());
    await this.converter?.sweep();
    return { interrupted, deleted, swept };
  }

  // ---- internals ----------------------------------------------------------------------------

  /** The image, when its bytes may be read now. */
  private async downloadable(id: string): Promise<Image & { digest: Digest }> {
    const img = await this.get(id);
    if (img.state === 'disabled') {
      throw new DomainError('INVALID_STATE', `image ${id} is disabled; an administrator must enable it before it can be downloaded`, { id, state: img.state });
    }
    if (!img.digest || (img.state !== 'ready' && img.state !== 'locked')) {
      throw new DomainError('INVALID_STATE', `image ${id} has no data yet (state ${img.state}); upload or import it first`, { id, state: img.state });
    }
    return { ...img, digest: img.digest };
  }

  /**
   * A stored blob of `sizeBytes` (as recorded) for sending. A blob missing or of another size on
   * storage now (damaged after it was stored) is refused before any byte; one that changes while
   * it is read errors its stream (exactLength), so the transfer is aborted, never cut short.
   */
  private async readBlob(img: Image, digest: Digest, sizeBytes: number, range: ByteRange | undefined): Promise<Readable> {
    const lost = (what: string) =>
      new DomainError('BLOB_NOT_FOUND', `the data of image ${img.id} ${what} (ImageLost); upload it again`, { id: img.id, digest });
    const info = await this.store.stat(digest);
    if (!info) throw lost('is missing from storage');
    if (info.sizeBytes !== sizeBytes) throw lost(`is damaged in storage: ${info.sizeBytes} bytes are there, ${sizeBytes} were stored`);
    let stream: Readable;
    try {
      stream = await this.store.read(digest, range);
    } catch (e) {
      if (e instanceof BlobNotFound) throw lost('is missing from storage');
      throw e;
    }
    const expected = range ? range.end - range.start + 1 : sizeBytes;
    return exactLength(stream, expected, (actual) => lost(`changed in storage while it was read (${actual} bytes of ${expected} read)`));
  }

  /** A stored variant as a blob read; undefined when there is none (or its blob is gone: it is made again). */
  private async readVariant(img: Image, target: ConvertTarget, opts: { rangeFor?: (sizeBytes: number, digest: Digest) => ByteRange | null; head?: boolean }): Promise<VariantRead | undefined> {
    const v = await this.repo.variant(img.id, target.format, target.optionsKey);
    if (!v) return undefined;
    const range = opts.rangeFor?.(v.sizeBytes, v.digest) ?? undefined;
    const base = { kind: 'blob', image: img, source: 'variant', format: target.format, digest: v.digest, sizeBytes: v.sizeBytes, range } as const;
    if (opts.head) return base;
    // a variant blob collected meanwhile is made again; one damaged in storage is refused (its
    // digest stays taken, so making it again would not replace the damaged copy)
    if (!(await this.store.stat(v.digest))) return undefined;
    return { ...base, stream: await this.readBlob(img, v.digest, v.sizeBytes, range) };
  }

  /** Converts the image's blob to `target`, stores it and records the variant. */
  private makeVariant(img: Image & { digest: Digest }, target: ConvertTarget, key: string, opts: ConvertOptions = {}): Promise<ImageVariant> {
    const converter = this.converter!;
    const made = (async () => {
      const r = await converter.convert(img.digest, img.inspection?.format, target, opts);
      const v: ImageVariant = { imageId: img.id, format: target.format, optionsKey: target.optionsKey, digest: r.blob.digest, sizeBytes: r.blob.sizeBytes, createdAt: new Date() };
      // false: the image was deleted meanwhile; the blob then has no reference and GC collects it
      await this.repo.putVariant(v);
      return v;
    })();
    this.conversions.set(key, made);
    made
      .finally(() => {
        if (this.conversions.get(key) === made) this.conversions.delete(key);
      })
      .catch(() => undefined);
    return made;
  }

  /**
   * Moves the image to `importing`. For a project image this happens under the project's quota
   * lock: the announced size is reserved (staging) and checked against the stored and staging
   * limits before any byte is accepted; returns how many stored bytes the ingest may still add.
   */
  private async startIngest(img: Image, ingestId: string, kind: 'upload' | 'import', announcedSize?: number): Promise<Image & { quotaRoom?: number }> {
    if (!canTransition(img.state, 'start')) throw this.cannot(img, 'start');
    const patch: ImagePatch = { state: 'importing', ingestKind: kind, ingestId, progress: announcedSize ? 0 : null, stateReason: null, reservedBytes: announcedSize ?? 0 };
    const cond = { fromStates: ['pending', 'error'] as ImageState[], expectedVersion: img.version };
    let quotaRoom: number | undefined;
    const project = img.project;
    const started =
      project === undefined
        ? await this.repo.update(img.id, patch, cond)
        : await this.repo.underProjectLock(project, async (tx) => {
            const { limits } = tx;
            const used = await tx.usage(img.id);
            const add = announcedSize ?? 0;
            const fix = 'delete images the project no longer needs, or ask an administrator to raise the limit';
            if (kind === 'import' && limits.imports !== undefined && used.imports + 1 > limits.imports) {
              throw quotaExceeded(project, 'imports', limits.imports, used.imports, 1, 'wait for a running import to finish, or ask an administrator to raise the limit');
            }
            if (limits.stagingBytes !== undefined && used.stagingBytes + add > limits.stagingBytes) {
              throw quotaExceeded(project, 'stagingBytes', limits.stagingBytes, used.stagingBytes, add, 'wait for running uploads to finish, or ask an administrator to raise the limit');
            }
            if (limits.storedBytes !== undefined) {
              const committed = used.storedBytes + used.stagingBytes;
              if (committed + add > limits.storedBytes) throw quotaExceeded(project, 'storedBytes', limits.storedBytes, committed, add, fix);
              quotaRoom = limits.storedBytes - committed;
            }
            return tx.update(img.id, patch, cond);
          });
    if (!started) {
      const now = await this.get(img.id);
      throw this.cannot(now, 'start');
    }
    this.events.publish('updated', started);
    return quotaRoom === undefined ? started : { ...started, quotaRoom };
  }

  /** At commit: the actual stored size (known only now for unannounced or compressed uploads) must still fit. */
  private async checkStoredQuota(project: string, id: string, size: number, quotaRoom: number | undefined): Promise<void> {
    if (quotaRoom === undefined) return;
    await this.repo.underProjectLock(project, async (tx) => {
      if (tx.limits.storedBytes === undefined) return;
      const used = await tx.usage(id);
      const committed = used.storedBytes + used.stagingBytes;
      if (committed + size > tx.limits.storedBytes) {
        // the caller marks the image failed (after this transaction); the committed blob has no
        // reference and is collected by GC
        throw quotaExceeded(project, 'storedBytes', tx.limits.storedBytes, committed, size, 'delete images the project no longer needs, or ask an administrator to raise the limit');
      }
    });
  }

  private async quotaError(project: string, id: string): Promise<DomainError> {
    const p = await this.repo.underProjectLock(project, async (tx) => ({ limits: tx.limits, used: await tx.usage(id) }));
    const committed = p.used.storedBytes + p.used.stagingBytes;
    return quotaExceeded(project, 'storedBytes', p.limits.storedBytes ?? 0, committed, undefined, 'delete images the project no longer needs, or ask an administrator to raise the limit');
  }

  private async progress(id: string, ingestId: string, pct: number): Promise<void> {
    const img = await this.repo.get(id);
    if (!img || img.ingestId !== ingestId || img.state !== 'importing') return;
    const updated = await this.repo.update(id, { progress: pct }, { fromStates: ['importing'], expectedVersion: img.version });
    if (updated) this.events.publish('progress', updated);
  }

  private async finishIngest(id: string, ingestId: string, event: 'succeed' | 'fail', patch: ImagePatch): Promise<Image> {
    return updateWithRetry(
      10,
      async () => {
        const img = await this.repo.get(id);
        if (!img || img.state === 'deleting') throw notFound(id);
        if (img.ingestId !== ingestId || img.state !== 'importing') {
          throw conflict(`image ${id} was changed by another operation during this upload (now ${img.state})`);
        }
        const next = event === 'succeed' ? 'ready' : 'error';
        const updated = await this.repo.update(id, { ...patch, state: next, ingestId: null, reservedBytes: 0 }, { fromStates: ['importing'], expectedVersion: img.version });
        if (!updated) return LOST_RACE;
        this.events.publish('updated', updated);
        return updated;
      },
      () => {
        throw conflict(`image ${id} could not be updated after the upload; try again`);
      },
    );
  }

  private async move(id: string, event: ImageEvent, patch: ImagePatch): Promise<Image> {
    return updateWithRetry(
      5,
      async () => {
        const img = await this.get(id);
        if (!canTransition(img.state, event)) throw this.cannot(img, event);
        const next = transition(img.state, event);
        const updated = await this.repo.update(id, { ...patch, state: next }, { expectedVersion: img.version });
        if (!updated) return LOST_RACE;
        if (event !== 'delete') this.events.publish('updated', updated);
        return updated;
      },
      () => {
        throw conflict(`image ${id} is changing too fast; try again`);
      },
    );
  }

  private cannot(img: Image, event: ImageEvent): DomainError {
    if (event === 'start' && img.state === 'importing') {
      return new DomainError('CONFLICT', `image ${img.id} is already receiving data (another upload or import is running); wait for it to finish or delete the image`, {
        id: img.id,
        state: img.state,
      });
    }
    if (event === 'start') {
      return new DomainError('INVALID_STATE', `image ${img.id} already has data (state ${img.state}); image data is immutable — create a new image to upload other bytes`, {
        id: img.id,
        state: img.state,
      });
    }
    return new DomainError('INVALID_STATE', `an image that is ${img.state} cannot ${event}`, { id: img.id, state: img.state, event });
  }
}

const QUOTA_WORDS: Record<string, string> = { images: 'image count', storedBytes: 'stored bytes', stagingBytes: 'bytes in staging (uploads running now)', imports: 'concurrent imports' };

export function quotaExceeded(project: string, limit: string, max: number, used: number, adding: number | undefined, fix: string): DomainError {
  const bytes = limit.endsWith('Bytes');
  const fmt = (n: number) => (bytes ? `${n} bytes` : String(n));
  const add = adding === undefined ? 'the upload' : `adding ${fmt(adding)}`;
  return new DomainError(
    'QUOTA_EXCEEDED',
    `project ${project} is over its ${QUOTA_WORDS[limit] ?? limit} quota: ${add} to ${fmt(used)} in use exceeds the limit of ${fmt(max)}; ${fix} (see "imago quota show ${project}")`,
    { project, limit, max, used, adding },
  );
}

/** Every image type holds a disk or file; 0 bytes is always a mistake (a wrong path, an empty pipe). */
function emptyImage(id: string, what: 'upload' | 'import'): DomainError {
  return new DomainError(
    'EMPTY_IMAGE',
    `the ${what} of image ${id} had no bytes (0 bytes after unwrapping); send the image file's contents — for an empty disk, create a blank one (qemu-img create -f qcow2 disk.qcow2 10G) and upload that`,
    { id },
  );
}

const liveStates: readonly ImageState[] = ['pending', 'importing', 'ready', 'disabled', 'error', 'locked'];

function summary(r: ImageReport): InspectionSummary {
  const s: InspectionSummary = {
    format: r.format,
    // stored and shown by the server: no names of files on the uploader's machine (external-names.ts)
    details: withoutExternalDetails(JSON.parse(JSON.stringify(r.details, (_k, v: unknown) => (typeof v === 'bigint' ? Number(v) : v))) as Record<string, unknown>),
    findings: r.findings,
  };
  if (r.subformat) s.subformat = r.subformat;
  if (r.compression?.length) s.compression = r.compression.map((c) => c.format);
  return s;
}

function requestHash(input: unknown): string {
  return createHash('sha256').update(canonicalJson(input)).digest('hex');
}

function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.keys(v)
      .sort()
      .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonicalJson((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

/** Ends the iteration with the signal's reason as soon as it aborts. */
async function* abortable(body: AsyncIterable<Uint8Array>, signal: AbortSignal): AsyncIterable<Uint8Array> {
  for await (const chunk of body) {
    if (signal.aborted) throw signal.reason ?? new Error('aborted');
    yield chunk;
  }
}

export { summary as inspectionSummary };

/**
 * Reading an image's bytes: as stored (`openFile`), or in another format (`openVariant`) — the
 * original when the format is the image's own, else a stored variant, else one converted now and
 * stored as a variant (variants.ts). Every read is checked against what was recorded, so a blob
 * lost or damaged in storage is refused or aborted, never sent short.
 */
import { PassThrough, type Readable } from 'node:stream';
import { exactLength } from '../../io/exact-length.js';
import { BlobNotFound, type BlobStore, type ByteRange, type Digest } from '../../store/blob-store.js';
import { DomainError, conflict } from '../errors.js';
import type { Image, ImageRepository, ImageVariant } from './image.js';
import type { ImageCatalog } from './image-catalog.js';
import { isSameFormat, streamableWith, type ConvertOptions, type Converter, type ConvertTarget } from './variants.js';

/**
 * An image's bytes in a requested format: a stored blob (the original when the format is the
 * image's own, else a variant), or — for a streamable target not stored yet — the output of a
 * conversion running now, which is stored as a variant as it is sent.
 */
export type VariantRead =
  | {
      kind: 'blob';
      image: Image;
      source: 'original' | 'variant';
      format: string;
      digest: Digest;
      sizeBytes: number;
      sha512?: string;
      md5?: string;
      range?: ByteRange;
      /** absent for `head` */
      body?: BlobBody;
    }
  | { kind: 'converting'; image: Image; format: string; stream?: Readable };

/**
 * A stored blob's bytes (or a range of them) on their way out, opened only by whoever sends them:
 * as a stream, or — when the store keeps blobs in local files — straight from the file (the HTTP
 * edge hands it to sendfile(2), and reads nothing itself).
 */
export interface BlobBody {
  /** the bytes as a stream that errors, never ends, when the blob turns out shorter or longer than recorded */
  open(): Promise<Readable>;
  /** the same bytes as a range of a local file: a sender must treat a file that ends early as an error */
  file?: FileRange;
}

export interface FileRange {
  path: string;
  start: number;
  length: number;
}

export class VariantService {
  /** variant conversions running in this process, by image, format and options: one at a time each */
  private readonly conversions = new Map<string, Promise<ImageVariant>>();
  private readonly repo: ImageRepository;

  constructor(
    private readonly catalog: ImageCatalog,
    private readonly store: BlobStore,
    /** absent: downloads in another format are UNAVAILABLE */
    private readonly converter?: Converter,
  ) {
    this.repo = catalog.repo;
  }

  /** The image's bytes (or an inclusive range of them). */
  async openFile(id: string, range?: ByteRange): Promise<{ image: Image; body: BlobBody }> {
    const img = await this.downloadable(id);
    if (range && (range.start > range.end || range.end >= (img.storedSize ?? 0))) {
      throw new DomainError('RANGE_NOT_SATISFIABLE', `range ${range.start}-${range.end} is outside the image's ${img.storedSize} bytes`, {
        size: img.storedSize,
      });
    }
    return { image: img, body: await this.readBlob(img, img.digest, img.storedSize ?? 0, range) };
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
  async openVariant(
    id: string,
    target: ConvertTarget,
    opts: { rangeFor?: (sizeBytes: number, digest: Digest) => ByteRange | null; head?: boolean } = {},
  ): Promise<VariantRead> {
    const img = await this.downloadable(id);
    const detected = img.inspection?.format;
    if (isSameFormat(detected, target)) {
      const size = img.storedSize ?? 0;
      const range = opts.rangeFor?.(size, img.digest) ?? undefined;
      const base = {
        kind: 'blob',
        image: img,
        source: 'original',
        format: target.format,
        digest: img.digest,
        sizeBytes: size,
        sha512: img.checksums.sha512,
        md5: img.checksums.md5,
        range,
      } as const;
      if (opts.head) return base;
      return { ...base, body: await this.readBlob(img, img.digest, size, range) };
    }
    const stored = await this.readVariant(img, target, opts);
    if (stored) return stored;
    if (opts.head) return { kind: 'converting', image: img, format: target.format };
    if (!this.converter)
      throw new DomainError('UNAVAILABLE', `this server does not convert images; download image ${id} as it is (${detected ?? 'unknown format'})`);
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

  /** Start-up recovery: removes the scratch files of conversions a stopped process left behind. */
  async sweep(): Promise<void> {
    await this.converter?.sweep();
  }

  // ---- internals ----------------------------------------------------------------------------

  /** The image, when its bytes may be read now. */
  private async downloadable(id: string): Promise<Image & { digest: Digest }> {
    const img = await this.catalog.get(id);
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
  private readBlob(img: Image, digest: Digest, sizeBytes: number, range: ByteRange | undefined): Promise<BlobBody> {
    return storedBlobBody(
      this.store,
      digest,
      sizeBytes,
      range,
      (what) => new DomainError('BLOB_NOT_FOUND', `the data of image ${img.id} ${what} (ImageLost); upload it again`, { id: img.id, digest }),
    );
  }

  /** A stored variant as a blob read; undefined when there is none (or its blob is gone: it is made again). */
  private async readVariant(
    img: Image,
    target: ConvertTarget,
    opts: { rangeFor?: (sizeBytes: number, digest: Digest) => ByteRange | null; head?: boolean },
  ): Promise<VariantRead | undefined> {
    const v = await this.repo.variant(img.id, target.format, target.optionsKey);
    if (!v) return undefined;
    const range = opts.rangeFor?.(v.sizeBytes, v.digest) ?? undefined;
    const base = { kind: 'blob', image: img, source: 'variant', format: target.format, digest: v.digest, sizeBytes: v.sizeBytes, range } as const;
    if (opts.head) return base;
    // a variant blob collected meanwhile is made again; one damaged in storage is refused (its
    // digest stays taken, so making it again would not replace the damaged copy)
    if (!(await this.store.stat(v.digest))) return undefined;
    return { ...base, body: await this.readBlob(img, v.digest, v.sizeBytes, range) };
  }

  /** Converts the image's blob to `target`, stores it and records the variant. */
  private makeVariant(img: Image & { digest: Digest }, target: ConvertTarget, key: string, opts: ConvertOptions = {}): Promise<ImageVariant> {
    const converter = this.converter!;
    const made = (async () => {
      const r = await converter.convert(img.digest, img.inspection?.format, target, opts);
      const v: ImageVariant = {
        imageId: img.id,
        format: target.format,
        optionsKey: target.optionsKey,
        digest: r.blob.digest,
        sizeBytes: r.blob.sizeBytes,
        createdAt: new Date(),
      };
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
}

/**
 * A stored blob of `sizeBytes` (as recorded) for sending, for every reader of stored bytes (an
 * image, a variant, an OCI blob): refused with `lost(what)` when it is missing or of another size
 * now; its stream errors, never ends short, when it changes while it is read.
 */
export async function storedBlobBody(
  store: BlobStore,
  digest: Digest,
  sizeBytes: number,
  range: ByteRange | undefined,
  lost: (what: string) => DomainError,
): Promise<BlobBody> {
  const info = await store.stat(digest);
  if (!info) throw lost('is missing from storage');
  if (info.sizeBytes !== sizeBytes) throw lost(`is damaged in storage: ${info.sizeBytes} bytes are there, ${sizeBytes} were stored`);
  const missing = (e: unknown) => {
    throw e instanceof BlobNotFound ? lost('is missing from storage') : e;
  };
  const expected = range ? range.end - range.start + 1 : sizeBytes;
  const open = async () => {
    const stream = await store.read(digest, range).catch(missing);
    return exactLength(stream, expected, (actual) => lost(`changed in storage while it was read (${actual} bytes of ${expected} read)`));
  };
  // a local store's stat names the file: no second look (one stat per download, issue 20)
  const path = info.path ?? (store.localPath ? await store.localPath(digest).catch(missing) : undefined);
  if (path === undefined) return { open };
  return { open, file: { path, start: range?.start ?? 0, length: expected } };
}

/**
 * containerDisk layers for the OCI door, both ways, over the one store and the one ingest path:
 *
 * - push: `openContainerDiskPush(layerBytes)` peels the layer's compression (bounded), reads its tar
 *   by KubeVirt's rules and hands back the one disk as a stream — the body the door gives to
 *   `IngestCoordinator.upload` (with `announcedSize: size`), like any upload.
 * - pull: `containerDiskPull(store, disk, fileName)` describes the layer generated around a stored
 *   blob (exact size before a byte is sent, deterministic bytes) and opens it, whole or a range,
 *   reading only the blob: nothing is written, no second copy of the disk exists.
 *   `containerDiskLayerDigest` hashes it once (on the hashing workers, off the event loop); the
 *   door caches the digest (it only changes with the blob and the file name).
 */
import { Readable } from 'node:stream';
import { containerDiskLayout, layoutSegments, type ContainerDiskLayout, type ContainerDiskLimits } from '../../formats/container-disk.js';
import type { InspectLimits } from '../../formats/limits.js';
import { openContainerDiskLayer, type ContainerDiskStream } from '../../inspect/container-disk-stream.js';
import { SourceError } from '../../inspect/peel.js';
import { ParallelHasher } from '../../io/parallel-hasher.js';
import { BlobNotFound, type ByteRange, type BlobStore, type Digest } from '../../store/blob-store.js';
import { DomainError } from '../errors.js';

export type { ContainerDiskStream } from '../../inspect/container-disk-stream.js';

export interface ContainerDiskPushOptions {
  /** the server's limits on decompression (IngestSettings.inspectLimits) */
  inspectLimits?: Partial<InspectLimits>;
  /** a disk declaring more than this is refused before its bytes (the image size limit, or the quota room) */
  maxDiskBytes?: number;
  /** tar limits (extension records, trailing padding) */
  tar?: Partial<Omit<ContainerDiskLimits, 'maxDiskBytes'>>;
  /** give up (NOT_A_CONTAINER_DISK) at the first entry unless it is in disk/: for a guess, not a verdict */
  firstEntryDecides?: boolean;
}

/**
 * The disk inside a pushed containerDisk layer. Rejects with ContainerDiskError (formats/
 * container-disk.ts; `isContainerDisk` false: not a containerDisk, store the layer as a plain blob)
 * or a decompression error; `vmLayerRefusal` (vm-layer-verdict.ts) turns either into the door's
 * MANIFEST_INVALID message. The body fails the same way when the archive breaks a rule after the
 * disk, so the ingest it feeds keeps nothing.
 */
export async function openContainerDiskPush(layer: AsyncIterable<Uint8Array>, opts: ContainerDiskPushOptions = {}): Promise<ContainerDiskStream> {
  const tar: Partial<ContainerDiskLimits> = { ...opts.tar };
  if (opts.maxDiskBytes !== undefined) tar.maxDiskBytes = opts.maxDiskBytes;
  try {
    return await openContainerDiskLayer(layer, { limits: opts.inspectLimits, tar, firstEntryDecides: opts.firstEntryDecides });
  } catch (e) {
    // the layer's own read failed (storage, a client gone): its error, not the peeler's wrapper
    throw e instanceof SourceError ? e.cause : e;
  }
}

/** A stored blob the layer is generated around. */
export interface StoredDisk {
  digest: Digest;
  sizeBytes: number;
}

export interface ContainerDiskPull {
  layout: ContainerDiskLayout;
  /** the layer's size (Content-Length, the manifest's descriptor) */
  size: number;
  /**
   * The layer's bytes [range.start, range.end] (inclusive; the whole layer without a range). The
   * stream fails (BLOB_NOT_FOUND) when the stored blob is missing, shorter or longer than recorded.
   */
  open(range?: ByteRange): Promise<Readable>;
}

export function containerDiskPull(store: BlobStore, disk: StoredDisk, fileName: string): ContainerDiskPull {
  const layout = containerDiskLayout(fileName, disk.sizeBytes);
  const lost = (what: string) => new DomainError('BLOB_NOT_FOUND', `the stored disk ${disk.digest} ${what}; upload the image again`, { digest: disk.digest });
  return {
    layout,
    size: layout.totalSize,
    async open(range?: ByteRange): Promise<Readable> {
      const segments = layoutSegments(layout, range);
      if (segments.some((s) => s.kind === 'disk')) {
        const info = await store.stat(disk.digest);
        if (!info) throw lost('is missing from storage');
        if (info.sizeBytes !== disk.sizeBytes) throw lost(`is damaged in storage: ${info.sizeBytes} bytes are there, ${disk.sizeBytes} were stored`);
      }
      return Readable.from(
        (async function* () {
          for (const s of segments) {
            if (s.kind === 'bytes') {
              yield Buffer.from(s.bytes.buffer, s.bytes.byteOffset, s.bytes.byteLength);
              continue;
            }
            const want = s.end - s.start + 1;
            let got = 0;
            let body: Readable;
            try {
              body = await store.read(disk.digest, { start: s.start, end: s.end });
            } catch (e) {
              throw e instanceof BlobNotFound ? lost('is missing from storage') : e;
            }
            for await (const chunk of body as AsyncIterable<Buffer>) {
              got += chunk.length;
              if (got > want) throw lost(`is longer than recorded`);
              yield chunk;
            }
            if (got !== want) throw lost(`ends after ${s.start + got} of its ${disk.sizeBytes} bytes`);
          }
        })(),
        { objectMode: false },
      );
    },
  };
}

/** sha256 of the whole generated layer, hashed on the hashing workers (the event loop only moves bytes). */
export async function containerDiskLayerDigest(pull: ContainerDiskPull): Promise<Digest> {
  const hasher = new ParallelHasher([['sha256']]);
  try {
    for await (const chunk of (await pull.open()) as AsyncIterable<Buffer>) await hasher.update(chunk);
    const d = await hasher.digest();
    return `sha256:${d.sha256!}`;
  } catch (e) {
    await hasher.close().catch(() => undefined);
    throw e;
  }
}

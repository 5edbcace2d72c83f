/**
 * A containerDisk layer as a stream of its one disk: the layer's bytes are peeled of their
 * compression by the one bounded decoder (peel.ts: gzip, zstd, …; size, ratio and zero-bomb
 * limits), read as a tar by the containerDisk rules (formats/container-disk.ts), and the disk's
 * bytes come out as a Readable for the one ingest path (domain/images/ingest.ts), like any upload.
 *
 *   layer bytes ─► peel (bounded) ─► ContainerDiskReader ─► disk bytes (Readable) ─► ingest
 *
 * The disk's header is met before its bytes, so the name and size are known before the Readable
 * starts; the rest of the archive is read after the disk's last byte and before the Readable ends,
 * so a second disk, a hostile entry after the disk or a truncated archive fails the stream (and
 * the ingest keeps nothing) instead of ending it.
 */
import { Readable } from 'node:stream';
import { ContainerDiskError, ContainerDiskReader, type ContainerDiskEvent, type ContainerDiskLimits } from '../formats/container-disk.js';
import type { Compression } from '../formats/compression.js';
import { limitsWith, type InspectLimits } from '../formats/limits.js';
import { peel } from './peel.js';

export interface ContainerDiskStream {
  /** the entry's name in the tar, e.g. `disk/fedora.qcow2` or `./disk/fedora.qcow2` */
  path: string;
  /** the file's name in disk/ */
  fileName: string;
  /** the disk's size as its tar header declares it: the Readable yields exactly this many bytes or fails */
  size: number;
  /** compression wrappers peeled off the layer, outermost first */
  compression: Compression[];
  /**
   * The disk's bytes. It fails (ContainerDiskError, a DecompressionLimitError, a decoder's error or
   * the source's own SourceError) instead of ending when the archive breaks a rule after the disk.
   * Destroying it stops the layer's decoders (a zstd child process): a caller that does not read it
   * to the end must destroy it.
   */
  body: Readable;
}

export interface ContainerDiskStreamOptions {
  /** decompression limits (maxDecompressedBytes, ratio, zero-bomb, wrapper depth) */
  limits?: Partial<InspectLimits>;
  /** tar limits and the largest disk accepted by its declared size */
  tar?: Partial<ContainerDiskLimits>;
  /** stop at the first entry unless it is in disk/ (ContainerDiskReader's `firstEntryDecides`) */
  firstEntryDecides?: boolean;
}

/**
 * Opens a containerDisk layer: resolves once the disk's header has passed, rejects when the layer
 * breaks a rule before it (ContainerDiskError; `isContainerDisk` false when the layer is not a
 * containerDisk at all) or its compression fails.
 */
export async function openContainerDiskLayer(layer: AsyncIterable<Uint8Array>, opts: ContainerDiskStreamOptions = {}): Promise<ContainerDiskStream> {
  const limits = limitsWith(opts.limits);
  const peeled = await peel(layer, limits);
  if (peeled.tooDeep !== undefined) {
    await closeQuietly(peeled.output);
    throw new ContainerDiskError(
      `the layer is wrapped in more than ${limits.maxWrapperDepth} compression layers (the next is ${peeled.tooDeep}); a layer is a tar, compressed once at most`,
      'OVER_LIMIT',
      false,
    );
  }
  const reader = new ContainerDiskReader(opts.tar, { firstEntryDecides: opts.firstEntryDecides });
  const it = peeled.output[Symbol.asyncIterator]();
  /** disk bytes met in the same chunk as its header, or before the consumer asked */
  const early: Uint8Array[] = [];
  let disk: Extract<ContainerDiskEvent, { kind: 'disk' }>['disk'] | undefined;
  let finished = false;
  const take = (events: ContainerDiskEvent[]) => {
    for (const ev of events) {
      if (ev.kind === 'disk') disk = ev.disk;
      else if (ev.kind === 'data') early.push(ev.bytes);
    }
  };
  try {
    while (!disk) {
      const r = await it.next();
      if (r.done) {
        finished = true;
        take(reader.finish());
        // finish() throws unless a disk was met; a disk met only at the end still comes out here
        break;
      }
      take(reader.push(r.value));
    }
  } catch (e) {
    await it.return?.().catch(() => undefined);
    throw e;
  }
  const found = disk!;
  const body = Readable.from(
    (async function* () {
      let done = finished;
      try {
        yield* early.splice(0);
        while (!done) {
          const r = await it.next();
          if (r.done) {
            done = true;
            for (const ev of reader.finish()) if (ev.kind === 'data') yield ev.bytes;
            break;
          }
          for (const ev of reader.push(r.value)) if (ev.kind === 'data') yield ev.bytes;
        }
      } finally {
        // the consumer stopped early or a rule broke: stop the decoders below too
        if (!done) await it.return?.()?.catch(() => undefined);
      }
    })(),
    { objectMode: false, highWaterMark: 256 * 1024 },
  );
  return { path: found.path, fileName: found.fileName, size: found.size, compression: peeled.layers().map((l) => l.format), body };
}

async function closeQuietly(s: AsyncIterable<Uint8Array>): Promise<void> {
  await s[Symbol.asyncIterator]()
    .return?.()
    ?.catch(() => undefined);
}

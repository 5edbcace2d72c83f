/**
 * containerDisk layers ingested while they arrive (issue 10's push benchmark). A blob push
 * (blob-uploads.ts) hands every blob it stages from its first byte to `tap()`; when the first bytes
 * can be a containerDisk layer (gzip, zstd, xz or bzip2, or a tar), the same chunks go, through a
 * bounded tee (io/chunk-channel.ts), into the work the manifest PUT would otherwise do after the
 * whole layer arrived: peel, the containerDisk tar walk (`openContainerDiskPush`, giving up at the
 * first entry not in disk/), and the one ingest pipeline (`ingest()`: sha256 + sha512 [+ md5],
 * stream inspection, staging, commit content-addressed), on the other core while the layer itself
 * is hashed and written.
 *
 *   blob push bytes ─► stageBlob (the layer: sha256, staging, commit)
 *                        └─ onChunk ─► ChunkChannel (≤ 1 MiB ahead) ─► peel ─► tar ─► ingest() (the disk)
 *
 * The outcome — the disk's committed blob, sha512, inspection report, sizes, or the layer's refusal
 * (a containerDisk that breaks the rules) — is kept in memory by the layer's digest once the layer
 * is committed, for a bounded time and number. The manifest PUT hook (vm-image-pushes.ts) takes it
 * instead of reading the layer back, and turns it into the image through the same lifecycle
 * (`IngestCoordinator.adoptIngested`: quota, the declared format, the verdict). The ingest ran
 * without a claim (the manifest, which declares the format, comes later): the claim is applied at
 * adoption. Anything this could not decide (not a containerDisk as far as the first entry shows,
 * a limit, a storage error, a restart, an outcome dropped or its blob gone) leaves no outcome and
 * the hook reads the layer back as before: the early ingest is only ever a shortcut.
 *
 * GC keeps the disk blobs of the outcomes held here (`referencedDigests`); an outcome dropped
 * (time, count) leaves its blob to GC like any unreferenced one.
 */
import type { InspectLimits } from '../../formats/limits.js';
import { detectCompression } from '../../formats/compression.js';
import { ChunkChannel } from '../../io/chunk-channel.js';
import type { BlobStore, Digest } from '../../store/blob-store.js';
import { ingest, type IngestOutcome } from '../images/ingest.js';
import { openContainerDiskPush, type ContainerDiskStream } from './container-disk-layers.js';
import { vmLayerRefusal, type ManifestInvalid } from './vm-layer-verdict.js';

export type EarlyLayerOutcome =
  /** the layer is a containerDisk that breaks the rules (or its compression is broken): MANIFEST_INVALID */
  | { kind: 'refused'; refusal: ManifestInvalid }
  /** the disk went through the ingest pipeline: stored (committed, no image's yet) or refused by the verdict */
  | { kind: 'ingested'; fileName: string; diskSize: number; outcome: IngestOutcome };

export interface EarlyLayerIngestSettings {
  /** largest image the server stores (IngestSettings.maxImageBytes) */
  maxImageBytes: number;
  md5: boolean;
  inspectLimits: Partial<InspectLimits>;
  /** how long an outcome is kept for its manifest (default 15 min) */
  keepMs?: number;
  /** how many outcomes are kept at most (default 64; the oldest goes first) */
  maxKept?: number;
  /** early ingests running at once at most (default 4; a blob past it is not tapped) */
  maxRunning?: number;
  /** how far the layer's staging may run ahead of the early ingest (default 1 MiB) */
  queueBytes?: number;
  now?: () => number;
}

/** A blob push's side of one early ingest: every chunk, then the end (the layer's digest) or its failure. */
export interface LayerTap {
  write(chunk: Uint8Array): Promise<void>;
  /** the layer was committed as `digest`: its early ingest's outcome is kept under it */
  committed(digest: Digest): void;
  /** the layer was not stored: its early ingest stops and keeps nothing */
  failed(error: unknown): void;
}

interface Kept {
  outcome: Promise<EarlyLayerOutcome | undefined>;
  at: number;
  /** the disk blob, once committed */
  disk?: Digest;
}

/** A tar's ustar magic (`ustar\0` POSIX, `ustar  ` GNU) at offset 257 of its first header. */
const USTAR_MAGIC_OFFSET = 257;

export class EarlyLayerIngests {
  private readonly kept = new Map<Digest, Kept>();
  private running = 0;
  /** what this process did, for tests and the log: early ingests started, outcomes taken by a manifest */
  readonly counts = { started: 0, taken: 0 };

  constructor(
    private readonly store: BlobStore,
    private readonly settings: EarlyLayerIngestSettings,
  ) {}

  /**
   * A tap for a blob staged from its first byte; `maxDiskBytes` bounds the disk the early ingest
   * stores (the project's quota room; the server's image size limit applies anyway).
   */
  tap(maxDiskBytes: number): LayerTap {
    let channel: ChunkChannel | undefined;
    let outcome: Promise<EarlyLayerOutcome | undefined> | undefined;
    let first = true;
    return {
      write: (chunk) => {
        if (first) {
          first = false;
          if (this.running >= (this.settings.maxRunning ?? 4) || !mayBeContainerDisk(chunk)) return Promise.resolve();
          channel = new ChunkChannel(this.settings.queueBytes ?? 1024 * 1024);
          this.running++;
          this.counts.started++;
          const ch = channel;
          outcome = this.ingestLayer(ch, Math.min(maxDiskBytes, this.settings.maxImageBytes)).finally(() => {
            this.running--;
            ch.detach();
          });
        }
        return channel ? channel.write(chunk) : Promise.resolve();
      },
      committed: (digest) => {
        if (!channel || !outcome) return;
        channel.end();
        this.keep(digest, outcome);
      },
      failed: (error) => channel?.fail(error),
    };
  }

  /**
   * The early outcome of layer `digest` (waiting for an ingest still running), or undefined: none
   * was made, it was dropped, or it decided nothing — read the layer back.
   */
  async outcome(digest: Digest): Promise<EarlyLayerOutcome | undefined> {
    const k = this.kept.get(digest);
    if (!k) return undefined;
    const o = await k.outcome;
    if (o) this.counts.taken++;
    return o;
  }

  /** The disk blobs the kept outcomes hold (GC keeps them). */
  referencedDigests(): Set<Digest> {
    this.sweep();
    const out = new Set<Digest>();
    for (const k of this.kept.values()) if (k.disk) out.add(k.disk);
    return out;
  }

  private keep(digest: Digest, outcome: Promise<EarlyLayerOutcome | undefined>): void {
    this.sweep();
    const k: Kept = { outcome, at: this.now() };
    this.kept.delete(digest);
    this.kept.set(digest, k);
    const max = this.settings.maxKept ?? 64;
    for (const old of this.kept.keys()) {
      if (this.kept.size <= max) break;
      this.kept.delete(old);
    }
    void outcome.then((o) => {
      if (o?.kind === 'ingested' && o.outcome.kind === 'stored') k.disk = o.outcome.blob.digest;
    });
  }

  private sweep(): void {
    const cutoff = this.now() - (this.settings.keepMs ?? 15 * 60_000);
    for (const [d, k] of this.kept) if (k.at < cutoff) this.kept.delete(d);
  }

  private now(): number {
    return this.settings.now?.() ?? Date.now();
  }

  /** The manifest PUT's work on the layer, on its bytes as they arrive; undefined when it decided nothing. */
  private async ingestLayer(layer: ChunkChannel, maxDiskBytes: number): Promise<EarlyLayerOutcome | undefined> {
    let disk: ContainerDiskStream;
    try {
      // the declared size is judged against the server's limit, as the manifest PUT's reader does
      // (DISK_TOO_LARGE); the quota room only bounds what this ingest stores (SIZE_LIMIT: undecided)
      disk = await openContainerDiskPush(layer, {
        inspectLimits: this.settings.inspectLimits,
        maxDiskBytes: this.settings.maxImageBytes,
        firstEntryDecides: true,
      });
    } catch (e) {
      // not a containerDisk as far as its first entry shows (the full reader decides), or the layer failed
      const refusal = vmLayerRefusal(e);
      return refusal ? { kind: 'refused', refusal } : undefined;
    }
    // the containerDisk reader's refusal after the disk began (`../`, a second disk) reaches the
    // ingest as a read error: keep it to name it
    let bodyError: unknown;
    const body = disk.body;
    const watched = (async function* () {
      try {
        yield* body;
      } catch (err) {
        bodyError = err;
        throw err;
      }
    })();
    try {
      const outcome = await ingest(watched, this.store, {
        announcedSize: disk.size,
        maxImageBytes: maxDiskBytes,
        inspectLimits: this.settings.inspectLimits,
        md5: this.settings.md5,
      });
      return { kind: 'ingested', fileName: disk.fileName, diskSize: disk.size, outcome };
    } catch {
      const refusal = bodyError === undefined ? undefined : vmLayerRefusal(bodyError);
      return refusal ? { kind: 'refused', refusal } : undefined;
    } finally {
      body.destroy();
    }
  }
}

/** Whether a blob that begins with `head` can be a containerDisk layer: compressed, or a tar. */
function mayBeContainerDisk(head: Uint8Array): boolean {
  if (detectCompression(head) !== undefined) return true;
  const magic = head.subarray(USTAR_MAGIC_OFFSET, USTAR_MAGIC_OFFSET + 5);
  return magic.length === 5 && String.fromCharCode(...magic) === 'ustar';
}

/**
 * The one way bytes become a stored blob, shared by ingest (an upload or import) and variants (a
 * conversion's output):
 *
 *   byte stream ─┬─► staging (BlobStore upload session; a few writes in flight)
 *                ├─► hashers on the process-wide worker pool: sha256 (the address) [+ md5], sha512
 *                └─► onChunk (the caller's: inspection, a download tap)
 *   ─► keep? ─► commit content-addressed (sha256 as hashed here) — or abort (nothing kept)
 *
 * The session does not hash the bytes again (`callerHashes`): the digests come from the very
 * bytes written. No byte is copied here except into the hashers' shared slots.
 */
import { ParallelHasher, type HashAlgorithm } from '../../io/parallel-hasher.js';
import type { BlobInfo, BlobStore } from '../../store/blob-store.js';

export interface StagedBlob {
  blob: BlobInfo;
  /** hex */
  sha512: string;
  /** hex; when md5 was asked for */
  md5?: string;
}

export interface StageOptions {
  /** also compute md5 (Glance `checksum`) */
  md5: boolean;
  /** Sees every chunk once it is hashed and its staging write is under way. Throwing stops the staging. */
  onChunk?: (chunk: Uint8Array) => Promise<void> | void;
  /** A chunk is staged and seen by everyone: its buffer may be filled again. */
  onStaged?: (chunk: Uint8Array) => void;
  /**
   * Once the stream ended, or failed (`failure`: any error of the stream, a staging write, the
   * hashers or `onChunk`): whether to commit what was staged. It may throw; false or a throw keeps
   * nothing. Absent: a failure is thrown, an ended stream is committed.
   */
  keep?: (failure: { error: unknown } | undefined) => Promise<boolean>;
}

/** Staging writes in flight at once (bounded memory: this many chunks). */
const MAX_WRITES_IN_FLIGHT = 2;

export function stageBlob(store: BlobStore, source: AsyncIterable<Uint8Array>, opts: StageOptions & { keep?: undefined }): Promise<StagedBlob>;
export function stageBlob(store: BlobStore, source: AsyncIterable<Uint8Array>, opts: StageOptions): Promise<StagedBlob | undefined>;
/** Stages `source` and commits it content-addressed; undefined when `keep` said no (nothing is kept). */
export async function stageBlob(store: BlobStore, source: AsyncIterable<Uint8Array>, opts: StageOptions): Promise<StagedBlob | undefined> {
  // sha256 (the address) and sha512 on their own worker threads; md5 shares sha256's (both fast)
  const algorithms: HashAlgorithm[][] = opts.md5 ? [['sha256', 'md5'], ['sha512']] : [['sha256'], ['sha512']];
  const hasher = new ParallelHasher(algorithms);
  const session = await store.startUpload({ callerHashes: true }).catch(async (e: unknown) => {
    await hasher.close().catch(() => undefined);
    throw e;
  });
  try {
    let failure: { error: unknown } | undefined;
    // staging writes are pipelined (a few in flight) so reading, hashing and inspecting go on meanwhile
    const writes: Promise<Uint8Array>[] = [];
    try {
      let writeError: unknown;
      for await (const chunk of source) {
        if (writeError !== undefined) throw writeError;
        writes.push(
          session.write(chunk).then(
            () => chunk,
            (e: unknown) => {
              writeError ??= e;
              return chunk;
            },
          ),
        );
        await hasher.update(chunk);
        await opts.onChunk?.(chunk);
        if (writes.length >= MAX_WRITES_IN_FLIGHT) opts.onStaged?.(await writes.shift()!);
      }
      await Promise.all(writes);
      if (writeError !== undefined) throw writeError;
    } catch (e) {
      failure = { error: e };
      // no write may still be running when the session is committed or aborted
      await Promise.all(writes);
    }
    if (!opts.keep) {
      if (failure) throw failure.error;
    } else if (!(await opts.keep(failure))) {
      await session.abort();
      await hasher.close();
      return undefined;
    }
    const digests = await hasher.digest();
    const blob = await session.commit(`sha256:${digests.sha256!}`);
    const staged: StagedBlob = { blob, sha512: digests.sha512! };
    if (digests.md5) staged.md5 = digests.md5;
    return staged;
  } catch (e) {
    await session.abort().catch(() => undefined);
    await hasher.close().catch(() => undefined);
    throw e;
  }
}

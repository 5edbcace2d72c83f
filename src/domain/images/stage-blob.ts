/**
 * The one way bytes become a stored blob, shared by ingest (an upload or import) and variants (a
 * conversion's output):
 *
 *   byte stream ─► regrouped into the hasher's shared slots (the one copy) ─┬─► hashers on the process-wide worker pool: sha256 (the address) [+ md5], sha512
 *                                                                           ├─► staging (BlobStore upload session; a few writes in flight)
 *                                                                           └─► onChunk (the caller's: inspection, a download tap)
 *   ─► keep? ─► commit content-addressed (sha256 as hashed here) — or abort (nothing kept)
 *
 * The session does not hash the bytes again (`callerHashes`): the digests come from the very
 * bytes written. Each byte is copied once, into a slot that the hashers, the staging write and
 * `onChunk` all read; a slot is filled again once they are all done with it. The exception: when
 * every slot is busy, the rest of the chunk at hand (≤ 64 KiB) waits in the stream's own memory
 * and is copied from there, so that the source's chunk is not held through the wait.
 */
import { ParallelHasher, type HashAlgorithm } from '../../io/parallel-hasher.js';
import { ingestTurns } from '../../io/turn-budget.js';
import type { BlobInfo, BlobStore, Digest } from '../../store/blob-store.js';
import { DomainError } from '../errors.js';

export interface StagedBlob {
  blob: BlobInfo;
  /** hex; absent when `sha512: false` was asked for */
  sha512?: string;
  /** hex; when md5 was asked for */
  md5?: string;
}

export interface StageOptions {
  /** also compute md5 (Glance `checksum`) */
  md5: boolean;
  /**
   * compute sha512 (an image's `os_hash_value`); default true. A blob that is no image's bytes (an
   * OCI layer or manifest: its address is its sha256) skips it — a second hashing thread's work
   * per byte (issue 10's push benchmark).
   */
  sha512?: boolean;
  /**
   * Sees every chunk (up to a slot's size of the stream's next bytes) while it is hashed and
   * written. The chunk's memory is filled again once the returned promise settled: copy what you
   * keep. Throwing stops the staging.
   */
  onChunk?: (chunk: Uint8Array) => Promise<void> | void;
  /**
   * Once the stream ended, or failed (`failure`: any error of the stream, a staging write, the
   * hashers or `onChunk`): whether to commit what was staged. It may throw; false or a throw keeps
   * nothing. Absent: a failure is thrown, an ended stream is committed.
   */
  keep?: (failure: { error: unknown } | undefined) => Promise<boolean>;
  /**
   * The digest the bytes must have (a client's claim, e.g. an OCI blob push): any other is
   * DIGEST_MISMATCH and nothing is kept.
   */
  expect?: Digest;
}

/** The largest rest of a source chunk kept in the stream's own memory while it waits for a slot (an HTTP body chunk is ≤ 64 KiB). */
const SPILL_BYTES = 64 * 1024;

/** The source's next chunk, or undefined at its end (no iterator result stays referenced). */
async function nextChunk(it: AsyncIterator<Uint8Array>): Promise<Uint8Array | undefined> {
  const r = await it.next();
  return r.done ? undefined : r.value;
}

export function stageBlob(store: BlobStore, source: AsyncIterable<Uint8Array>, opts: StageOptions & { keep?: undefined }): Promise<StagedBlob>;
export function stageBlob(store: BlobStore, source: AsyncIterable<Uint8Array>, opts: StageOptions): Promise<StagedBlob | undefined>;
/** Stages `source` and commits it content-addressed; undefined when `keep` said no (nothing is kept). */
export async function stageBlob(store: BlobStore, source: AsyncIterable<Uint8Array>, opts: StageOptions): Promise<StagedBlob | undefined> {
  // sha256 (the address) and sha512 on their own worker threads; md5 shares sha256's (both fast)
  const first: HashAlgorithm[] = opts.md5 ? ['sha256', 'md5'] : ['sha256'];
  const algorithms: HashAlgorithm[][] = opts.sha512 === false ? [first] : [first, ['sha512']];
  const hasher = new ParallelHasher(algorithms);
  const session = await store.startUpload({ callerHashes: true }).catch(async (e: unknown) => {
    await hasher.close().catch(() => undefined);
    throw e;
  });
  try {
    let failure: { error: unknown } | undefined;
    let spill: Buffer | undefined;
    // every slot's staging write; the slots bound how many are in flight
    const writes = new Set<Promise<void>>();
    let writeError: unknown;
    const send = async (chunk: Buffer) => {
      if (writeError !== undefined) throw writeError;
      hasher.hash(chunk);
      const write: Promise<void> = session.write(chunk).then(
        () => hasher.release(chunk),
        (e: unknown) => {
          writeError ??= e;
        },
      );
      writes.add(write);
      void write.finally(() => writes.delete(write));
      await opts.onChunk?.(chunk);
    };
    try {
      let slot = await hasher.slot();
      let used = 0;
      const it = source[Symbol.asyncIterator]();
      try {
        let input = await nextChunk(it);
        while (input !== undefined) {
          for (let off = 0; off < input.length;) {
            const n = Math.min(slot.length - used, input.length - off);
            slot.set(input.subarray(off, off + n), used);
            used += n;
            off += n;
            if (used === slot.length) {
              await send(slot);
              used = 0;
              const free = hasher.trySlot();
              if (free) {
                slot = free;
                continue;
              }
              // Every slot is busy: the wait may be long (a hundred streams share the hashing threads).
              // A chunk held across it outlives two scavenges and is promoted, and promoted chunks,
              // dead a moment later, count towards the old generation's budget for a mark-compact.
              // So the rest waits in memory this stream reuses, and the chunk dies young: 100
              // concurrent 64 MiB uploads ran 41–43 mark-compacts instead of 64–68 (issue 20 item 6).
              if (off < input.length && input.length - off <= SPILL_BYTES) {
                spill ??= Buffer.allocUnsafeSlow(SPILL_BYTES);
                spill.set(input.subarray(off));
                input = spill.subarray(0, input.length - off);
                off = 0;
              }
              slot = await hasher.slot();
            }
          }
          // the loop's share: past this turn's budget, the next chunk waits for a later turn (and is not held meanwhile)
          input = undefined;
          const turn = ingestTurns.enter();
          if (turn) await turn;
          input = await nextChunk(it);
        }
      } catch (e) {
        // as for await … of does: the source is told it will not be read further (its error, if any, is not the one that counts)
        await it.return?.().catch(() => undefined);
        throw e;
      }
      if (used > 0) await send(slot.subarray(0, used));
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
    const actual: Digest = `sha256:${digests.sha256!}`;
    if (opts.expect !== undefined && actual !== opts.expect) {
      throw new DomainError(
        'DIGEST_MISMATCH',
        `the bytes hash to ${actual}, not the ${opts.expect} they were sent as; nothing was stored — send the bytes again`,
        {
          expected: opts.expect,
          actual,
        },
      );
    }
    const blob = await session.commit(actual);
    const staged: StagedBlob = { blob };
    if (digests.sha512) staged.sha512 = digests.sha512;
    if (digests.md5) staged.md5 = digests.md5;
    return staged;
  } catch (e) {
    await session.abort().catch(() => undefined);
    await hasher.close().catch(() => undefined);
    throw e;
  }
}

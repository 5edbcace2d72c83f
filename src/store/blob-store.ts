/**
 * The blob storage port. Blobs are content-addressed by sha256 (`sha256:<hex>`); identical bytes
 * are stored once. Bytes arrive through an upload session that hashes as it writes and verifies on
 * commit; committing bytes that already exist is a success. Adapters: `fs-blob-store.ts` (default);
 * every adapter runs `blob-store.conformance.ts`.
 */
import type { Readable } from 'node:stream';

export type Digest = `sha256:${string}`;

export interface BlobInfo {
  digest: Digest;
  sizeBytes: number;
  /** when the blob was committed (used by GC's grace period) */
  committedAt: Date;
  /** local backends, from `stat`: the blob's file (what `localPath` answers), found without a second look */
  path?: string;
}

export interface ByteRange {
  /** first byte, inclusive */
  start: number;
  /** last byte, inclusive */
  end: number;
}

export interface UploadSession {
  readonly id: string;
  /** bytes written so far */
  readonly bytesWritten: number;
  write(chunk: Uint8Array): Promise<void>;
  /**
   * Makes the bytes durable and content-addressed. When `expected` is given and differs from the
   * sha256 of what was written, throws DigestMismatch and keeps nothing. Existing blob: success.
   */
  commit(expected?: Digest): Promise<BlobInfo>;
  /** Discards the staged bytes. Safe to call twice or after commit (no-op). */
  abort(): Promise<void>;
}

export interface StagingEntry {
  id: string;
  startedAt: Date;
  sizeBytes: number;
}

export interface UploadOptions {
  /**
   * The caller hashes the bytes itself (the ingest pipeline does, on worker threads, from the very
   * bytes it writes) and passes the digest to `commit`: the session then does not hash them a
   * second time on the event loop. The trust boundary is the process: never set this for digests
   * a client sent.
   */
  callerHashes?: boolean;
}

export interface BlobStore {
  /** human name for logs and errors: "fs:/var/lib/imago" */
  readonly description: string;
  startUpload(opts?: UploadOptions): Promise<UploadSession>;
  stat(digest: Digest): Promise<BlobInfo | undefined>;
  /**
   * The blob's bytes, or the inclusive range of them. NotFound when absent. `chunkBytes`: the
   * size of the reads (a hint; the adapter's default otherwise) — for one reader that pushes the
   * whole blob through a pipeline, where each chunk costs per-chunk work downstream.
   */
  read(digest: Digest, range?: ByteRange, opts?: { chunkBytes?: number }): Promise<Readable>;
  /** true when it existed */
  delete(digest: Digest): Promise<boolean>;
  list(): AsyncIterable<BlobInfo>;
  listStaging(): AsyncIterable<StagingEntry>;
  /** Removes staging entries started before `before` (all of them at start-up). Returns how many. */
  sweepStaging(before: Date): Promise<number>;
  /** Start-up check: write, read back and delete a probe object; throws a clear error if the backend fails. */
  probe(): Promise<void>;
  /**
   * Optional capability of local backends: the path of a committed blob's file, for readers that
   * need random access (disk conversion). The file must only be read. Backends without it (object
   * storage) leave it out, and callers copy the blob to scratch space instead. NotFound when absent.
   */
  localPath?(digest: Digest): Promise<string>;
}

export class BlobNotFound extends Error {
  constructor(readonly digest: Digest) {
    super(`blob ${digest} is not in the store`);
    this.name = 'BlobNotFound';
  }
}

export class DigestMismatch extends Error {
  constructor(
    readonly expected: Digest,
    readonly actual: Digest,
  ) {
    super(`the bytes hash to ${actual}, not the expected ${expected}`);
    this.name = 'DigestMismatch';
  }
}

export function isDigest(s: string): s is Digest {
  return /^sha256:[0-9a-f]{64}$/.test(s);
}

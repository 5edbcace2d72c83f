/**
 * Filesystem adapter of the BlobStore port (the embedded default).
 *
 * Layout under the root:
 *   blobs/sha256/<2 hex>/<64 hex>     committed blobs, content-addressed, never modified
 *   uploads/<id>/data                 staging bytes of an upload in progress
 *   uploads/<id>/startedat            ISO time the upload started (for sweeping)
 *   probe/                            start-up check objects
 *
 * Files are written sparse: blocks of zeros (4 KiB, aligned on the file offset) are not written but
 * left as holes, and commit sets the file's length, so a raw disk takes the space of its data
 * (a 10 GiB raw of zeros would otherwise take 10 GiB of disk). The staging file is always new and
 * each offset is written once, so a skipped block reads back as zeros.
 *
 * Commit = fsync the staging file, rename it into place (atomic on one filesystem), fsync the
 * fan-out directory. A crash before the rename leaves only staging debris (swept at start); after
 * it, a complete blob whose name is its digest. Paths are built only from validated hex digests
 * and generated ids, never from user input.
 */
import { createHash, randomUUID, type Hash } from 'node:crypto';
import { constants, createReadStream } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { directIoSupported, directPrefix } from '../io/direct-io.js';
import { blockRuns } from '../io/zero-blocks.js';
import {
  BlobNotFound,
  DigestMismatch,
  isDigest,
  type BlobInfo,
  type BlobStore,
  type ByteRange,
  type Digest,
  type StagingEntry,
  type UploadOptions,
  type UploadSession,
} from './blob-store.js';

const HEX64 = /^[0-9a-f]{64}$/;
const ID = /^[0-9a-f-]{36}$/;

export class FsBlobStore implements BlobStore {
  readonly description: string;
  private readonly blobsDir: string;
  private readonly uploadsDir: string;

  constructor(private readonly root: string) {
    this.description = `fs:${root}`;
    this.blobsDir = join(root, 'blobs', 'sha256');
    this.uploadsDir = join(root, 'uploads');
  }

  private blobPath(digest: Digest): string {
    if (!isDigest(digest)) throw new Error(`not a sha256 digest: ${String(digest).slice(0, 80)}`);
    const hex = digest.slice(7);
    return join(this.blobsDir, hex.slice(0, 2), hex);
  }

  async startUpload(opts: UploadOptions = {}): Promise<UploadSession> {
    const id = randomUUID();
    const dir = join(this.uploadsDir, id);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'startedat'), new Date().toISOString());
    const fh = await open(join(dir, 'data'), 'w');
    return new FsUploadSession(this, id, dir, fh, await openDirect(join(dir, 'data')), opts.callerHashes !== true);
  }

  /** @internal moves a finished staging file into place */
  async place(dataPath: string, digest: Digest, size: number): Promise<BlobInfo> {
    const target = this.blobPath(digest);
    const existing = await this.stat(digest);
    if (existing) return existing; // identical bytes are stored once
    const dir = join(target, '..');
    await mkdir(dir, { recursive: true });
    await rename(dataPath, target);
    await fsyncDir(dir);
    return { digest, sizeBytes: size, committedAt: new Date() };
  }

  async stat(digest: Digest): Promise<BlobInfo | undefined> {
    try {
      const path = this.blobPath(digest);
      const st = await stat(path);
      return { digest, sizeBytes: st.size, committedAt: st.mtime, path };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  async read(digest: Digest, range?: ByteRange, opts: { chunkBytes?: number } = {}): Promise<Readable> {
    const info = await this.stat(digest);
    if (!info) throw new BlobNotFound(digest);
    if (range && (range.start < 0 || range.end < range.start || range.end >= info.sizeBytes)) {
      throw new RangeError(`range ${range.start}-${range.end} is outside blob ${digest} of ${info.sizeBytes} bytes`);
    }
    // node's default read-ahead: a larger one measured no faster (0.47-0.65 s per GiB for 64 KiB to
    // 4 MiB) and costs its size once per concurrent reader; a caller that feeds a pipeline asks for more
    return createReadStream(this.blobPath(digest), { start: range?.start, end: range?.end, highWaterMark: opts.chunkBytes });
  }

  async localPath(digest: Digest): Promise<string> {
    if (!(await this.stat(digest))) throw new BlobNotFound(digest);
    return this.blobPath(digest);
  }

  async delete(digest: Digest): Promise<boolean> {
    try {
      await rm(this.blobPath(digest));
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw e;
    }
  }

  async *list(): AsyncIterable<BlobInfo> {
    let fans: string[];
    try {
      fans = await readdir(this.blobsDir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw e;
    }
    for (const fan of fans.sort()) {
      if (!/^[0-9a-f]{2}$/.test(fan)) continue;
      for (const name of (await readdir(join(this.blobsDir, fan))).sort()) {
        if (!HEX64.test(name) || !name.startsWith(fan)) continue; // junk or a half-written file: not a blob
        const info = await this.stat(`sha256:${name}`);
        if (info) yield info;
      }
    }
  }

  async *listStaging(): AsyncIterable<StagingEntry> {
    let ids: string[];
    try {
      ids = await readdir(this.uploadsDir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw e;
    }
    for (const id of ids) {
      const dir = join(this.uploadsDir, id);
      let startedAt = new Date(0);
      try {
        const t = new Date((await readFile(join(dir, 'startedat'), 'utf8')).trim());
        if (!Number.isNaN(t.getTime())) startedAt = t;
      } catch {
        // no or unreadable start time: treat as oldest (swept first)
      }
      let sizeBytes = 0;
      try {
        sizeBytes = (await stat(join(dir, 'data'))).size;
      } catch {
        // no data yet
      }
      yield { id, startedAt, sizeBytes };
    }
  }

  async sweepStaging(before: Date): Promise<number> {
    let n = 0;
    for await (const e of this.listStaging()) {
      if (e.startedAt < before) {
        await rm(join(this.uploadsDir, e.id), { recursive: true, force: true });
        n++;
      }
    }
    return n;
  }

  async probe(): Promise<void> {
    const dir = join(this.root, 'probe');
    const file = join(dir, randomUUID());
    const payload = `imago probe ${new Date().toISOString()}`;
    try {
      await mkdir(dir, { recursive: true });
      await writeFile(file, payload);
      if ((await readFile(file, 'utf8')) !== payload) throw new Error('read back different bytes');
      await rm(file);
    } catch (e) {
      throw new Error(`blob store at ${this.root} is not usable (${(e as Error).message}); check that the directory exists and is writable`);
    }
  }

  /** @internal */
  stagingDir(id: string): string {
    if (!ID.test(id)) throw new Error('bad staging id');
    return join(this.uploadsDir, id);
  }
}

/**
 * Bytes written between two background flushes of a staging file. The commit must fsync before
 * the blob may be named: flushing as the upload goes (one fdatasync at a time, while the writes go
 * on) leaves the final fsync little to do — it took 0.5–0.6 s of a 1 GiB upload when it flushed
 * everything at the end (issue 20).
 */
const FLUSH_EVERY_BYTES = 64 * 1024 * 1024;

class FsUploadSession implements UploadSession {
  private readonly hash: Hash | undefined;
  private written = 0;
  private direct_ = 0;
  private state: 'open' | 'committing' | 'committed' | 'aborted' = 'open';
  private flushedUpTo = 0;
  /** the background flush under way; its failure fails the commit (the final fsync reports it too) */
  private flushing: Promise<unknown> | undefined;

  constructor(
    private readonly store: FsBlobStore,
    readonly id: string,
    private readonly dir: string,
    private readonly fh: FileHandle,
    /** the same file opened with O_DIRECT, where the filesystem allows it */
    private readonly direct: FileHandle | undefined,
    hashes: boolean,
  ) {
    this.hash = hashes ? createHash('sha256') : undefined;
  }

  get bytesWritten(): number {
    return this.written;
  }

  /** Bytes written with O_DIRECT (past the page cache): a diagnostic. */
  get bytesDirect(): number {
    return this.direct_;
  }

  /** Bytes known to be on disk (flushed in the background so far): a diagnostic. */
  get bytesFlushed(): number {
    return this.flushedUpTo;
  }

  /**
   * Writes at an explicit position reserved synchronously, so several writes may be in flight at
   * once (the ingest pipeline keeps a few going while it reads on) and still land in order. Zero
   * blocks are skipped (holes); commit extends the file to its full length. Page-aligned runs go
   * to the device directly (O_DIRECT: no page-cache copy, nothing left for the commit's fsync to
   * write); the rest, e.g. a stream's last partial page, through the page cache.
   */
  async write(chunk: Uint8Array): Promise<void> {
    if (this.state !== 'open') throw new Error(`upload ${this.id} is ${this.state}`);
    const position = this.written;
    this.written += chunk.length;
    this.hash?.update(chunk);
    for (const run of blockRuns(chunk, position)) {
      if (run.zero) continue;
      let off = run.start;
      while (off < run.end) {
        // the run's whole pages direct when they can be, then what is left through the cache
        const pages = this.direct ? directPrefix(chunk.subarray(off, run.end), position + off) : 0;
        const length = pages || run.end - off;
        const { bytesWritten } = await (pages ? this.direct! : this.fh).write(chunk, off, length, position + off);
        if (pages) this.direct_ += bytesWritten;
        off += bytesWritten;
      }
    }
    this.flushInBackground();
  }

  private flushInBackground(): void {
    if (this.flushing || this.written - this.flushedUpTo < FLUSH_EVERY_BYTES) return;
    const upTo = this.written;
    this.flushing = this.fh.datasync().then(
      () => {
        this.flushedUpTo = upTo;
        this.flushing = undefined;
      },
      // the commit's own fsync fails the same way and says so; until then nothing is lost
      () => {
        this.flushing = undefined;
      },
    );
  }

  async commit(expected?: Digest): Promise<BlobInfo> {
    if (this.state !== 'open') throw new Error(`upload ${this.id} is ${this.state}`);
    this.state = 'committing';
    try {
      // trailing zero blocks were skipped: the length comes from here
      await this.flushing;
      await this.fh.truncate(this.written);
      await this.fh.sync();
      await this.fh.close();
      await this.direct?.close();
      let digest: Digest;
      if (this.hash) {
        digest = `sha256:${this.hash.digest('hex')}`;
        if (expected !== undefined && expected !== digest) throw new DigestMismatch(expected, digest);
      } else {
        if (expected === undefined || !isDigest(expected)) throw new Error(`upload ${this.id} was started with callerHashes: commit needs the digest`);
        digest = expected;
      }
      const info = await this.store.place(join(this.dir, 'data'), digest, this.written);
      this.state = 'committed';
      await rm(this.dir, { recursive: true, force: true });
      return info;
    } catch (e) {
      await this.abort();
      throw e;
    }
  }

  async abort(): Promise<void> {
    if (this.state === 'committed') return;
    this.state = 'aborted';
    await this.flushing;
    await this.fh.close().catch(() => undefined);
    await this.direct?.close().catch(() => undefined);
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** The file opened for O_DIRECT writes; undefined where the addon or the filesystem (tmpfs) cannot. */
async function openDirect(path: string): Promise<FileHandle | undefined> {
  if (!directIoSupported || constants.O_DIRECT === undefined) return undefined;
  try {
    return await open(path, constants.O_WRONLY | constants.O_DIRECT);
  } catch {
    return undefined;
  }
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Where a writer's bytes go: a `.part` file written at offsets (then fsynced and renamed), or a
 * sequential stream. `openOutput` + `finishOutput` give every writer the same commit discipline:
 *
 * - file: `<path>.part` is created (truncating a stale one), written, flushed (fdatasync), closed
 *   and renamed over `<path>`; the directory is fsynced so the rename survives a crash. On any
 *   error or abort the `.part` is deleted, so a failure never leaves a file that looks complete.
 *   The cache mode (`cache-mode.ts`) may make each write synchronous (writethrough) or drop the
 *   flushes (unsafe: then a crash, unlike a failure, may leave an incomplete file behind).
 * - stream: bytes are written in order, honouring back-pressure; the writer ends the stream on
 *   success and destroys it on failure (an HTTP client then sees a reset, never a short body that
 *   looks whole). The failure itself is reported once, by the rejected `write`: the stream belongs
 *   to the caller, so it is destroyed without an error — an 'error' event on a stream nobody
 *   listens to would end the process, not the request.
 *
 * Writes are coalesced: contiguous `pwrite`s are gathered (up to COALESCE_BYTES) into one
 * `writev`, so writers may emit cluster-sized pieces without paying a syscall each. The sink keeps
 * the caller's buffers until they are flushed: callers hand them over and never reuse them.
 *
 * A file sink also takes kernel copies from another file (`copyRuns`, through the copy engine of
 * `src/io/copy-range.ts`) when the engine built and the mode does not open the file O_DSYNC
 * (`canCopy`). A flushing mode then starts the writeback of each copied range as it goes, instead
 * of the background fdatasync of EARLY_FLUSH_BYTES; the fdatasync before the rename is the same.
 */
import { once } from 'node:events';
import { constants } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Writable } from 'node:stream';
import { copyEngine } from '../../io/copy-range.js';
import { cachePolicy, type CachePolicy } from '../cache-mode.js';
import { DiskError, type CacheMode, type OutputTarget, type WriteOptions } from '../disk.js';

// node:fs/promises (eight modules) is loaded when an output is opened: `imago compare` imports every
// writer and writes nothing (issue 20, CLI start)
const fsp = () => process.getBuiltinModule('node:fs/promises');

const COALESCE_BYTES = 2 * 1024 * 1024;
/**
 * A flushing cache mode starts an fdatasync in the background each time this many bytes were
 * written since the last one started (one at a time): the disk writes back while the conversion
 * goes on, so the flush before the rename has little left to do. Without it that flush wrote the
 * whole output after the conversion (qemu-img -t writeback does the same: about 0.4 s per GiB
 * here). The durability is the same: the final flush still runs before the rename.
 */
const EARLY_FLUSH_BYTES = 64 * 1024 * 1024;
/** a shared zero buffer for streaming holes; never written to */
const ZEROS = new Uint8Array(1024 * 1024);

/** Bytes appended in order: what a streamable writer needs. */
export interface SequentialSink {
  /** Appends `bytes` (ownership passes to the sink). */
  write(bytes: Uint8Array): Promise<void>;
  /** Appends `length` zero bytes. */
  writeZeros(length: number): Promise<void>;
  /** Bytes appended so far. */
  readonly position: number;
}

export class FileSink {
  private pendingAt = 0;
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  /** the write started by the last flush (one at a time, in order) */
  private inFlight: Promise<void> = Promise.resolve();
  /** bytes handed to the file (counted once, at their first write) */
  bytesWritten = 0;
  /** bytes written since the last early flush was started */
  private unflushed = 0;
  /** the background fdatasync in progress, if any (see EARLY_FLUSH_BYTES) */
  private earlyFlush: Promise<void> | undefined;
  /**
   * The first background fdatasync failure. Kept to fail the commit: Linux reports a writeback
   * error to a file descriptor once, so the final fdatasync may succeed after an earlier one failed.
   */
  private flushError: unknown;
  /** the kernel copies started and not yet awaited by `settle` (each in order after the previous) */
  private copying: Promise<void> = Promise.resolve();

  private constructor(
    readonly path: string,
    readonly partPath: string,
    private readonly fh: FileHandle,
    private readonly policy: CachePolicy,
  ) {}

  static async open(path: string, cache: CacheMode = 'writeback'): Promise<FileSink> {
    const partPath = `${path}.part`;
    const policy = cachePolicy(cache);
    const flags = constants.O_RDWR | constants.O_CREAT | constants.O_TRUNC | (policy.syncEachWrite ? constants.O_DSYNC : 0);
    const fh = await fsp().open(partPath, flags, 0o666);
    return new FileSink(path, partPath, fh, policy);
  }

  /** Writes `bytes` at `position` (ownership passes to the sink until it flushes). */
  async pwrite(bytes: Uint8Array, position: number): Promise<void> {
    if (bytes.length === 0) return;
    if (this.pendingBytes > 0 && position === this.pendingAt + this.pendingBytes && this.pendingBytes + bytes.length <= COALESCE_BYTES) {
      this.pending.push(bytes);
      this.pendingBytes += bytes.length;
      return;
    }
    await this.flush();
    this.pending = [bytes];
    this.pendingAt = position;
    this.pendingBytes = bytes.length;
  }

  /**
   * Starts writing the gathered bytes and returns once the *previous* write is done: one write
   * stays in flight while the writer reads and prepares the next bytes, so reading and writing
   * overlap. `settle()` waits for the last one (commit, truncate and reads of the file do).
   * (Two or more writes in flight measured no faster: buffered writes to one file are serialized
   * by the filesystem.)
   */
  async flush(): Promise<void> {
    if (this.pendingBytes === 0) return;
    const buffers = this.pending;
    const at = this.pendingAt;
    const total = this.pendingBytes;
    this.pending = [];
    this.pendingBytes = 0;
    const previous = this.inFlight;
    const write = (async () => {
      await previous;
      await this.writeAll(buffers, at, total);
    })();
    write.catch(() => undefined); // surfaces at the next flush or settle
    this.inFlight = write;
    await previous;
  }

  /** Flushes and waits until every byte handed over is in the file. */
  async settle(): Promise<void> {
    await this.flush();
    await this.inFlight;
    await this.copying;
  }

  /** True when `copyRuns` may be used: the copy engine built, and each write need not be synchronous (O_DSYNC). */
  get canCopy(): boolean {
    return copyEngine() !== undefined && !this.policy.syncEachWrite;
  }

  /**
   * Copies runs [srcOffset, dstOffset, length] of the open file `srcFd` into this file inside the
   * kernel; only when `canCopy`. Returns once the *previous* copy is done (one stays in flight
   * while the caller prepares the next, as `flush` does); `settle` waits for the last. `srcFd`
   * must stay open until then. A source that ends early leaves the rest unwritten (zeros).
   */
  async copyRuns(srcFd: number, runs: readonly (readonly [number, number, number])[]): Promise<void> {
    const engine = copyEngine();
    if (!engine || this.policy.syncEachWrite) throw new DiskError('kernel copies are not available for this output', 'IO');
    if (runs.length === 0) return;
    const previous = this.copying;
    const copy = (async () => {
      await previous;
      this.bytesWritten += await engine.copy(srcFd, this.fh.fd, runs, this.policy.flush);
    })();
    copy.catch(() => undefined); // surfaces at the next copyRuns or settle
    this.copying = copy;
    await previous;
  }

  private async writeAll(buffers: Uint8Array[], at: number, total: number): Promise<void> {
    let done = 0;
    while (done < total) {
      const { bytesWritten } = await this.fh.writev(buffers, at);
      if (bytesWritten === total - done) break;
      // A short writev (rare, e.g. a signal): write the rest piecewise.
      done += bytesWritten;
      at += bytesWritten;
      const rest = Buffer.concat(buffers).subarray(done);
      await this.fh.write(rest, 0, rest.length, at);
      break;
    }
    this.bytesWritten += total;
    this.unflushed += total;
    if (this.policy.flush && !this.policy.syncEachWrite && this.unflushed >= EARLY_FLUSH_BYTES && this.earlyFlush === undefined) {
      this.unflushed = 0;
      const f = this.fh
        .datasync()
        .catch((e: unknown) => {
          this.flushError ??= e;
        })
        .finally(() => {
          if (this.earlyFlush === f) this.earlyFlush = undefined;
        });
      this.earlyFlush = f;
    }
  }

  /** Sets the file length (extending makes a hole: the filesystem stores nothing for it). */
  async truncate(size: number): Promise<void> {
    await this.settle();
    await this.fh.truncate(size);
  }

  /** An appending view starting at `start`. */
  sequential(start = 0): SequentialSink {
    let position = start;
    return {
      get position() {
        return position;
      },
      write: async (bytes) => {
        await this.pwrite(bytes, position);
        position += bytes.length;
      },
      async writeZeros(length: number) {
        // A file needs no zeros written: extending the length later leaves a hole.
        position += length;
      },
    };
  }

  async commit(): Promise<void> {
    await this.settle();
    await this.earlyFlush;
    if (this.flushError !== undefined) throw this.flushError;
    // fdatasync, as qemu flushes: it also writes the metadata needed to read the data back (the size)
    if (this.policy.flush) await this.fh.datasync();
    await this.fh.close();
    await fsp().rename(this.partPath, this.path);
    if (this.policy.flush) await syncDirectory(dirname(this.path));
  }

  async abort(): Promise<void> {
    // a copy still running on the thread pool uses this file's descriptor: it must end before the close
    await Promise.allSettled([this.inFlight, this.earlyFlush, this.copying]);
    await this.fh.close().catch(() => undefined);
    await fsp().rm(this.partPath, { force: true });
  }
}

async function syncDirectory(dir: string): Promise<void> {
  const fh = await fsp().open(dir, 'r');
  try {
    await fh.sync();
  } catch {
    // Some filesystems refuse fsync on a directory; the rename itself is still atomic.
  } finally {
    await fh.close();
  }
}

export class StreamSink implements SequentialSink {
  position = 0;

  constructor(readonly stream: Writable) {}

  async write(bytes: Uint8Array): Promise<void> {
    if (bytes.length === 0) return;
    this.position += bytes.length;
    if (this.stream.destroyed) throw new DiskError('the output stream was closed before the image was complete', 'IO');
    if (!this.stream.write(bytes)) await drained(this.stream);
  }

  async writeZeros(length: number): Promise<void> {
    while (length > 0) {
      const n = Math.min(length, ZEROS.length);
      await this.write(ZEROS.subarray(0, n));
      length -= n;
    }
  }

  async end(): Promise<void> {
    this.stream.end();
    if (!this.stream.writableFinished) await once(this.stream, 'finish');
  }
}

async function drained(stream: Writable): Promise<void> {
  const ac = new AbortController();
  try {
    await Promise.race([once(stream, 'drain', { signal: ac.signal }), once(stream, 'close', { signal: ac.signal })]);
  } finally {
    ac.abort();
  }
  if (stream.destroyed) throw new DiskError('the output stream was closed before the image was complete', 'IO');
}

/** The opened output of one write: exactly one of `file` / `stream` is set. */
export type Output = { readonly kind: 'file'; readonly file: FileSink } | { readonly kind: 'stream'; readonly stream: StreamSink };

/**
 * Runs `body` against the target with the commit discipline above and returns the bytes written.
 * `streamable: false` writers refuse a stream target up front.
 */
export async function withOutput(
  target: OutputTarget,
  format: string,
  streamable: boolean,
  opts: Pick<WriteOptions, 'signal' | 'cache'>,
  body: (out: Output) => Promise<void>,
): Promise<number> {
  const { signal } = opts;
  signal?.throwIfAborted();
  if (target.kind === 'stream') {
    if (!streamable)
      throw new DiskError(
        `${format} cannot be written to a stream (its tables precede data whose place is known only at the end); write it to a file`,
        'UNSUPPORTED',
      );
    const stream = new StreamSink(target.stream);
    try {
      await body({ kind: 'stream', stream });
      signal?.throwIfAborted();
      await stream.end();
    } catch (err) {
      target.stream.destroy();
      throw err;
    }
    return stream.position;
  }
  const file = await FileSink.open(target.path, opts.cache);
  try {
    await body({ kind: 'file', file });
    signal?.throwIfAborted();
    await file.commit();
  } catch (err) {
    await file.abort();
    throw err;
  }
  return file.bytesWritten;
}

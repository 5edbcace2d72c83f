/**
 * A file received in parts (a resumable upload's bytes): one writer at a time appends a part and
 * makes it durable (fdatasync) before saying how long the file is; a follower reads the file from
 * its start and waits for bytes that have not arrived yet. So a consumer can read, as one stream,
 * bytes that arrive in several requests — and after a restart, read again what arrived before it.
 *
 * The file's length is the received offset: a part cut off in the middle (a dropped client, a
 * killed process) leaves the bytes that were written, all of them the client's, in order.
 */
import { open, rm, stat, type FileHandle } from 'node:fs/promises';

/** bytes a follower reads at once (each read is a new buffer: consumers may keep what they get) */
const FOLLOW_CHUNK = 1024 * 1024;

export class GrowingFile {
  private waiters: Array<() => void> = [];
  private closed = false;

  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    private size: number,
  ) {}

  /** A new, empty file (fails when it exists). */
  static async create(path: string): Promise<GrowingFile> {
    const fh = await open(path, 'wx+', 0o600);
    await fh.sync();
    return new GrowingFile(path, fh, 0);
  }

  /** The file as it is on disk. */
  static async open(path: string): Promise<GrowingFile> {
    const fh = await open(path, 'r+');
    const st = await fh.stat();
    return new GrowingFile(path, fh, st.size);
  }

  /** The length of the file at `path`, undefined when it does not exist. */
  static async lengthOf(path: string): Promise<number | undefined> {
    try {
      return (await stat(path)).size;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  /** bytes received */
  get length(): number {
    return this.size;
  }

  /**
   * Appends `part` at the end, up to `max` bytes in all (more is an error thrown by `tooLong`);
   * `check` runs before each chunk is written and stops the part by throwing. Whatever ends the
   * part (its end, an error, the client gone), what was written is synced before this returns or
   * throws. Returns the new length.
   */
  async append(part: AsyncIterable<Uint8Array>, opts: { max: number; tooLong: (length: number) => Error; check?: () => void }): Promise<number> {
    try {
      for await (const chunk of part) {
        opts.check?.();
        if (this.size + chunk.length > opts.max) throw opts.tooLong(this.size + chunk.length);
        let done = 0;
        while (done < chunk.length) {
          const { bytesWritten } = await this.fh.write(chunk, done, chunk.length - done, this.size);
          done += bytesWritten;
          this.size += bytesWritten;
        }
        this.wake();
      }
    } finally {
      await this.fh.datasync();
    }
    return this.size;
  }

  /**
   * The file's bytes from its start up to `total`, waiting for bytes not there yet; ends at
   * `total`, throws the signal's reason once it aborts.
   */
  async *follow(total: number, signal: AbortSignal): AsyncGenerator<Uint8Array> {
    let pos = 0;
    while (pos < total) {
      signal.throwIfAborted();
      if (pos >= this.size) {
        await this.grown(signal);
        continue;
      }
      const n = Math.min(FOLLOW_CHUNK, this.size - pos, total - pos);
      const buf = Buffer.allocUnsafe(n);
      const { bytesRead } = await this.fh.read(buf, 0, n, pos);
      if (bytesRead === 0) throw new Error(`${this.path} ends at ${pos} bytes, before the ${this.size} it was said to hold`);
      pos += bytesRead;
      yield bytesRead === n ? buf : buf.subarray(0, bytesRead);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.wake();
    await this.fh.close();
  }

  /** Closes and deletes the file. */
  async remove(): Promise<void> {
    await this.close().catch(() => undefined);
    await rm(this.path, { force: true });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private grown(signal: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const onAbort = () => reject(signal.reason as Error);
      signal.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(() => {
        signal.removeEventListener('abort', onAbort);
        if (this.closed) reject(new Error(`${this.path} was closed`));
        else resolve();
      });
    });
  }
}

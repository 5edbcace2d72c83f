/**
 * A bounded channel of byte chunks from one producer to one consumer: the tee by which a second
 * pipeline sees the bytes of a first one as they pass (an OCI layer's bytes, unpacked and ingested
 * while the layer itself is staged: domain/registry/early-layer-ingests.ts).
 *
 * Backpressure both ways, memory bounded: `write` copies the chunk (the producer's buffer is
 * refilled once `write` settles) and resolves once the queue holds less than `maxQueuedBytes`, so
 * the producer never runs more than that far ahead of the consumer; the consumer waits for chunks.
 * A consumer that stops (`return()`, e.g. its pipeline failed or decided the bytes are not for it)
 * detaches: queued chunks are dropped and every later `write` resolves at once, so the producer
 * goes on at its own pace.
 */

const DONE: IteratorReturnResult<undefined> = { done: true, value: undefined };

export class ChunkChannel implements AsyncIterableIterator<Uint8Array> {
  private readonly queue: Uint8Array[] = [];
  private queuedBytes = 0;
  private ended = false;
  private failure: { error: unknown } | undefined;
  private detachedFlag = false;
  /** the consumer waiting for a chunk */
  private reader: { resolve: (r: IteratorResult<Uint8Array>) => void; reject: (e: unknown) => void } | undefined;
  /** the producer waiting for room */
  private writer: (() => void) | undefined;

  constructor(private readonly maxQueuedBytes: number) {}

  /** true once the consumer stopped: writes are dropped. */
  get detached(): boolean {
    return this.detachedFlag;
  }

  /** Queues a copy of `chunk`; resolves when there is room for the next one (or the consumer left). */
  write(chunk: Uint8Array): Promise<void> {
    if (this.detachedFlag || this.ended || chunk.length === 0) return Promise.resolve();
    const copy = Uint8Array.prototype.slice.call(chunk) as Uint8Array;
    if (this.reader) {
      const r = this.reader;
      this.reader = undefined;
      r.resolve({ done: false, value: copy });
      return Promise.resolve();
    }
    this.queue.push(copy);
    this.queuedBytes += copy.length;
    if (this.queuedBytes < this.maxQueuedBytes) return Promise.resolve();
    return new Promise((resolve) => (this.writer = resolve));
  }

  /** No more chunks: the consumer reads what is queued, then the end. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.wake();
  }

  /** The producer failed: the consumer's next read rejects with `error` (queued chunks are dropped). */
  fail(error: unknown): void {
    if (this.ended) return;
    this.ended = true;
    this.failure = { error };
    this.drop();
    this.wake();
  }

  /** The consumer stops: later writes are dropped and a waiting producer goes on. */
  detach(): void {
    this.detachedFlag = true;
    this.drop();
    this.wake();
  }

  next(): Promise<IteratorResult<Uint8Array>> {
    const chunk = this.queue.shift();
    if (chunk) {
      this.queuedBytes -= chunk.length;
      if (this.queuedBytes < this.maxQueuedBytes) this.release();
      return Promise.resolve({ done: false, value: chunk });
    }
    if (this.failure) return Promise.reject(this.failure.error);
    if (this.ended || this.detachedFlag) return Promise.resolve(DONE);
    return new Promise((resolve, reject) => (this.reader = { resolve, reject }));
  }

  return(): Promise<IteratorResult<Uint8Array>> {
    this.detach();
    return Promise.resolve(DONE);
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<Uint8Array> {
    return this;
  }

  private drop(): void {
    this.queue.length = 0;
    this.queuedBytes = 0;
  }

  private release(): void {
    const w = this.writer;
    this.writer = undefined;
    w?.();
  }

  private wake(): void {
    this.release();
    const r = this.reader;
    if (!r) return;
    this.reader = undefined;
    if (this.failure) r.reject(this.failure.error);
    else r.resolve(DONE);
  }
}

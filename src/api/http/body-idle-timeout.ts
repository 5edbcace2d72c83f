/**
 * A request body that stops arriving is cut off. Node's `requestTimeout` bounds the whole request
 * (a large, slow but steady upload would be killed), so Fastify runs with it off; this bounds the
 * wait for the *next* bytes instead. Only the time spent waiting on the client counts: while the
 * ingest is busy (backpressure), no `next()` is pending and no timer runs.
 */
import { PassThrough, type Readable } from 'node:stream';
import { DomainError } from '../../domain/errors.js';

export function bodyIdleError(idleMs: number, what: 'upload' | 'request'): DomainError {
  const retry = what === 'upload' ? 'upload again' : 'send the request again';
  return new DomainError('REQUEST_TIMEOUT', `no bytes received for ${formatSeconds(idleMs)}; the ${what} was cut off — ${retry}`, { idleMs });
}

/**
 * A parsed (JSON) body as a stream that fails with REQUEST_TIMEOUT when no bytes arrive for
 * `idleMs`. The parser reads as fast as bytes come, so all idle time is the client's.
 */
export function bodyWithIdleTimeout(payload: Readable, idleMs: number): Readable & { receivedEncodedLength: number } {
  const out = Object.assign(new PassThrough(), { receivedEncodedLength: 0 });
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      payload.unpipe(out);
      out.destroy(bodyIdleError(idleMs, 'request'));
    }, idleMs);
  };
  arm();
  payload.on('data', (chunk: Buffer) => {
    out.receivedEncodedLength += chunk.length;
    arm();
  });
  payload.on('end', () => clearTimeout(timer));
  payload.on('error', (e) => {
    clearTimeout(timer);
    out.destroy(e);
  });
  out.on('close', () => clearTimeout(timer));
  payload.pipe(out);
  return out;
}

/**
 * `body`, failing with REQUEST_TIMEOUT when no chunk arrives within `idleMs` of asking for one.
 *
 * A plain iterator with one timer per body, re-armed with `refresh()` when a chunk is asked for:
 * an async generator with a fresh timer, idle promise and `Promise.race` per chunk allocated
 * ~2 KiB of short-lived objects per 64 KiB chunk, which with 100 uploads at once were promoted
 * and paid for in full mark-compacts (issue 20, item 6). The timer is left armed between reads:
 * when it fires while no read is pending, the time was the ingest's, not the client's, and it
 * does nothing; it holds the process only while a read is pending (an abandoned body never
 * keeps it alive).
 */
export function withBodyIdleTimeout(body: AsyncIterable<Uint8Array>, idleMs: number, what: 'upload' | 'request' = 'upload'): AsyncIterableIterator<Uint8Array> {
  return new IdleBoundedBody(body[Symbol.asyncIterator](), idleMs, what);
}

const DONE: IteratorReturnResult<undefined> = { done: true, value: undefined };

class IdleBoundedBody implements AsyncIterableIterator<Uint8Array> {
  private timer: NodeJS.Timeout | undefined;
  /** rejects the pending read; set only while one is pending */
  private fail: ((e: unknown) => void) | undefined;
  private ended = false;

  constructor(
    private readonly it: AsyncIterator<Uint8Array>,
    private readonly idleMs: number,
    private readonly what: 'upload' | 'request',
  ) {}

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<Uint8Array>> {
    if (this.ended) return Promise.resolve(DONE);
    if (this.timer) this.timer.refresh().ref();
    else this.timer = setTimeout(() => this.onIdle(), this.idleMs);
    return new Promise((resolve, reject) => {
      this.fail = reject;
      this.it.next().then(
        (r) => {
          if (this.fail !== reject) return; // the timer won: nobody waits for this read any more
          this.fail = undefined;
          this.timer!.unref();
          if (r.done) this.end(false);
          resolve(r);
        },
        (e: unknown) => {
          if (this.fail !== reject) return;
          this.fail = undefined;
          this.end(true);
          reject(e);
        },
      );
    });
  }

  return(): Promise<IteratorResult<Uint8Array>> {
    this.end(true);
    return Promise.resolve(DONE);
  }

  private onIdle(): void {
    const fail = this.fail;
    if (!fail) return; // no read pending: the time was spent by the ingest (backpressure)
    this.fail = undefined;
    this.end(true);
    fail(bodyIdleError(this.idleMs, this.what));
  }

  /** Stops the timer; `early`: the body did not end by itself, so the source is told to stop. */
  private end(early: boolean): void {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.timer);
    if (early) this.it.return?.().catch(() => undefined);
  }
}

function formatSeconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`;
}

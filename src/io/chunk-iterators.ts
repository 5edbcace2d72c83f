/**
 * Light async iterators for the stages of the one data path that only look at each chunk or
 * relabel errors. An async generator pays several promises and a result object per chunk per
 * stage; with 64 KiB chunks and 100 uploads at once those short-lived objects outlived the young
 * generation and were promoted, paid for by full mark-compacts (issue 20, item 6). These pass the
 * source's own `next()` promise on, or one `then()` of it.
 */

const DONE: IteratorReturnResult<undefined> = { done: true, value: undefined };

/**
 * `source`, with `see(chunk)` called on each chunk as it goes by. When `see` throws, the source
 * is ended (its `return()`) and the error ends the iteration; `return()` ends the source too — as
 * a `for await` loop over the source that yields each chunk would.
 */
export function tapChunks<T>(source: AsyncIterable<T>, see: (chunk: T) => void): AsyncIterableIterator<T> {
  const it = source[Symbol.asyncIterator]();
  const seen = (r: IteratorResult<T>): IteratorResult<T> => {
    if (r.done) return r;
    try {
      see(r.value);
    } catch (e) {
      it.return?.().catch(() => undefined);
      throw e;
    }
    return r;
  };
  return {
    [Symbol.asyncIterator]() {
      return this;
    },
    next: () => it.next().then(seen),
    return: () => (it.return ? it.return() : Promise.resolve(DONE)),
  };
}

/**
 * `source`, its errors replaced by `relabel(error)`. `return()` ends this iterator only: the source
 * is left to its owner (an HTTP body is answered or destroyed by its door, not by the pipeline).
 */
export function relabelErrors<T>(source: AsyncIterable<T>, relabel: (e: unknown) => unknown): AsyncIterableIterator<T> {
  const it = source[Symbol.asyncIterator]();
  let ended = false;
  const fail = (e: unknown): never => {
    ended = true;
    throw relabel(e);
  };
  return {
    [Symbol.asyncIterator]() {
      return this;
    },
    next: () => (ended ? Promise.resolve(DONE) : it.next().then(undefined, fail)),
    return: () => {
      ended = true;
      return Promise.resolve(DONE);
    },
  };
}

/**
 * `first` (chunks already read), then `failure` if reading them failed, then the rest of `it`.
 * `done`: `it` already ended. `return()` before the end ends `it` too (a decoder's pipeline is
 * destroyed and its child process killed, instead of waiting on a full pipe forever).
 */
export function prepend<T>(first: readonly T[], failure: unknown, it: AsyncIterator<T>, done: boolean): AsyncIterableIterator<T> {
  let i = 0;
  let failed = failure !== undefined;
  let ended = false;
  return {
    [Symbol.asyncIterator]() {
      return this;
    },
    next(): Promise<IteratorResult<T>> {
      if (ended) return Promise.resolve(DONE);
      if (i < first.length) return Promise.resolve({ done: false, value: first[i++]! });
      if (failed) {
        failed = false;
        ended = true;
        return Promise.reject(failure);
      }
      if (done) {
        ended = true;
        return Promise.resolve(DONE);
      }
      return it.next().then(
        (r) => {
          if (r.done) done = ended = true;
          return r;
        },
        (e: unknown) => {
          // as a generator's `finally` would: the stream below is told to stop
          ended = true;
          it.return?.()?.catch(() => undefined);
          throw e;
        },
      );
    },
    async return(): Promise<IteratorResult<T>> {
      const stopBelow = !ended && !done && failure === undefined;
      ended = true;
      if (stopBelow) await it.return?.()?.catch(() => undefined);
      return DONE;
    },
  };
}

/**
 * `exactLength`: a byte stream that must deliver exactly `expected` bytes. A stored blob is read
 * after its size was announced (Content-Length, a catalog record); if the file ends short or runs
 * long — changed or damaged on storage after it was stored — the stream errors instead of ending,
 * so whoever consumes it (an HTTP response) aborts the transfer rather than end a cut-off file that
 * looks whole.
 *
 * Assembled with `pipeline`, which listens for errors on both ends: a failure of the source or of
 * the length check ends this one stream, never the process, whether or not a consumer listens.
 */
import { pipeline, Transform, type Readable } from 'node:stream';

export function exactLength(source: Readable, expected: number, mismatch: (actual: number) => Error): Readable {
  let seen = 0;
  const checked = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      seen += chunk.length;
      if (seen > expected) cb(mismatch(seen));
      else cb(null, chunk);
    },
    flush(cb) {
      cb(seen === expected ? null : mismatch(seen));
    },
  });
  // the consumer learns of any error from `checked` itself (destroyed with it); nothing to do here
  pipeline(source, checked, () => undefined);
  return checked;
}

/** The `Range` request header (RFC 9110 §14), for every door that serves bytes. */
import { DomainError } from '../../domain/errors.js';
import type { ByteRange } from '../../store/blob-store.js';

/** RFC 9110 single byte range; multiple ranges or a stale If-Range → the whole body (null). */
export function parseRange(value: string | undefined, size: number, ifRange: string | undefined, etag: string | undefined): ByteRange | null {
  if (!value) return null;
  if (ifRange !== undefined && ifRange !== etag) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(value.trim());
  if (!m || (m[1] === '' && m[2] === '')) {
    if (/^bytes=[\d\s,-]+$/.test(value)) return null; // several ranges: send it all
    throw new DomainError('INVALID_REQUEST', `Range header "${value.slice(0, 60)}" is not "bytes=START-END"`);
  }
  let start: number;
  let end: number;
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0) throw new DomainError('RANGE_NOT_SATISFIABLE', `range "${value}" asks for no bytes`, { size });
    start = Math.max(0, size - n);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  if (start >= size || start > end) {
    throw new DomainError('RANGE_NOT_SATISFIABLE', `range "${value}" is outside the image's ${size} bytes`, { size });
  }
  return { start, end };
}

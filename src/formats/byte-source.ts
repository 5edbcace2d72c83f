/**
 * The one interface every parser reads bytes through.
 *
 * Offsets and sizes are byte positions inside one file; they are plain `number`s that must be
 * safe integers (exact up to 8 PiB, far beyond any image). 64-bit *fields* decoded from headers
 * stay `bigint` until converted with `toSafeNumber`, which refuses values that are not exact.
 */
export type DigestAlgorithm = 'sha1' | 'sha256' | 'sha512' | 'md5';

export interface ByteSource {
  /** Total size in bytes; absent while it is not known yet (a stream still flowing). */
  readonly size?: number;
  /**
   * Bytes [offset, offset + length). A read that runs past the end returns fewer bytes (a short
   * read); callers that need every byte use `readExact`.
   */
  read(offset: number, length: number): Promise<Uint8Array>;
  /**
   * Optional: hex digest of bytes [offset, offset + length) without holding them (a stream
   * inspector hashes them as they pass). Use `digestRange`, which falls back to chunked reads.
   */
  digest?(offset: number, length: number, algorithm: DigestAlgorithm): Promise<string>;
}

/**
 * Thrown by a capture-backed source when the requested bytes have not passed by (yet). The stream
 * inspector catches it to learn which regions to capture; nothing else should catch it.
 */
export class NeedBytes extends Error {
  constructor(
    readonly offset: number,
    readonly length: number,
    /** true when the read is relative to an end that is not known yet */
    readonly needsSize = false,
  ) {
    super(needsSize ? `need ${length} bytes at the end (size not known yet)` : `need ${length} bytes at ${offset}`);
    this.name = 'NeedBytes';
  }
}

/** A parser found the bytes malformed: the message says what and where. */
export class FormatError extends Error {
  constructor(
    message: string,
    /** finding code this error maps to */
    readonly code: string = 'MALFORMED_HEADER',
  ) {
    super(message);
    this.name = 'FormatError';
  }
}

/** Hex digest of a byte range, read in bounded chunks when the source cannot hash by itself. */
export async function digestRange(src: ByteSource, offset: number, length: number, algorithm: DigestAlgorithm): Promise<string> {
  checkRange(offset, length);
  if (src.digest) return src.digest(offset, length, algorithm);
  // node:crypto is loaded on first use: most inspections never hash (issue 20, CLI start)
  const h = process.getBuiltinModule('node:crypto').createHash(algorithm);
  const chunk = 1024 * 1024;
  for (let done = 0; done < length;) {
    const b = await readExact(src, offset + done, Math.min(chunk, length - done), 'hashed range');
    h.update(b);
    done += b.length;
  }
  return h.digest('hex');
}

/**
 * Thrown by a capture-backed source when a digest of a range still ahead of the stream is asked
 * for: the stream inspector then hashes that range as it passes.
 */
export class NeedDigest extends Error {
  constructor(
    readonly offset: number,
    readonly length: number,
    readonly algorithm: DigestAlgorithm,
  ) {
    super(`need ${algorithm} of ${length} bytes at ${offset}`);
    this.name = 'NeedDigest';
  }
}

export class BufferSource implements ByteSource {
  readonly size: number;
  constructor(private readonly bytes: Uint8Array) {
    this.size = bytes.length;
  }
  async read(offset: number, length: number): Promise<Uint8Array> {
    checkRange(offset, length);
    if (offset >= this.bytes.length) return new Uint8Array(0);
    return this.bytes.subarray(offset, Math.min(this.bytes.length, offset + length));
  }
}

export function checkRange(offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`invalid read offset ${offset}`);
  if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`invalid read length ${length}`);
}

/** Reads exactly `length` bytes or throws a FormatError naming what was being read. */
export async function readExact(src: ByteSource, offset: number, length: number, what: string): Promise<Uint8Array> {
  const b = await src.read(offset, length);
  if (b.length < length) {
    throw new FormatError(`${what} at offset ${offset} (${length} bytes) runs past the end of the image`, 'OFFSET_PAST_END');
  }
  return b;
}

/** Offset of the last `length` bytes; throws NeedBytes(needsSize) while the size is unknown. */
export function tailOffset(src: ByteSource, length: number): number {
  if (src.size === undefined) throw new NeedBytes(0, length, true);
  return Math.max(0, src.size - length);
}

/** Checked bigint → number conversion: a value that is not an exact safe integer is an error. */
export function toSafeNumber(v: bigint, what: string): number {
  if (v < 0n || v > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new FormatError(`${what} (${v}) is out of range`, 'FIELD_OUT_OF_RANGE');
  }
  return Number(v);
}

export function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

/** ASCII/Latin-1 text of bytes, stopping at the first NUL. */
export function cString(b: Uint8Array): string {
  const end = b.indexOf(0);
  return latin1(end < 0 ? b : b.subarray(0, end));
}

export function latin1(b: Uint8Array): string {
  let s = '';
  for (let i = 0; i < b.length; i += 4096) s += String.fromCharCode(...b.subarray(i, Math.min(b.length, i + 4096)));
  return s;
}

export function utf8(b: Uint8Array): string {
  return new TextDecoder('utf-8', { fatal: false }).decode(b);
}

export function utf16le(b: Uint8Array): string {
  const s = new TextDecoder('utf-16le', { fatal: false }).decode(b);
  const nul = s.indexOf('\0');
  return nul < 0 ? s : s.slice(0, nul);
}

export function bytesEqual(a: Uint8Array, offset: number, expected: Uint8Array | string): boolean {
  const e = typeof expected === 'string' ? asciiBytes(expected) : expected;
  if (offset + e.length > a.length) return false;
  for (let i = 0; i < e.length; i++) if (a[offset + i] !== e[i]) return false;
  return true;
}

export function asciiBytes(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i) & 0xff;
  return out;
}

export function isAllZero(b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

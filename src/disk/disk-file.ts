/**
 * What a reader reads its image from: a positional byte source of known size (a file handle, or a
 * window of one for an OVA member). Every structure a reader loads goes through `readStructure`,
 * which checks the range against the file and turns a short read into a DiskError naming the
 * structure.
 */
import { FormatError, toSafeNumber, type ByteSource } from '../formats/byte-source.js';
import { DiskError } from './disk.js';

export interface DiskFile extends ByteSource {
  readonly size: number;
  close?(): Promise<void>;
  /** Optional: reads into the caller's buffer (no allocation); returns the bytes read (short at the end). */
  readInto?(buf: Uint8Array, offset: number, length: number): Promise<number>;
  /** Optional: the open file's descriptor, when the DiskFile is a whole local file (its offsets are the file's). */
  readonly fd?: number;
  /** Optional: the file's data regions inside [from, to) as the filesystem knows them (SEEK_DATA); undefined when unknown. */
  dataRegions?(from: number, to: number): [number, number][] | undefined;
}

/** Reads exactly `length` bytes of a structure at `offset`, or throws a DiskError naming it. */
export async function readStructure(file: DiskFile, offset: number, length: number, what: string): Promise<Uint8Array> {
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
    throw new DiskError(`${what}: offset ${offset} / length ${length} is not a valid file range`);
  }
  if (offset + length > file.size) {
    throw new DiskError(`${what} at offset ${offset} (${length} bytes) lies past the end of the ${file.size}-byte file; the image is truncated or crafted`);
  }
  const b = await file.read(offset, length);
  if (b.length < length) throw new DiskError(`${what} at offset ${offset}: the file ended after ${b.length} of ${length} bytes`);
  return b;
}

/** Checked bigint → number for a field read from an image (DiskError instead of FormatError). */
export function fieldNumber(v: bigint, what: string): number {
  try {
    return toSafeNumber(v, what);
  } catch (e) {
    throw asDiskError(e);
  }
}

/** A FormatError from the header parsers becomes a DiskError; anything else is rethrown unchanged. */
export function asDiskError(e: unknown): unknown {
  if (e instanceof FormatError) return new DiskError(e.message, 'MALFORMED_IMAGE');
  return e;
}

/** Runs a header parser from src/formats, turning its FormatError into a DiskError. */
export async function parsing<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw asDiskError(e);
  }
}

/** Runs a reader's open on `file`; when the open fails the file is closed (the reader owns it). */
export async function owning<T>(file: DiskFile, open: () => Promise<T>): Promise<T> {
  try {
    return await parsing(open);
  } catch (e) {
    await file.close?.();
    throw e;
  }
}

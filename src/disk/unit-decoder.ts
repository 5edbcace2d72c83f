/**
 * Decoders for one compressed unit (a qcow2 cluster, a VMDK grain), each bounded by the unit's
 * size: a hostile unit that would expand further is an error, never a large allocation.
 *
 * - qcow2 zlib: raw deflate (no zlib header), qemu `qcow2_zlib_decompress`. The stored range is
 *   rounded to 512-byte sectors, so bytes of the next compressed cluster follow the stream; qemu
 *   accepts the result when the output is full even if the input ends early (Z_BUF_ERROR), which
 *   Z_SYNC_FLUSH reproduces.
 * - qcow2 zstd: one zstd frame (qemu `qcow2_zstd_decompress`), followed by the same padding. We
 *   find the frame's end by walking its block headers (RFC 8878 §3.1.1) and feed only the frame to
 *   fzstd's streaming decoder, whose output we count and stop at the unit size.
 * - VMDK: zlib with header (RFC 1950), qemu `vmdk_read_extent` → `uncompress`.
 */
import { createRequire } from 'node:module';
import { constants, inflateRawSync, inflateSync } from 'node:zlib';
import { DiskError } from './disk.js';

type Fzstd = typeof import('fzstd');
let fzstd: Fzstd | undefined;
/** fzstd (whose module builds its tables when loaded) is loaded by the first zstd unit: most disks have none (issue 20, CLI start). */
const zstdDecoder = (): Fzstd['Decompress'] => (fzstd ??= createRequire(import.meta.url)('fzstd') as Fzstd).Decompress;

export function inflateRawUnit(data: Uint8Array, unitBytes: number, what: string): Uint8Array {
  return zlibUnit(() => inflateRawSync(data, { maxOutputLength: unitBytes, finishFlush: constants.Z_SYNC_FLUSH }), what);
}

export function inflateZlibUnit(data: Uint8Array, unitBytes: number, what: string): Uint8Array {
  return zlibUnit(() => inflateSync(data, { maxOutputLength: unitBytes, finishFlush: constants.Z_SYNC_FLUSH }), what);
}

function zlibUnit(run: () => Buffer, what: string): Uint8Array {
  try {
    return new Uint8Array(run());
  } catch (e) {
    const why = (e as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE' ? 'expands past its unit size' : `is corrupt (${(e as Error).message})`;
    throw new DiskError(`${what} ${why}; the image is damaged or crafted`);
  }
}

const ZSTD_MAGIC = 0xfd2fb528;
const ZSTD_BLOCK_RLE = 1;
const ZSTD_BLOCK_RESERVED = 3;

/** Length of the zstd frame at the start of `data` (RFC 8878 §3.1.1), or a DiskError. */
function zstdFrameLength(data: Uint8Array, what: string): number {
  const v = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const bad = (why: string) => new DiskError(`${what} is not a valid zstd frame (${why}); the image is damaged or crafted`);
  if (data.length < 6 || v.getUint32(0, true) !== ZSTD_MAGIC) throw bad('no frame magic');
  const fhd = data[4]!;
  const fcsFlag = fhd >> 6;
  const singleSegment = (fhd >> 5) & 1;
  const checksum = (fhd >> 2) & 1;
  const dictIdFlag = fhd & 3;
  let at = 5 + (singleSegment ? 0 : 1) + [0, 1, 2, 4][dictIdFlag]! + [singleSegment, 2, 4, 8][fcsFlag]!;
  for (;;) {
    if (at + 3 > data.length) throw bad('truncated block header');
    const h = data[at]! | (data[at + 1]! << 8) | (data[at + 2]! << 16);
    const last = h & 1;
    const type = (h >> 1) & 3;
    const size = h >>> 3;
    if (type === ZSTD_BLOCK_RESERVED) throw bad('reserved block type');
    at += 3 + (type === ZSTD_BLOCK_RLE ? 1 : size);
    if (at > data.length) throw bad('truncated block');
    if (last) break;
  }
  at += checksum ? 4 : 0;
  if (at > data.length) throw bad('truncated checksum');
  return at;
}

class UnitOverflow extends Error {}

export function zstdUnit(data: Uint8Array, unitBytes: number, what: string): Uint8Array {
  const frame = data.subarray(0, zstdFrameLength(data, what));
  const out = new Uint8Array(unitBytes);
  let filled = 0;
  const Decompress = zstdDecoder();
  const d = new Decompress((chunk) => {
    if (filled + chunk.length > unitBytes) throw new UnitOverflow();
    out.set(chunk, filled);
    filled += chunk.length;
  });
  try {
    d.push(frame, true);
  } catch (e) {
    if (e instanceof UnitOverflow) throw new DiskError(`${what} expands past its unit size of ${unitBytes} bytes; the image is damaged or crafted`);
    throw new DiskError(`${what} is corrupt zstd (${(e as Error).message}); the image is damaged or crafted`);
  }
  return filled === unitBytes ? out : out.subarray(0, filled);
}

/**
 * Compression wrappers: detection only (pure). Peeling happens in `src/io/decompress.ts` with
 * size and ratio limits; the loop and its depth limit are in `src/inspect/`.
 *
 * | wrapper | offset | magic                                   | spec |
 * |---------|--------|-----------------------------------------|------|
 * | gzip    | 0      | 1f 8b 08 (deflate)                      | RFC 1952 §2.3.1 |
 * | xz      | 0      | fd 37 7a 58 5a 00                        | xz file format 1.0.4 §2.1.1.1 |
 * | zstd    | 0      | 28 b5 2f fd (frame) or 5? 2a 4d 18 (skippable frame) | RFC 8878 §3.1.1, §3.1.2 |
 * | bzip2   | 0      | "BZh" '1'..'9' then 31 41 59 26 53 59 (block) or 17 72 45 38 50 90 (empty stream end) | bzip2 1.0 format notes |
 */
import { bytesEqual } from './byte-source.js';

export const COMPRESSIONS = ['gzip', 'xz', 'zstd', 'bzip2'] as const;
export type Compression = (typeof COMPRESSIONS)[number];

/** Bytes of head needed to decide. */
export const COMPRESSION_PROBE_BYTES = 10;

export function detectCompression(head: Uint8Array): Compression | undefined {
  if (head.length >= 3 && head[0] === 0x1f && head[1] === 0x8b && head[2] === 0x08) return 'gzip';
  if (bytesEqual(head, 0, new Uint8Array([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return 'xz';
  if (bytesEqual(head, 0, new Uint8Array([0x28, 0xb5, 0x2f, 0xfd]))) return 'zstd';
  // zstd skippable frame: magic 0x184D2A5? little endian
  if (head.length >= 4 && (head[0]! & 0xf0) === 0x50 && head[1] === 0x2a && head[2] === 0x4d && head[3] === 0x18) return 'zstd';
  if (bytesEqual(head, 0, 'BZh') && head.length >= 10 && head[3]! >= 0x31 && head[3]! <= 0x39) {
    const block = new Uint8Array([0x31, 0x41, 0x59, 0x26, 0x53, 0x59]);
    const eos = new Uint8Array([0x17, 0x72, 0x45, 0x38, 0x50, 0x90]);
    if (bytesEqual(head, 4, block) || bytesEqual(head, 4, eos)) return 'bzip2';
  }
  return undefined;
}

/**
 * Bounded decompression: one decoder per wrapper, wrapped by counters that stop a bomb by
 * absolute output size and by expansion ratio (once the output is past a floor, so small
 * highly-compressible files are not refused).
 *
 * gzip uses node:zlib; xz uses lzma-native (liblzma, its binary ships inside the npm package);
 * zstd uses fzstd (pure JS; Node 20's zlib has no zstd); bzip2 uses unbzip2-stream (pure JS).
 */
import { Transform, type TransformCallback, type Duplex } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { Decompress as ZstdDecompress } from 'fzstd';
import { createDecompressor as createXzDecompressor } from 'lzma-native';
import unbzip2 from 'unbzip2-stream';

export type WrapperName = 'gzip' | 'xz' | 'zstd' | 'bzip2';

export interface DecompressLimits {
  maxDecompressedBytes: number;
  maxCompressionRatio: number;
  ratioFloorBytes: number;
}

export class DecompressionLimitError extends Error {
  constructor(
    readonly wrapper: WrapperName,
    readonly limit: 'size' | 'ratio',
    readonly compressedBytes: number,
    readonly decompressedBytes: number,
    message: string,
  ) {
    super(message);
    this.name = 'DecompressionLimitError';
  }
}

export class DecompressionError extends Error {
  constructor(
    readonly wrapper: WrapperName,
    message: string,
  ) {
    super(message);
    this.name = 'DecompressionError';
  }
}

/** The decoder for one wrapper (no limits: see BoundedDecoder). */
export function createDecoder(wrapper: WrapperName): Duplex {
  switch (wrapper) {
    case 'gzip':
      return createGunzip();
    case 'xz':
      return createXzDecompressor({ memlimit: 256 * 1024 * 1024 });
    case 'zstd':
      return new ZstdTransform();
    case 'bzip2':
      return unbzip2();
  }
}

/** fzstd's push API as a Transform. */
class ZstdTransform extends Transform {
  private readonly dec: ZstdDecompress;
  private pending: Uint8Array[] = [];
  constructor() {
    super();
    this.dec = new ZstdDecompress((chunk) => {
      this.pending.push(chunk);
    });
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      this.dec.push(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    } catch (e) {
      cb(e as Error);
      return;
    }
    this.flushPending();
    cb();
  }
  override _flush(cb: TransformCallback): void {
    try {
      this.dec.push(new Uint8Array(0), true);
    } catch (e) {
      cb(e as Error);
      return;
    }
    this.flushPending();
    cb();
  }
  private flushPending(): void {
    for (const c of this.pending) this.push(Buffer.from(c.buffer, c.byteOffset, c.byteLength));
    this.pending = [];
  }
}

/** Counts compressed bytes going in. */
export class ByteCounter extends Transform {
  bytes = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    cb(null, chunk);
  }
}

/**
 * Counts decompressed bytes coming out and fails the stream (DecompressionLimitError) as soon as
 * a limit is crossed — before the bytes that cross it are passed on.
 */
export class OutputLimiter extends Transform {
  bytes = 0;
  constructor(
    private readonly wrapper: WrapperName,
    private readonly input: ByteCounter,
    private readonly limits: DecompressLimits,
  ) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    const next = this.bytes + chunk.length;
    const { maxDecompressedBytes, maxCompressionRatio, ratioFloorBytes } = this.limits;
    if (next > maxDecompressedBytes) {
      cb(
        new DecompressionLimitError(
          this.wrapper,
          'size',
          this.input.bytes,
          next,
          `${this.wrapper} stream expands past ${maxDecompressedBytes} bytes (the decompressed-size limit)`,
        ),
      );
      return;
    }
    if (next > ratioFloorBytes && next > maxCompressionRatio * Math.max(1, this.input.bytes)) {
      cb(
        new DecompressionLimitError(
          this.wrapper,
          'ratio',
          this.input.bytes,
          next,
          `${this.wrapper} stream expands ${Math.round(next / Math.max(1, this.input.bytes))}:1 after ${next} bytes, ` +
            `over the ${maxCompressionRatio}:1 ratio limit`,
        ),
      );
      return;
    }
    this.bytes = next;
    cb(null, chunk);
  }
}

/**
 * Bounded decompression: one decoder per wrapper, wrapped by counters that stop a bomb by
 * absolute output size, by expansion ratio (once the output is past a floor, so small
 * highly-compressible files are not refused), and by the zero-bomb rule: output that is nearly
 * all zeros and expands past a lower ratio (deflate cannot exceed ~1030:1, `gzip -1` of zeros is
 * 229:1, so only this rule can catch a gzip of zeros).
 *
 * Every decoder honours backpressure, so memory stays bounded whatever the ratio: gzip uses
 * node:zlib (it decodes in bounded steps as its output is read); xz, zstd and bzip2 run Debian's
 * own `xz`, `zstd` and `lbzip2` (or `bzip2`) in a child process whose stdout is a pipe: when we stop reading, the
 * pipe fills and the decoder blocks. The in-process JS decoders they replace emitted all the
 * output of an input chunk at once (a 785-byte bzip2 became 1 GiB in memory); the tools are also
 * 2–30 times faster (docs/DEPENDENCIES.md). A child is killed when its stream is destroyed (the
 * consumer stopped, a limit fired, the client went away), so none outlives its request.
 */
import type { ChildProcess } from 'node:child_process';
import { Duplex, Transform, type TransformCallback } from 'node:stream';
import { zeroBytesIn } from './zero-blocks.js';

// node:child_process, node:os and node:zlib are loaded when a wrapper is decoded: `imago inspect`
// and `convert` of a plain image need none of them (issue 20, CLI start)
const childProcess = () => process.getBuiltinModule('node:child_process');

export type WrapperName = 'gzip' | 'xz' | 'zstd' | 'bzip2';

export interface DecompressLimits {
  maxDecompressedBytes: number;
  maxCompressionRatio: number;
  ratioFloorBytes: number;
  /** ratio past which output that is nearly all zeros is a bomb (past `ratioFloorBytes`); 0 = off */
  zeroBombRatio: number;
  /** share of the output in all-zero blocks that makes it "nearly all zeros" (0..1) */
  zeroBombShare: number;
}

export class DecompressionLimitError extends Error {
  constructor(
    readonly wrapper: WrapperName,
    readonly limit: 'size' | 'ratio' | 'zeros',
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

interface DecoderTool {
  command: string;
  args: string[];
  debianPackage: string;
}

/** The decoder tool of the wrappers decoded in a child process, and the Debian package that has it. */
const TOOLS: Record<Exclude<WrapperName, 'gzip'>, DecoderTool> = {
  // --memlimit-decompress: an xz header may ask for a dictionary of up to 4 GiB; refuse past 256 MiB.
  // -T0: a multi-block stream (what `xz -T` writes) is decoded on every core; a single-block one
  // still decodes on one (the format allows nothing else)
  xz: { command: 'xz', args: ['--decompress', '--stdout', '--quiet', '--memlimit-decompress=256MiB', '-T0'], debianPackage: 'xz-utils' },
  // --memory: the same for zstd's window (128 MiB is zstd's own default, stated so it cannot drift)
  zstd: { command: 'zstd', args: ['--decompress', '--stdout', '--quiet', '--no-progress', '--memory=128MB'], debianPackage: 'zstd' },
  bzip2: { command: 'bzip2', args: ['--decompress', '--stdout', '--quiet'], debianPackage: 'bzip2' },
};

/**
 * Debian's lbzip2 decodes the independent 900 kB blocks of any bzip2 stream (concatenated streams
 * too) on every core: 2.5 times bzip2's speed on two cores (docs/DEPENDENCIES.md). Used when
 * installed; bzip2 otherwise. Its memory is its own process's, bounded by the block size × threads.
 */
const lbzip2 = (): DecoderTool => ({
  command: 'lbzip2',
  args: ['-d', '-c', '-n', String(process.getBuiltinModule('node:os').availableParallelism())],
  debianPackage: 'lbzip2',
});
let lbzip2Installed: boolean | undefined;

/** The command that decodes `wrapper` on this machine (`imago inspect` and the tests say which). */
export function decoderCommand(wrapper: WrapperName): string {
  return wrapper === 'gzip' ? 'node:zlib' : toolFor(wrapper).command;
}

function toolFor(wrapper: Exclude<WrapperName, 'gzip'>): DecoderTool {
  if (wrapper !== 'bzip2') return TOOLS[wrapper];
  lbzip2Installed ??= childProcess().spawnSync('lbzip2', ['--version'], { stdio: 'ignore' }).error === undefined;
  return lbzip2Installed ? lbzip2() : TOOLS.bzip2;
}

const GUNZIP_CHUNK_BYTES = 64 * 1024;

/** The decoder for one wrapper (no limits: see OutputLimiter). */
export function createDecoder(wrapper: WrapperName): Duplex {
  // 64 KiB output chunks (zlib's default is 16 KiB), the size of Node's reads of the tools' pipes: a
  // quarter of the chunks through the limiter and the consumer, 25% more MB/s (bench/decompress)
  if (wrapper === 'gzip') return process.getBuiltinModule('node:zlib').createGunzip({ chunkSize: GUNZIP_CHUNK_BYTES });
  return new ChildDecoder(wrapper);
}

/** The decoder's tool is missing on this machine: an operator's problem, not the image's. */
export class DecoderMissingError extends Error {
  constructor(
    readonly wrapper: WrapperName,
    readonly command: string,
    readonly debianPackage: string,
  ) {
    super(`decompressing ${wrapper} needs the \`${command}\` command, which is not installed on this machine; install it (Debian package ${debianPackage})`);
    this.name = 'DecoderMissingError';
  }
}

/** Bytes of a decoder's stderr kept for its error message. */
const STDERR_BYTES = 4096;

/**
 * A decoder tool in a child process, as a Duplex: compressed bytes are written to its stdin,
 * decompressed bytes read from its stdout. Backpressure both ways is the pipes': a write waits for
 * stdin's 'drain', and stdout is paused while our readable side is full. A non-zero exit is a
 * DecompressionError carrying the tool's stderr; destroying the stream kills the child.
 */
class ChildDecoder extends Duplex {
  private readonly child: ChildProcess;
  private stderr = '';
  private exited = false;

  constructor(private readonly wrapper: Exclude<WrapperName, 'gzip'>) {
    // 128 KiB (two pipe reads) lets the tool run ahead while we consume; more only held memory per upload
    super({ readableHighWaterMark: 128 * 1024 });
    const tool = toolFor(wrapper);
    this.child = childProcess().spawn(tool.command, tool.args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const { stdin, stdout, stderr } = this.child as ChildProcess & {
      stdin: NodeJS.WritableStream;
      stdout: NodeJS.ReadableStream;
      stderr: NodeJS.ReadableStream;
    };
    this.child.on('error', (e: NodeJS.ErrnoException) => {
      this.exited = true;
      this.destroy(e.code === 'ENOENT' ? new DecoderMissingError(wrapper, tool.command, tool.debianPackage) : e);
    });
    // EPIPE when the tool quits early on bad input: its exit status and stderr tell why
    stdin.on('error', () => undefined);
    stderr.on('data', (d: Buffer) => {
      if (this.stderr.length < STDERR_BYTES) this.stderr += d.toString('utf8').slice(0, STDERR_BYTES - this.stderr.length);
    });
    stdout.on('data', (d: Buffer) => {
      if (!this.push(d)) stdout.pause();
    });
    this.child.on('close', (code, signal) => {
      this.exited = true;
      if (this.destroyed) return;
      if (code === 0) this.push(null);
      else {
        const why = this.stderr.trim().replace(/\s+/g, ' ') || (signal ? `killed by ${signal}` : 'no message');
        this.destroy(new DecompressionError(wrapper, `${tool.command} exited with status ${code ?? signal}: ${why}`));
      }
    });
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    const stdin = this.child.stdin!;
    if (this.exited || stdin.destroyed) return cb(); // the exit handler reports why
    if (stdin.write(chunk)) cb();
    else {
      const go = () => {
        stdin.off('drain', go);
        stdin.off('close', go);
        cb();
      };
      stdin.on('drain', go);
      stdin.on('close', go);
    }
  }

  override _final(cb: (e?: Error | null) => void): void {
    this.child.stdin!.end();
    cb();
  }

  override _read(): void {
    this.child.stdout!.resume();
  }

  override _destroy(err: Error | null, cb: (e?: Error | null) => void): void {
    if (!this.exited) this.child.kill('SIGKILL');
    this.child.stdin!.destroy();
    this.child.stdout!.destroy();
    this.child.stderr!.destroy();
    cb(err);
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
  /** output bytes that lay in all-zero blocks */
  zeroBytes = 0;
  constructor(
    private readonly wrapper: WrapperName,
    private readonly input: ByteCounter,
    private readonly limits: DecompressLimits,
  ) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    const next = this.bytes + chunk.length;
    const { maxDecompressedBytes, maxCompressionRatio, ratioFloorBytes, zeroBombRatio, zeroBombShare } = this.limits;
    const inputBytes = Math.max(1, this.input.bytes);
    const ratio = next / inputBytes;
    const fail = (limit: DecompressionLimitError['limit'], message: string) =>
      cb(new DecompressionLimitError(this.wrapper, limit, this.input.bytes, next, message));
    if (next > maxDecompressedBytes) {
      return fail('size', `${this.wrapper} stream expands past ${maxDecompressedBytes} bytes (the decompressed-size limit)`);
    }
    const zeroBytes = this.zeroBytes + zeroBytesIn(chunk, this.bytes);
    if (zeroBombRatio > 0 && next > ratioFloorBytes && ratio > zeroBombRatio && zeroBytes >= zeroBombShare * next) {
      return fail(
        'zeros',
        `${this.wrapper} stream expands ${Math.round(ratio)}:1 after ${next} bytes, ${((100 * zeroBytes) / next).toFixed(1)}% of them zeros ` +
          `(over the ${zeroBombRatio}:1 limit for output that is nearly all zeros)`,
      );
    }
    if (next > ratioFloorBytes && ratio > maxCompressionRatio) {
      return fail('ratio', `${this.wrapper} stream expands ${Math.round(ratio)}:1 after ${next} bytes, over the ${maxCompressionRatio}:1 ratio limit`);
    }
    this.bytes = next;
    this.zeroBytes = zeroBytes;
    cb(null, chunk);
  }
}

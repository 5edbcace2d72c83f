/**
 * Variants: converted forms of an image, each stored as its own content-addressed blob and
 * linked to the image (`image_variants`). The `Converter` turns one stored blob into another
 * through the disk engine (openDisk → writer), never through a second copy of either:
 *
 *   blob (local path, or a scratch copy) ─► openDisk (safety verdict again) ─► writer ─► stageBlob ─┬─► staging, sha256, sha512 [+ md5] ─► commit
 *                                                                                                  └─► tap (an HTTP response, optional)
 *
 * Writers that can produce their format in one forward pass (`streamableWith`) write straight into
 * stageBlob (the same staging, hashing and commit as ingest), so a download can be served while
 * the variant is being stored. The others write a scratch file (they seek back to fill in tables),
 * which is then staged the same way.
 */
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { PassThrough, type Writable } from 'node:stream';
import { DiskError, type DiskFormat, type DiskReader, type WriteProgress } from '../../disk/disk.js';
import { openDisk } from '../../disk/open-disk.js';
import { writerFor } from '../../disk/disk-formats.js';
import type { FormatName } from '../../formats/format.js';
import { inspectFile } from '../../inspect/inspect-file.js';
import { inspectStream, type ImageReport } from '../../inspect/inspect-stream.js';
import type { BlobStore, Digest } from '../../store/blob-store.js';
import { DomainError, invalid } from '../errors.js';
import { CONVERT_FORMATS, type ConvertFormat } from './image.js';
import { stageBlob, type StagedBlob } from './stage-blob.js';

/** Detected formats (format engine names) the disk engine reads for a conversion, as which disk format; undefined: not converted. `iso` reads as raw. */
const READABLE = {
  raw: 'raw',
  iso: 'raw',
  qcow2: 'qcow2',
  vmdk: 'vmdk',
  vhd: 'vhd',
  vhdx: 'vhdx',
  vdi: 'vdi',
  qcow: undefined,
  qed: undefined,
  luks: undefined,
  ova: undefined,
  parallels: undefined,
} as const satisfies Record<FormatName, DiskFormat | undefined>;

function readableAs(detected: string | undefined): DiskFormat | undefined {
  return detected !== undefined && Object.hasOwn(READABLE, detected) ? READABLE[detected as FormatName] : undefined;
}

/** One conversion target: a writer format, its `-o` options and the canonical key of both. */
export interface ConvertTarget {
  format: ConvertFormat;
  /** writer options (`-o key=value`) without `compress` */
  options: Readonly<Record<string, string>>;
  /** `-c` */
  compress: boolean;
  /** canonical "k=v,k=v" sorted by key, `compress=on` included; '' = the writer's defaults */
  optionsKey: string;
}

const MAX_OPTIONS = 8;
const OPTION_KEY = /^[a-z][a-z0-9_]{0,31}$/;
const OPTION_VALUE = /^[\w.+-]{1,64}$/;

/**
 * Validates a requested target. `options` is qemu-img's `-o` spelling ("k=v,k=v"); `subformat`
 * is the common one as its own parameter. Unknown option names are refused by the writer itself
 * (BAD_OPTION) when the conversion starts; here only their shape and number are bounded, since
 * each distinct set becomes a stored variant.
 */
export function parseConvertTarget(format: string, opts: { subformat?: string; options?: string } = {}): ConvertTarget {
  const f = format.toLowerCase() === 'vpc' ? 'vhd' : format.toLowerCase();
  if (!(CONVERT_FORMATS as readonly string[]).includes(f)) {
    throw invalid(`format "${format.slice(0, 40)}" cannot be produced; ask for one of ${CONVERT_FORMATS.join(', ')}`, { field: 'format' });
  }
  const options: Record<string, string> = {};
  for (const item of (opts.options ?? '')
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean)) {
    const eq = item.indexOf('=');
    const k = eq < 0 ? item : item.slice(0, eq);
    const v = eq < 0 ? 'on' : item.slice(eq + 1);
    if (!OPTION_KEY.test(k) || !OPTION_VALUE.test(v))
      throw invalid(`option "${item.slice(0, 80)}" is not key=value (letters, digits, _ . + -)`, { field: 'options' });
    if (k in options) throw invalid(`option ${k} is given twice`, { field: 'options' });
    options[k] = v;
  }
  if (opts.subformat !== undefined) {
    if (!OPTION_VALUE.test(opts.subformat)) throw invalid(`subformat "${opts.subformat.slice(0, 40)}" is not a subformat name`, { field: 'subformat' });
    if (options.subformat !== undefined && options.subformat !== opts.subformat)
      throw invalid('subformat is given twice with different values', { field: 'subformat' });
    options.subformat = opts.subformat;
  }
  if (Object.keys(options).length > MAX_OPTIONS) throw invalid(`at most ${MAX_OPTIONS} options`, { field: 'options' });
  let compress = false;
  if (options.compress !== undefined) {
    if (!['on', 'off', 'true', 'false', 'yes', 'no'].includes(options.compress))
      throw invalid(`compress=${options.compress} must be on or off`, { field: 'options' });
    compress = ['on', 'true', 'yes'].includes(options.compress);
    delete options.compress;
  }
  const keyed: Record<string, string> = compress ? { ...options, compress: 'on' } : { ...options };
  const optionsKey = Object.keys(keyed)
    .sort()
    .map((k) => `${k}=${keyed[k]}`)
    .join(',');
  return { format: f as ConvertFormat, options, compress, optionsKey };
}

/**
 * True when the writer produces this target in one forward pass (the `streamable` writers of
 * src/disk/writers and the options that keep them so): raw; qcow2 uncompressed; vmdk
 * streamOptimized (its default); vhd fixed; vdi static. vhdx never.
 */
export function streamableWith(t: ConvertTarget): boolean {
  const on = (v: string | undefined) => v !== undefined && ['on', 'true', 'yes'].includes(v);
  switch (t.format) {
    case 'raw':
      return true;
    case 'qcow2':
      return !t.compress;
    case 'vmdk':
      return (t.options.subformat ?? 'streamOptimized') === 'streamOptimized';
    case 'vhd':
      return t.options.subformat === 'fixed' || (t.options.subformat === undefined && on(t.options.azure));
    case 'vdi':
      return on(t.options.static);
    case 'vhdx':
      return false;
  }
}

/** True when `detected` (format engine name) is `t` with the writer's defaults: nothing to convert. */
export function isSameFormat(detected: string | undefined, t: ConvertTarget): boolean {
  if (detected === undefined || t.optionsKey !== '') return false;
  return detected === t.format || (detected === 'iso' && t.format === 'raw');
}

/** Whether the disk engine can read a stored image of this detected format. */
export function canConvertFrom(detected: string | undefined): boolean {
  return readableAs(detected) !== undefined;
}

/** What a conversion stored: its blob and checksums. */
export type ConvertResult = StagedBlob;

export interface ConvertOptions {
  /** also send the bytes here as they are made (streamable targets only); never ended by the converter */
  tap?: Writable;
  /** called once, when the first output byte exists (or the output is complete, without a tap) */
  onStarted?: () => void;
  onProgress?: (p: WriteProgress) => void;
  signal?: AbortSignal;
}

export class Converter {
  constructor(
    private readonly store: BlobStore,
    /** scratch space for non-streamable outputs and for blobs of backends without `localPath` */
    private readonly scratchDir: string,
    private readonly md5: boolean,
  ) {}

  /**
   * Converts the stored blob `source` (detected as `sourceFormat`) to `target` and commits the
   * result as a blob. Errors are DomainErrors: INVALID_REQUEST for a bad or unsupported option,
   * UNSAFE_IMAGE when the disk engine refuses the source.
   */
  async convert(source: Digest, sourceFormat: string | undefined, target: ConvertTarget, opts: ConvertOptions = {}): Promise<ConvertResult> {
    if (!canConvertFrom(sourceFormat)) {
      throw invalid(`the image is ${sourceFormat ?? 'of an unknown format'}, which cannot be converted; download it as it is`, { format: sourceFormat });
    }
    if (opts.tap && !streamableWith(target)) throw new Error('a tap needs a streamable target');
    const scratch: string[] = [];
    let reader: DiskReader | undefined;
    try {
      const path = await this.sourcePath(source, scratch);
      reader = await openDisk(path, { format: readableAs(sourceFormat) }).catch((e: unknown) => {
        throw conversionError(e);
      });
      const writer = writerFor(target.format);
      const writeOpts = { options: target.options, compress: target.compress, onProgress: opts.onProgress, signal: opts.signal };
      if (opts.tap) {
        // a response's headers go out with its first byte: damage the allocation map shows must be
        // refused before that, while it can still be a clean error answer instead of a cut transfer
        await walkAllocationMap(reader, opts.signal).catch((e: unknown) => {
          throw conversionError(e);
        });
      }
      if (streamableWith(target)) {
        // object mode on the reading side: the writer's chunks are staged (and tapped) as written,
        // one by one — a byte-mode read would join them into one new buffer
        const output = new PassThrough({ writableHighWaterMark: 1024 * 1024, readableObjectMode: true, readableHighWaterMark: 1 });
        // the writer's waits on its output end with the staging error below; nobody else listens
        output.on('error', () => undefined);
        // staging stopping early must not close the output itself: it is closed below, with the reason
        const chunks = { [Symbol.asyncIterator]: () => output.iterator({ destroyOnReturn: false }) };
        const staging = stageBlob(this.store, chunks, { md5: this.md5, onChunk: tapInto(opts.tap, opts.onStarted) });
        // staging fails on its own only when storage does (full, gone): that error is the one to
        // report; the writer, meeting a closed output, would only say "closed before complete"
        let storageError: unknown;
        staging.catch((e: unknown) => {
          if (output.destroyed) return; // the writer failed first and closed its output
          storageError = e;
          output.destroy(e instanceof Error ? e : new Error(String(e)));
        });
        try {
          await writer.write(reader, { kind: 'stream', stream: output }, writeOpts);
        } catch (e) {
          const first = storageError;
          // a writer that refused before it began leaves its output open: staging ends (keeping
          // nothing) before the error is told
          output.destroy();
          await staging.catch(() => undefined);
          throw conversionError(first ?? e);
        }
        return await staging;
      }
      await mkdir(this.scratchDir, { recursive: true });
      const out = join(this.scratchDir, `${randomUUID()}.${target.format}`);
      scratch.push(out, `${out}.part`);
      await writer.write(reader, { kind: 'file', path: out }, writeOpts).catch((e: unknown) => {
        throw conversionError(e);
      });
      const staged = await stageBlob(this.store, createReadStream(out, { highWaterMark: 1024 * 1024 }), {
        md5: this.md5,
        onChunk: () => opts.signal?.throwIfAborted(),
      });
      opts.onStarted?.();
      return staged;
    } finally {
      await reader?.close().catch(() => undefined);
      for (const f of scratch) await rm(f, { force: true }).catch(() => undefined);
    }
  }

  /** The format engine's report on a committed blob (what convert-on-import stores as the image's inspection). */
  async inspect(digest: Digest): Promise<ImageReport> {
    if (this.store.localPath) return inspectFile(await this.store.localPath(digest));
    return inspectStream(await this.store.read(digest));
  }

  /** Removes scratch files a stopped process left behind (start-up, before any conversion runs). */
  async sweep(): Promise<void> {
    await rm(this.scratchDir, { recursive: true, force: true });
  }

  private async sourcePath(digest: Digest, scratch: string[]): Promise<string> {
    if (this.store.localPath) return this.store.localPath(digest);
    await mkdir(this.scratchDir, { recursive: true });
    const copy = join(this.scratchDir, `${randomUUID()}.src`);
    scratch.push(copy);
    await pipeline(await this.store.read(digest), createWriteStream(copy));
    return copy;
  }
}

/**
 * What a streamed conversion's staging does with each chunk: while the tap is open, passes it on
 * there too (waiting for the tap to drain: a slow client slows the conversion). A tap that closes
 * early (the client went away) is dropped; the conversion still completes and is stored.
 */
function tapInto(tap: Writable | undefined, onStarted: (() => void) | undefined): (chunk: Uint8Array) => Promise<void> {
  let started = false;
  return async (chunk) => {
    // a copy: the chunk's memory is filled again once staged, and the tap may still hold it queued
    const full = tap !== undefined && !tap.destroyed && !tap.writableEnded && !tap.write(Buffer.from(chunk));
    // told before waiting for the tap to drain: its reader starts only once told (a first chunk as
    // large as the tap's buffer would otherwise wait for a reader that waits for it)
    if (!started) {
      started = true;
      onStarted?.();
    }
    if (full) await drainedOrClosed(tap);
  };
}

async function drainedOrClosed(w: Writable): Promise<void> {
  if (w.destroyed) return;
  const ac = new AbortController();
  try {
    await Promise.race([once(w, 'drain', { signal: ac.signal }), once(w, 'close', { signal: ac.signal })]);
  } catch {
    // the tap errored: it is dropped like a closed one
  } finally {
    ac.abort();
  }
}

/**
 * Reads the whole allocation map (every table of the source: L1/L2, grain directory and tables,
 * BAT, block map — metadata only, no guest data) so that a table or data offset past the end of
 * the file, or any other damage the map shows, is an error before the first output byte.
 */
async function walkAllocationMap(reader: DiskReader, signal: AbortSignal | undefined): Promise<void> {
  for await (const _extent of reader.extents()) signal?.throwIfAborted();
}

/** A disk engine error as a domain error with a stable code; anything else unchanged. */
export function conversionError(e: unknown): unknown {
  if (!(e instanceof DiskError)) return e;
  switch (e.code) {
    case 'BAD_OPTION':
    case 'UNSUPPORTED':
      return new DomainError('INVALID_REQUEST', `cannot convert: ${e.message}`, { reason: e.code });
    case 'UNSAFE_IMAGE':
    case 'MALFORMED_IMAGE':
      return new DomainError('UNSAFE_IMAGE', `the stored image cannot be converted: ${e.message}`, { reason: e.code });
    case 'IO':
      return e;
  }
}

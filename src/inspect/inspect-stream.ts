/**
 * Inspection of a byte stream: peels compression wrappers in a loop (bounded depth, bounded
 * output size and ratio) and runs the stream inspector on the innermost bytes. This is the form
 * the upload pipeline uses; `inspectFile` uses it only for compressed files (an uncompressed file
 * is read at random, O(header)).
 */
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { COMPRESSION_PROBE_BYTES, detectCompression, type Compression } from '../formats/compression.js';
import { finding, type Finding } from '../formats/findings.js';
import { verdictOf, type InspectOptions, type InspectionReport } from '../formats/inspect-source.js';
import { limitsWith } from '../formats/limits.js';
import { StreamInspector } from '../formats/stream-inspector.js';
import { ByteCounter, createDecoder, DecompressionLimitError, OutputLimiter } from '../io/decompress.js';

export interface CompressionLayer {
  format: Compression;
  compressedSize: number;
  decompressedSize: number;
}

export interface ImageReport extends InspectionReport {
  /** wrappers peeled, outermost first */
  compression?: CompressionLayer[];
}

export async function inspectStream(input: AsyncIterable<Uint8Array>, opts: InspectOptions = {}): Promise<ImageReport> {
  return inspectLayer(input, opts, 0);
}

async function inspectLayer(input: AsyncIterable<Uint8Array>, opts: InspectOptions, depth: number): Promise<ImageReport> {
  const limits = limitsWith(opts.limits);
  const it = input[Symbol.asyncIterator]();
  const peeked: Uint8Array[] = [];
  let peekedBytes = 0;
  let first: Uint8Array = new Uint8Array(0);
  const si = new StreamInspector(opts);
  let streamError: unknown;
  try {
    while (peekedBytes < COMPRESSION_PROBE_BYTES) {
      const r = await it.next();
      if (r.done) break;
      peeked.push(r.value);
      peekedBytes += r.value.length;
    }
    first = concat(peeked, COMPRESSION_PROBE_BYTES);
  } catch (e) {
    if (depth === 0) throw e;
    streamError = e;
  }
  const rest = (async function* () {
    yield* peeked;
    for (;;) {
      let r: IteratorResult<Uint8Array>;
      try {
        r = await it.next();
      } catch (e) {
        throw new SourceError(e);
      }
      if (r.done) return;
      yield r.value;
    }
  })();
  const wrapper = streamError === undefined ? detectCompression(first) : undefined;

  if (wrapper === undefined || depth >= limits.maxWrapperDepth) {
    if (streamError === undefined) {
      try {
        for await (const chunk of rest) await si.write(chunk);
      } catch (e) {
        if (depth === 0) throw e instanceof SourceError ? e.cause : e;
        streamError = e instanceof SourceError ? e.cause : e;
      }
    }
    const report: ImageReport = await si.end();
    if (wrapper !== undefined) {
      report.findings.push(
        finding(
          'WRAPPER_DEPTH',
          `more than ${limits.maxWrapperDepth} nested compression layers (the next is ${wrapper}); ` +
            `decompress the image before uploading`,
        ),
      );
    }
    if (streamError !== undefined) report.findings.push(streamFinding(streamError));
    report.verdict = verdictOf(report.findings);
    return report;
  }

  // a wrapper: decode with limits and inspect what comes out
  const counter = new ByteCounter();
  const decoder = createDecoder(wrapper);
  const limiter = new OutputLimiter(wrapper, counter, limits);
  let inner: ImageReport | undefined;
  let pipeError: unknown;
  try {
    await pipeline(Readable.from(rest, { objectMode: false }), counter, decoder, limiter, async (source: AsyncIterable<Uint8Array>) => {
      inner = await inspectLayer(source, opts, depth + 1);
    });
  } catch (e) {
    pipeError = e;
  }
  if (inner === undefined) {
    // the decoder failed before the inner inspection could start
    if (depth === 0 && pipeError instanceof SourceError) throw pipeError.cause;
    inner = await new StreamInspector(opts).end();
  }
  const report: ImageReport = { ...inner, findings: [...inner.findings] };
  if (pipeError !== undefined) {
    if (depth === 0 && pipeError instanceof SourceError) throw pipeError.cause;
    const f = streamFinding(pipeError, wrapper);
    if (!report.findings.some((x) => x.code === f.code && x.message === f.message)) report.findings.push(f);
  }
  report.compression = [{ format: wrapper, compressedSize: counter.bytes, decompressedSize: limiter.bytes }, ...(inner.compression ?? [])];
  report.fileSize = counter.bytes;
  report.verdict = verdictOf(report.findings);
  return report;
}

/** An error of the input itself (an I/O error at the outermost layer), as opposed to a decoder's. */
class SourceError extends Error {
  constructor(override readonly cause: unknown) {
    super(cause instanceof Error ? cause.message : String(cause));
    this.name = 'SourceError';
  }
}

function streamFinding(e: unknown, wrapper?: Compression): Finding {
  if (e instanceof DecompressionLimitError) {
    return finding(
      'DECOMPRESSION_BOMB',
      `${e.message}; a compressed image that expands this much is refused as a decompression bomb — ` +
        `upload it uncompressed or ask an administrator to raise the limit`,
    );
  }
  const what = wrapper ?? 'compressed';
  const inner = e instanceof SourceError ? e.cause : e;
  const msg = inner instanceof Error ? inner.message : String(inner);
  return finding('COMPRESSION_ERROR', `the ${what} stream is corrupt or truncated (${msg}); compress the image again and upload it whole`);
}

function concat(parts: Uint8Array[], max: number): Uint8Array {
  const total = Math.min(max, parts.reduce((n, p) => n + p.length, 0));
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    if (at >= total) break;
    const n = Math.min(p.length, total - at);
    out.set(p.subarray(0, n), at);
    at += n;
  }
  return out;
}

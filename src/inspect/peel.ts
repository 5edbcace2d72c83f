/**
 * Peels compression wrappers off a byte stream in a loop: detect the wrapper from the first bytes,
 * decode with limits (size, ratio), repeat on the output up to `maxWrapperDepth`. The result is
 * the innermost bytes as an async iterable; decoder failures and limit breaches surface as errors
 * while iterating (DecompressionLimitError, a decoder's error, or SourceError for the input's own
 * I/O errors). Both inspection and ingest consume it: one unwrapping, whatever the door.
 */
import { pipeline } from 'node:stream';
import { Readable } from 'node:stream';
import { COMPRESSION_PROBE_BYTES, detectCompression, type Compression } from '../formats/compression.js';
import type { InspectLimits } from '../formats/limits.js';
import { prepend, relabelErrors } from '../io/chunk-iterators.js';
import { ByteCounter, createDecoder, OutputLimiter } from '../io/decompress.js';

export interface CompressionLayer {
  format: Compression;
  compressedSize: number;
  decompressedSize: number;
}

/** An error of the input itself (an I/O error of the outermost source), as opposed to a decoder's. */
export class SourceError extends Error {
  constructor(override readonly cause: unknown) {
    super(cause instanceof Error ? cause.message : String(cause));
    this.name = 'SourceError';
  }
}

export interface Peeled {
  /** the innermost bytes */
  output: AsyncIterable<Uint8Array>;
  /** wrappers peeled so far, outermost first (sizes grow while output is consumed) */
  layers(): CompressionLayer[];
  /** set when a wrapper was found past maxWrapperDepth (its bytes are passed on undecoded) */
  tooDeep?: Compression;
}

export async function peel(input: AsyncIterable<Uint8Array>, limits: InspectLimits): Promise<Peeled> {
  const counters: { format: Compression; input: ByteCounter; output: OutputLimiter }[] = [];
  let current = guard(input);
  for (let depth = 0; ; depth++) {
    const { head, rest } = await peek(current, COMPRESSION_PROBE_BYTES);
    const wrapper = detectCompression(head);
    if (wrapper === undefined) return { output: rest, layers: () => layersOf(counters) };
    if (depth >= limits.maxWrapperDepth) return { output: rest, layers: () => layersOf(counters), tooDeep: wrapper };
    const counter = new ByteCounter();
    const limiter = new OutputLimiter(wrapper, counter, limits);
    counters.push({ format: wrapper, input: counter, output: limiter });
    const out = pipeline(Readable.from(rest, { objectMode: false }), counter, createDecoder(wrapper), limiter, () => {
      // errors surface through the iteration of `limiter`
    });
    current = out as AsyncIterable<Uint8Array>;
  }
}

function layersOf(counters: { format: Compression; input: ByteCounter; output: OutputLimiter }[]): CompressionLayer[] {
  return counters.map((c) => ({ format: c.format, compressedSize: c.input.bytes, decompressedSize: c.output.bytes }));
}

/** Wraps the outermost input so that its own errors are told apart from decoders'. */
function guard(input: AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> {
  return relabelErrors(input, (e) => (e instanceof SourceError ? e : new SourceError(e)));
}

/** Reads at least `n` bytes (or to the end) and gives them back along with the whole stream. */
async function peek(input: AsyncIterable<Uint8Array>, n: number): Promise<{ head: Uint8Array; rest: AsyncIterable<Uint8Array> }> {
  const it = input[Symbol.asyncIterator]();
  const peeked: Uint8Array[] = [];
  let have = 0;
  let failure: unknown;
  let done = false;
  try {
    while (have < n) {
      const r = await it.next();
      if (r.done) {
        done = true;
        break;
      }
      peeked.push(r.value);
      have += r.value.length;
    }
  } catch (e) {
    failure = e;
  }
  const head = new Uint8Array(Math.min(n, have));
  let at = 0;
  for (const p of peeked) {
    if (at >= head.length) break;
    const k = Math.min(p.length, head.length - at);
    head.set(p.subarray(0, k), at);
    at += k;
  }
  const rest = prepend(peeked, failure, it, done);
  return { head, rest };
}

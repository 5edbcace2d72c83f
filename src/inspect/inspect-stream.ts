/**
 * Inspection of a byte stream: peel compression wrappers (peel.ts), then run the stream inspector
 * on the innermost bytes. `inspectFile` uses it only for compressed files (an uncompressed file is
 * read at random, O(header)); the upload pipeline uses the same pieces (peel + StreamInspector).
 */
import { finding, type Finding } from '../formats/findings.js';
import { verdictOf, type InspectOptions, type InspectionReport } from '../formats/inspect-source.js';
import { limitsWith } from '../formats/limits.js';
import { StreamInspector } from '../formats/stream-inspector.js';
import { DecoderMissingError, DecompressionLimitError } from '../io/decompress.js';
import { peel, SourceError, type CompressionLayer } from './peel.js';

export type { CompressionLayer } from './peel.js';

export interface ImageReport extends InspectionReport {
  /** wrappers peeled, outermost first */
  compression?: CompressionLayer[];
}

export async function inspectStream(input: AsyncIterable<Uint8Array>, opts: InspectOptions = {}): Promise<ImageReport> {
  const limits = limitsWith(opts.limits);
  const peeled = await peel(input, limits);
  const si = new StreamInspector(opts);
  const streamErrors: Finding[] = [];
  try {
    for await (const chunk of peeled.output) await si.write(chunk);
  } catch (e) {
    // an I/O error of the input itself is the caller's (exit 2 in the CLI); a decoder's is a finding
    if (e instanceof SourceError) throw e.cause;
    streamErrors.push(streamFinding(e));
  }
  return finishReport(await si.end(), peeled.layers(), peeled.tooDeep, streamErrors, limits.maxWrapperDepth);
}

/** Adds what peeling learned to the inner report (shared with the ingest pipeline). */
export function finishReport(
  inner: InspectionReport,
  layers: CompressionLayer[],
  tooDeep: string | undefined,
  streamErrors: Finding[],
  maxWrapperDepth: number,
): ImageReport {
  const report: ImageReport = { ...inner, findings: [...inner.findings, ...streamErrors] };
  if (tooDeep !== undefined) {
    report.findings.push(
      finding('WRAPPER_DEPTH', `more than ${maxWrapperDepth} nested compression layers (the next is ${tooDeep}); decompress the image before uploading`),
    );
  }
  if (layers.length > 0) {
    report.compression = layers;
    report.fileSize = layers[0]!.compressedSize;
  }
  report.verdict = verdictOf(report.findings);
  return report;
}

export function streamFinding(e: unknown): Finding {
  if (e instanceof DecompressionLimitError) {
    if (e.limit === 'zeros') {
      return finding(
        'DECOMPRESSION_BOMB',
        `${e.message}; a compressed upload that is nearly all zeros is refused as a decompression bomb — ` +
          `convert the disk to qcow2, which stores only its data (\`imago convert -O qcow2 DISK DISK.qcow2\`), and upload that, ` +
          `or ask an administrator to raise IMAGO_ZERO_BOMB_RATIO`,
      );
    }
    return finding(
      'DECOMPRESSION_BOMB',
      `${e.message}; a compressed image that expands this much is refused as a decompression bomb — ` +
        `upload it uncompressed or ask an administrator to raise the limit`,
    );
  }
  if (e instanceof DecoderMissingError) {
    // fail closed: the image could not be checked, and saying "corrupt" would blame the wrong party
    return finding('CHECK_FAILED', `${e.message}; the image was not checked and is refused until then`);
  }
  const msg = e instanceof Error ? e.message : String(e);
  return finding('COMPRESSION_ERROR', `the compressed stream is corrupt or truncated (${msg}); compress the image again and upload it whole`);
}

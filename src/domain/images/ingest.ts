/**
 * The one ingest path. Every door (HTTP upload, URL import, later OCI push and clone) hands a
 * byte stream here:
 *
 *   source ─► unwrap (gz|xz|zstd|bz2, bounded) ─► tee ─┬─► hashers (sha512 [+ md5]) on worker threads ┐
 *                                                       ├─► staging blob (BlobStore session; sha256 = address) ┘ stageBlob
 *                                                       ├─► format inspector (head, tail, capture regions)
 *                                                       └─► size / progress counter
 *   ─► verdict ─► commit (content-addressed) or abort (nothing kept)
 *
 * The caller (the IngestCoordinator) turns the outcome into catalog state.
 */
import { type Finding } from '../../formats/findings.js';
import { claimsFindings, verdictOf } from '../../formats/inspect-source.js';
import type { InspectLimits } from '../../formats/limits.js';
import { limitsWith } from '../../formats/limits.js';
import { StreamInspector } from '../../formats/stream-inspector.js';
import { finishReport, streamFinding, type ImageReport } from '../../inspect/inspect-stream.js';
import { peel, SourceError } from '../../inspect/peel.js';
import { tapChunks } from '../../io/chunk-iterators.js';
import { passedBytes } from '../../io/memory-relief.js';
import type { BlobInfo, BlobStore } from '../../store/blob-store.js';
import { DomainError } from '../errors.js';
import type { Checksums } from './image.js';
import { stageBlob } from './stage-blob.js';

export interface IngestOptions {
  claimedFormat?: string;
  /** Glance container_format: `ova` checks claimedFormat against the OVA's inner disks */
  claimedContainerFormat?: string;
  /** bytes the client says it will send (Content-Length / X-Image-Size) */
  announcedSize?: number;
  /** largest image we store (after unwrapping) */
  maxImageBytes: number;
  inspectLimits?: Partial<InspectLimits>;
  md5: boolean;
  /** called as bytes arrive at the door (before unwrapping), at most every `progressEveryMs` */
  onProgress?: (bytesReceived: number) => void;
  progressEveryMs?: number;
  /** ends the ingest with the signal's reason at the next chunk once it aborts */
  signal?: AbortSignal;
}

export type IngestOutcome =
  | { kind: 'stored'; report: ImageReport; blob: BlobInfo; checksums: Checksums; bytesReceived: number }
  | { kind: 'refused'; report: ImageReport; bytesReceived: number };

/**
 * Runs the pipeline. Throws DomainError('SIZE_LIMIT') when the announced or actual size is over
 * the limit, and rethrows the source's own errors (a dropped client); in every failure the staged
 * bytes are removed.
 */
export async function ingest(source: AsyncIterable<Uint8Array>, store: BlobStore, opts: IngestOptions): Promise<IngestOutcome> {
  if (opts.announcedSize !== undefined && opts.announcedSize > opts.maxImageBytes) {
    throw sizeLimit(opts.announcedSize, opts.maxImageBytes, true);
  }
  const limits = limitsWith(opts.inspectLimits);
  let bytesReceived = 0;
  let lastProgress = 0;
  const every = opts.progressEveryMs ?? 250;
  const counted = tapChunks(source, (chunk) => {
    if (opts.signal?.aborted) throw opts.signal.reason ?? new Error('aborted');
    bytesReceived += chunk.length;
    if (opts.onProgress) {
      const now = Date.now();
      if (now - lastProgress >= every) {
        lastProgress = now;
        opts.onProgress(bytesReceived);
      }
    }
  });

  const peeled = await peel(counted, limits);
  const inspector = new StreamInspector({ limits: opts.inspectLimits, claimedFormat: opts.claimedFormat, claimedContainerFormat: opts.claimedContainerFormat });
  let stored = 0;
  let report: ImageReport | undefined;
  const staged = await stageBlob(store, peeled.output, {
    md5: opts.md5,
    onChunk: async (chunk) => {
      stored += chunk.length;
      if (stored > opts.maxImageBytes) throw sizeLimit(stored, opts.maxImageBytes, false);
      await inspector.write(chunk);
      passedBytes(chunk.length);
    },
    keep: async (failure) => {
      // the client's own errors (a dropped connection) and our refusals end the ingest; anything
      // else in the stream (a corrupt compression layer) is a finding of the report
      const streamErrors: Finding[] = [];
      if (failure) {
        if (failure.error instanceof SourceError) throw failure.error.cause;
        if (failure.error instanceof DomainError) throw failure.error;
        streamErrors.push(streamFinding(failure.error));
      }
      report = finishReport(await inspector.end(), peeled.layers(), peeled.tooDeep, streamErrors, limits.maxWrapperDepth);
      opts.onProgress?.(bytesReceived);
      return report.verdict !== 'refused';
    },
  });
  if (!staged) return { kind: 'refused', report: report!, bytesReceived };
  const checksums: Checksums = { sha512: staged.sha512 };
  if (staged.md5) checksums.md5 = staged.md5;
  return { kind: 'stored', report: report!, blob: staged.blob, checksums, bytesReceived };
}

/**
 * The outcome of an `ingest` run before the claims were known (no `claimedFormat`: an OCI layer
 * ingested while it arrived, its manifest's declaration read later), as that ingest would have
 * ended with the claims and the size limit given now: FORMAT_MISMATCH findings added (refused:
 * nothing of it is the image's; its committed blob is no one's, left to GC), SIZE_LIMIT thrown.
 */
export function withClaims(outcome: IngestOutcome, opts: Pick<IngestOptions, 'claimedFormat' | 'claimedContainerFormat' | 'maxImageBytes'>): IngestOutcome {
  if (outcome.kind === 'stored' && outcome.blob.sizeBytes > opts.maxImageBytes) throw sizeLimit(outcome.blob.sizeBytes, opts.maxImageBytes, false);
  const claimed = claimsFindings(outcome.report, opts);
  const report: ImageReport = { ...outcome.report, findings: [...outcome.report.findings, ...claimed] };
  if (opts.claimedFormat !== undefined) report.claimedFormat = opts.claimedFormat;
  if (opts.claimedContainerFormat !== undefined) report.claimedContainerFormat = opts.claimedContainerFormat;
  report.verdict = verdictOf(report.findings);
  if (report.verdict === 'refused') return { kind: 'refused', report, bytesReceived: outcome.bytesReceived };
  return { ...outcome, report };
}

function sizeLimit(size: number, limit: number, announced: boolean): DomainError {
  return new DomainError(
    'SIZE_LIMIT',
    `${announced ? 'the announced size' : 'the image'} (${size} bytes) is over the ${limit}-byte limit for one image; ` +
      `upload a smaller image or ask an administrator to raise IMAGO_MAX_IMAGE_SIZE`,
    { size, limit },
  );
}

/** A human reason for an image refused by the format engine. */
export function refusalReason(report: ImageReport): string {
  const errors = report.findings.filter((f) => f.severity === 'error');
  return errors.map((f) => `${f.code}: ${f.message}`).join('; ') || 'refused';
}

/**
 * What the catalog keeps of the format engine's report on an image's bytes (after an ingest, and
 * after convert-on-import replaced them).
 */
import type { ImageReport } from '../../inspect/inspect-stream.js';
import { withoutExternalDetails } from './external-names.js';
import type { InspectionSummary } from './image.js';

export function inspectionSummary(r: ImageReport): InspectionSummary {
  const s: InspectionSummary = {
    format: r.format,
    // stored and shown by the server: no names of files on the uploader's machine (external-names.ts)
    details: withoutExternalDetails(
      JSON.parse(JSON.stringify(r.details, (_k, v: unknown) => (typeof v === 'bigint' ? Number(v) : v))) as Record<string, unknown>,
    ),
    findings: r.findings,
  };
  if (r.subformat) s.subformat = r.subformat;
  if (r.compression?.length) s.compression = r.compression.map((c) => c.format);
  return s;
}

/**
 * The engine: detect (every probe), inspect the detected format, run its safety rules and the
 * generic ones, decide the verdict. Works on any ByteSource: a file (random access), a stored
 * blob, or a stream's capture (see stream-inspector.ts).
 */
import type { ByteSource } from './byte-source.js';
import { FormatError, NeedBytes, NeedDigest } from './byte-source.js';
import { COMPRESSION_PROBE_BYTES, detectCompression, type Compression } from './compression.js';
import type { Finding } from './findings.js';
import { finding, isFindingCode } from './findings.js';
import type { FormatDescriptor, FormatName, InspectContext, Inspection } from './format.js';
import { limitsWith, type InspectLimits } from './limits.js';
import { FORMATS } from './registry.js';

export type Verdict = 'safe' | 'refused';

export interface InspectOptions {
  limits?: Partial<InspectLimits>;
  /** the format the uploader says this is (Glance disk_format names accepted) */
  claimedFormat?: string;
  /**
   * the container the uploader says the image is in (Glance container_format). `ova`: the bytes
   * must be an OVA and `claimedFormat` (Glance's disk_format, e.g. vmdk) is checked against the
   * OVA's inner disks; `bare` or absent: `claimedFormat` is checked against the image itself.
   */
  claimedContainerFormat?: string;
  /** the format table to use (default: the registry); tests pass synthetic ones */
  formats?: readonly FormatDescriptor[];
}

export interface InspectionReport {
  format: FormatName;
  subformat?: string;
  virtualSize?: bigint;
  /** bytes of the image as inspected (after any compression wrapper) */
  fileSize?: number;
  /** other formats whose probe also matched (polyglot) */
  alsoMatched?: FormatName[];
  claimedFormat?: string;
  claimedContainerFormat?: string;
  details: Record<string, unknown>;
  findings: Finding[];
  verdict: Verdict;
}

/**
 * Claimed (Glance / OpenNebula / qemu) names → the detected formats they are compatible with,
 * from each descriptor's name and `claimAliases`. A `raw` claim accepts an ISO too (guests read
 * it as raw bytes); nothing accepts a format that a hypervisor would interpret (CVE-2024-40767).
 */
const CLAIM_COMPATIBLE: ReadonlyMap<string, readonly FormatName[]> = claimTable(FORMATS);

function claimTable(formats: readonly FormatDescriptor[]): Map<string, FormatName[]> {
  const table = new Map<string, FormatName[]>();
  for (const f of formats) {
    for (const claim of [f.name, ...(f.claimAliases ?? [])]) table.set(claim, [...(table.get(claim) ?? []), f.name]);
  }
  return table;
}

export function knownClaimedFormats(): string[] {
  return [...CLAIM_COMPATIBLE.keys()];
}

export interface DetectResult {
  matched: FormatName[];
  compression?: Compression;
  findings: Finding[];
}

/** Runs every probe. NeedBytes propagates (the stream inspector needs it); other throws fail closed. */
export async function detect(src: ByteSource, formats: readonly FormatDescriptor[] = FORMATS): Promise<DetectResult> {
  const matched: FormatName[] = [];
  const findings: Finding[] = [];
  for (const f of formats) {
    if (f.name === 'raw') continue;
    try {
      if (await f.probe(src)) matched.push(f.name);
    } catch (e) {
      // a probe that needs the end of a stream whose size is not known yet: undecided for now; the
      // final run (size known) decides. Meanwhile the other probes and the inspection go on, so
      // the regions they need are still declared while the bytes pass.
      if (e instanceof NeedBytes && e.needsSize) continue;
      if (e instanceof NeedBytes || e instanceof NeedDigest) throw e;
      if (e instanceof FormatError && isFindingCode(e.code)) {
        findings.push(finding(e.code, `${f.name} probe: ${e.message}`));
        continue;
      }
      findings.push(finding('CHECK_FAILED', `the ${f.name} probe failed (${errorText(e)}); refusing to guess the format`));
    }
  }
  const head = await src.read(0, COMPRESSION_PROBE_BYTES);
  const compression = detectCompression(head);
  return { matched, compression, findings };
}

export async function inspectSource(src: ByteSource, opts: InspectOptions = {}): Promise<InspectionReport> {
  const limits = limitsWith(opts.limits);
  const ctx: InspectContext = { limits };
  const formats = opts.formats ?? FORMATS;
  const det = await detect(src, formats);
  const findings = [...det.findings];
  const primary: FormatDescriptor = formatOf(formats, det.matched[0] ?? 'raw');
  if (det.matched.length > 1) {
    findings.push(
      finding(
        'POLYGLOT',
        `the image matches more than one format (${det.matched.join(', ')}); a file that is two formats at once is how ` +
          `format-confusion attacks work — rebuild it as a single format (e.g. imago convert) and upload again`,
      ),
    );
  }
  const inspection = await inspectWith(primary, src, ctx, findings);
  // when inspect itself failed it left an error finding and no facts: the rules have nothing to judge
  const inspected = !inspection.failed;
  for (const rule of inspected ? primary.checks : []) {
    try {
      findings.push(...rule.run(inspection, ctx));
    } catch (e) {
      findings.push(finding('CHECK_FAILED', `safety check ${rule.code} failed (${errorText(e)}); refusing (fail closed)`));
    }
  }
  if (inspection.virtualSize !== undefined && inspection.virtualSize > limits.maxVirtualSize) {
    findings.push(
      finding(
        'VIRTUAL_SIZE_LIMIT',
        `virtual size ${inspection.virtualSize} bytes is over the limit of ${limits.maxVirtualSize} bytes; ` +
          `shrink the image or ask an administrator to raise maxVirtualSize`,
      ),
    );
  }
  findings.push(...claimsFindings({ format: primary.name, details: inspection.details as Record<string, unknown> }, opts));
  const report: InspectionReport = {
    format: primary.name,
    details: inspection.details as Record<string, unknown>,
    findings: dedupe(findings),
    verdict: 'safe',
  };
  if (inspection.subformat !== undefined) report.subformat = inspection.subformat;
  if (inspection.virtualSize !== undefined) report.virtualSize = inspection.virtualSize;
  if (src.size !== undefined) report.fileSize = src.size;
  if (det.matched.length > 1) report.alsoMatched = det.matched.slice(1);
  if (opts.claimedFormat !== undefined) report.claimedFormat = opts.claimedFormat;
  if (opts.claimedContainerFormat !== undefined) report.claimedContainerFormat = opts.claimedContainerFormat;
  report.verdict = verdictOf(report.findings);
  return report;
}

export function verdictOf(findings: readonly Finding[]): Verdict {
  return findings.some((f) => f.severity === 'error') ? 'refused' : 'safe';
}

async function inspectWith(f: FormatDescriptor, src: ByteSource, ctx: InspectContext, findings: Finding[]): Promise<Inspection & { failed?: boolean }> {
  try {
    const ins = await f.inspect(src, ctx);
    findings.push(...ins.findings);
    return ins;
  } catch (e) {
    if (e instanceof NeedBytes || e instanceof NeedDigest) throw e;
    if (e instanceof FormatError) {
      const code = isFindingCode(e.code) ? e.code : 'MALFORMED_HEADER';
      findings.push(finding(code, `${f.name}: ${e.message}; the image is damaged or crafted — recreate it and upload again`));
    } else {
      findings.push(finding('CHECK_FAILED', `${f.name} inspection failed (${errorText(e)}); refusing (fail closed)`));
    }
    return { details: {}, findings: [], failed: true };
  }
}

/**
 * What the claims (Glance disk_format, container_format) say of an inspection: FORMAT_MISMATCH
 * findings, none when they fit. Also applied to an inspection made before the claims were known (an
 * OCI layer ingested while it arrived, its manifest's declaration read later).
 */
export function claimsFindings(
  inspected: { format: FormatName; details: Record<string, unknown> },
  claims: { claimedFormat?: string; claimedContainerFormat?: string },
): Finding[] {
  if (claims.claimedContainerFormat?.toLowerCase() === 'ova') return ovaClaimFindings(claims.claimedFormat, inspected.format, inspected.details);
  return claims.claimedFormat === undefined ? [] : claimFindings(claims.claimedFormat, inspected.format);
}

/** FORMAT_MISMATCH when a claimed (Glance / qemu) format name does not fit the detected format; none when it does. */
export function claimFindings(claimed: string, detected: FormatName): Finding[] {
  const key = claimed.toLowerCase();
  const ok = CLAIM_COMPATIBLE.get(key);
  if (!ok) {
    return [finding('FORMAT_MISMATCH', `claimed format "${claimed}" is not one we know (${knownClaimedFormats().join(', ')})`)];
  }
  if (ok.includes(detected)) return [];
  return [
    finding(
      'FORMAT_MISMATCH',
      `the image was declared as ${claimed} but its bytes are ${detected}; declare the format it really is ` +
        `(or convert it to ${claimed} with imago convert) and upload again`,
    ),
  ];
}

/**
 * Glance declares an OVA as disk_format=vmdk, container_format=ova: the container claim is checked
 * against the bytes (an OVA), the disk claim against every disk inside it.
 */
function ovaClaimFindings(claimed: string | undefined, detected: FormatName, details: Record<string, unknown>): Finding[] {
  if (detected !== 'ova') {
    return [
      finding(
        'FORMAT_MISMATCH',
        `the image was declared as an OVA (container format ova) but its bytes are ${detected}, not an OVA archive; ` +
          `declare the container it really is (bare) or package the disk as an OVA, and upload again`,
      ),
    ];
  }
  if (claimed === undefined || claimed.toLowerCase() === 'ova') return [];
  const ok = CLAIM_COMPATIBLE.get(claimed.toLowerCase());
  if (!ok) return [finding('FORMAT_MISMATCH', `claimed format "${claimed}" is not one we know (${knownClaimedFormats().join(', ')})`)];
  const disks = Array.isArray(details.disks) ? (details.disks as { file?: string; inner?: { format: string } }[]) : [];
  const inner = disks.filter((d) => d.inner !== undefined);
  if (inner.length === 0) {
    return [
      finding(
        'FORMAT_MISMATCH',
        `the OVA was declared to hold ${claimed} disks but no disk inside it could be read; check the OVF's disk references and upload again`,
      ),
    ];
  }
  const wrong = inner.filter((d) => !ok.includes(d.inner!.format as FormatName));
  if (wrong.length === 0) return [];
  return [
    finding(
      'FORMAT_MISMATCH',
      `the OVA was declared to hold ${claimed} disks but ${wrong.map((d) => `${JSON.stringify(d.file ?? '?')} is ${d.inner!.format}`).join(', ')}; ` +
        `declare the disk format it really holds (disk format ${wrong[0]!.inner!.format}, container format ova) and upload again`,
    ),
  ];
}

function formatOf(formats: readonly FormatDescriptor[], name: FormatName): FormatDescriptor {
  const f = formats.find((d) => d.name === name) ?? (name === 'raw' ? FORMATS.find((d) => d.name === 'raw') : undefined);
  if (!f) throw new Error(`format ${name} is not registered`);
  return f;
}

function dedupe(findings: Finding[]): Finding[] {
  const seen = new Set<string>();
  return findings.filter((f) => {
    const k = `${f.code}\u0000${f.message}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

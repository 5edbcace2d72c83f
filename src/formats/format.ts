/**
 * What a format is to the engine: a plain descriptor in one registry table
 * (`{ name, probe, inspect, checks }`).
 *
 * - `probe` answers "do these bytes carry this format's signature?" from a few reads near the
 *   start or the end. Every probe runs on every image: two matches is a polyglot, never
 *   "first wins".
 * - `inspect` parses the header, the structures it names and (where the format keeps one) the
 *   tail into plain facts. It reads O(header) bytes, never the whole image. Structural problems
 *   it meets (a field past the end, a table over our limits) are findings, or a thrown
 *   `FormatError` whose code becomes one.
 * - `checks` are named safety rules over the facts. A format with nothing to check says so with
 *   an empty list and a comment; a check that throws counts as a violation (fail closed).
 * - A claim (the format an uploader declares: Glance `disk_format`, qemu, OpenNebula names) is
 *   checked against the detected format: a format is claimed by its name and its `claimAliases`.
 *
 * `FORMAT_NAMES` is the one list of names; every per-format table in every layer is keyed by it
 * (`satisfies Record<FormatName, …>`, or by a subset derived from it), so a new name without its
 * entries does not compile.
 */
import type { ByteSource } from './byte-source.js';
import type { Finding, FindingCode } from './findings.js';
import type { InspectLimits } from './limits.js';

export const FORMAT_NAMES = ['raw', 'qcow2', 'qcow', 'qed', 'vmdk', 'vdi', 'vhd', 'vhdx', 'luks', 'iso', 'ova', 'parallels'] as const;
export type FormatName = (typeof FORMAT_NAMES)[number];

export interface InspectContext {
  readonly limits: InspectLimits;
}

/** What `inspect` learned. `details` are the format's own facts, camelCase, JSON-friendly (bigint allowed). */
export interface Inspection<D extends object = Record<string, unknown>> {
  subformat?: string;
  /** Guest-visible size in bytes; absent when unknown, never 0 for "unknown". */
  virtualSize?: bigint;
  details: D;
  findings: Finding[];
}

export interface SafetyRule<D extends object = Record<string, unknown>> {
  /** the finding code this rule raises */
  code: FindingCode;
  /** one line: the attack or mistake the rule stops */
  description: string;
  run(inspection: Inspection<D>, ctx: InspectContext): Finding[];
}

export interface FormatDescriptor<D extends object = Record<string, unknown>> {
  name: FormatName;
  /** one line for docs and `imago inspect --help` */
  description: string;
  /** other names a claim may use for this format, lower case; a name claims one format, except `raw` (an ISO too: guests read it as raw bytes) */
  claimAliases?: readonly string[];
  probe(src: ByteSource): Promise<boolean>;
  inspect(src: ByteSource, ctx: InspectContext): Promise<Inspection<D>>;
  checks: readonly SafetyRule<D>[];
}

/** Erases a descriptor's detail type for the registry table. */
export function describeFormat<D extends object>(d: FormatDescriptor<D>): FormatDescriptor {
  return d as unknown as FormatDescriptor;
}

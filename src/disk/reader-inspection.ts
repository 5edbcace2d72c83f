/**
 * How a reader opens its image: the format's own inspection (src/formats: a parse error becomes a
 * DiskError), then the descriptor's safety rules the reader names, then the reader's own map.
 *
 * A reader refuses what its format's safety rules refuse by running the descriptor's checks (the
 * rule codes and messages inspection reports), never a second copy of them. openDisk has already
 * refused every error finding; this guards a reader opened without it (an OVA's inner disk, a
 * tool, a test). Each reader names the rules that stop it from reading the image as one
 * self-contained disk; what a reader cannot do (decrypt, replay a log) stays its own check.
 */
import type { FindingCode } from '../formats/findings.js';
import type { FormatDescriptor, Inspection } from '../formats/format.js';
import { DEFAULT_LIMITS } from '../formats/limits.js';
import { DiskError, type DiskReader } from './disk.js';
import { owning, parsing, type DiskFile } from './disk-file.js';

/** Inspects `file` as `format`, runs the rules named by `codes`, then `build`s the reader; the file is closed when a step fails (the reader owns it). */
export function openInspected<D extends object>(
  file: DiskFile,
  format: FormatDescriptor,
  codes: readonly FindingCode[],
  build: (ins: Inspection<D>) => Promise<DiskReader>,
): Promise<DiskReader> {
  return owning(file, async () => {
    const ins = await parsing(() => format.inspect(file, { limits: DEFAULT_LIMITS }));
    enforceChecks(format, ins, codes);
    return build(ins as unknown as Inspection<D>);
  });
}

/** Findings that mean "we cannot read it", not "it is unsafe". */
const UNSUPPORTED: readonly FindingCode[] = ['UNKNOWN_FEATURES'];

export function enforceChecks(format: FormatDescriptor, ins: Inspection<object>, codes: readonly FindingCode[]): void {
  for (const rule of format.checks) {
    if (!codes.includes(rule.code)) continue;
    let refusal;
    try {
      refusal = rule.run(ins as Inspection, { limits: DEFAULT_LIMITS }).find((f) => f.severity === 'error');
    } catch (e) {
      throw new DiskError(
        `${format.name} safety check ${rule.code} failed (${e instanceof Error ? e.message : String(e)}); refusing (fail closed)`,
        'UNSAFE_IMAGE',
      );
    }
    if (refusal) throw new DiskError(refusal.message, UNSUPPORTED.includes(refusal.code) ? 'UNSUPPORTED' : 'UNSAFE_IMAGE');
  }
}

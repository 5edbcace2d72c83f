/**
 * A reader refuses what its format's safety rules refuse by running the descriptor's own checks
 * (the rule codes and messages inspection reports), never a second copy of them. openDisk has
 * already refused every error finding; this guards a reader opened without it (an OVA's inner
 * disk, a tool, a test). Each reader names the rules that stop it from reading the image as one
 * self-contained disk; what a reader cannot do (decrypt, replay a log) stays the reader's own check.
 */
import type { FindingCode } from '../formats/findings.js';
import type { FormatDescriptor, Inspection } from '../formats/format.js';
import { DEFAULT_LIMITS } from '../formats/limits.js';
import { DiskError } from './disk.js';

/** Findings that mean "we cannot read it", not "it is unsafe". */
const UNSUPPORTED: readonly FindingCode[] = ['UNKNOWN_FEATURES'];

export function enforceChecks(format: FormatDescriptor, ins: Inspection, codes: readonly FindingCode[]): void {
  for (const rule of format.checks) {
    if (!codes.includes(rule.code)) continue;
    let refusal;
    try {
      refusal = rule.run(ins, { limits: DEFAULT_LIMITS }).find((f) => f.severity === 'error');
    } catch (e) {
      throw new DiskError(`${format.name} safety check ${rule.code} failed (${e instanceof Error ? e.message : String(e)}); refusing (fail closed)`, 'UNSAFE_IMAGE');
    }
    if (refusal) throw new DiskError(refusal.message, UNSUPPORTED.includes(refusal.code) ? 'UNSUPPORTED' : 'UNSAFE_IMAGE');
  }
}

/**
 * The format tests' shared tables: images qemu-img creates (format, subformat and virtual size as
 * `qemu-img info` says, no finding) and hostile images (the finding each must raise, with a message
 * that says what to do). Every case is also fed to the stream inspector, which must agree.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { qemuCreate, qemuInfo } from '../../test/support/qemu.js';
import { assertStreamMatches, inspectBytes } from '../../test/support/stream.js';
import type { FindingCode } from './findings.js';
import type { FormatName } from './format.js';
import type { InspectionReport, InspectOptions } from './inspect-source.js';

export interface QemuCase {
  name: string;
  size: string;
  options?: string[];
  /** asserted when given */
  subformat?: string;
}

export interface HostileCase {
  name: string;
  code: FindingCode;
  bytes: () => Promise<Uint8Array>;
  opts?: InspectOptions;
  severity?: 'error' | 'warning';
  /** default: safe when the finding is a warning, else refused */
  verdict?: 'safe' | 'refused';
}

export interface FormatCases {
  format: FormatName;
  /** the stream inspector feeds chunk size 1 up to here (where the format's headers are) */
  byteWiseUntil: number;
}

/** Each image qemu-img creates for `format` inspects as qemu-img info sees it, with no finding. */
export function qemuCases({ format, byteWiseUntil }: FormatCases, cases: readonly QemuCase[]): void {
  for (const q of cases) {
    test(`qemu-img ${q.name}: format${q.subformat === undefined ? '' : ', subformat'} and virtual size as qemu-img info`, async () => {
      const file = await qemuCreate(q.name, format, q.size, q.options);
      const bytes = readFileSync(file);
      const r = await inspectBytes(bytes);
      const info = await qemuInfo(file);
      assert.equal(info.format, format);
      assert.equal(r.format, format);
      if (q.subformat !== undefined) assert.equal(r.subformat, q.subformat);
      assert.equal(r.virtualSize, BigInt(info['virtual-size']));
      assert.deepEqual(r.findings, []);
      assert.equal(r.verdict, 'safe');
      await assertStreamMatches(bytes, r, {}, byteWiseUntil);
    });
  }
}

/** Each hostile image is still detected as `format` and raises its finding, at its severity, with a message that says what to do. */
export function hostileCases({ format, byteWiseUntil }: FormatCases, cases: readonly HostileCase[]): void {
  for (const h of cases) {
    test(`hostile: ${h.name} → ${h.code}`, async () => {
      const bytes = await h.bytes();
      const r = await inspectBytes(bytes, h.opts);
      assert.equal(r.format, format);
      const f = r.findings.find((x) => x.code === h.code);
      assert.ok(f, `expected ${h.code}, got ${JSON.stringify(r.findings)}`);
      const severity = h.severity ?? 'error';
      assert.equal(f.severity, severity);
      assert.equal(r.verdict, h.verdict ?? (severity === 'warning' ? 'safe' : 'refused'), JSON.stringify(r.findings));
      assert.ok(f.message.length > 30, 'the message says what to do');
      await assertStreamMatches(bytes, r, h.opts ?? {}, byteWiseUntil);
    });
  }
}

export interface RefusalCase {
  name: string;
  bytes: () => Promise<Uint8Array>;
  /** the error codes expected, exactly */
  errors: FindingCode[];
  /** text one finding's message must contain */
  mentions?: string;
  opts?: InspectOptions;
}

/** The distinct error codes of a report, sorted. */
export function errorCodes(r: InspectionReport): FindingCode[] {
  return [...new Set(r.findings.filter((f) => f.severity === 'error').map((f) => f.code))].sort();
}

/**
 * Each hostile image is detected as `format` and refused with exactly its error codes; `streams`
 * checks the stream inspector on the same bytes (each format keeps its own chunking and limits).
 */
export function refusalCases(
  format: FormatName,
  label: string,
  cases: readonly RefusalCase[],
  streams: (bytes: Uint8Array, opts?: InspectOptions) => Promise<void>,
): void {
  for (const h of cases) {
    test(`hostile ${label}: ${h.name} → ${h.errors.join(', ')}`, async () => {
      const bytes = await h.bytes();
      const r = await inspectBytes(bytes, h.opts);
      assert.equal(r.format, format);
      assert.deepEqual(errorCodes(r), [...h.errors].sort(), JSON.stringify(r.findings, null, 1));
      assert.equal(r.verdict, 'refused');
      if (h.mentions)
        assert.ok(
          r.findings.some((f) => f.message.includes(h.mentions!)),
          JSON.stringify(r.findings),
        );
      await streams(bytes, h.opts);
    });
  }
}

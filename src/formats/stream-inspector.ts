/**
 * Inspection of a stream that cannot seek, as its bytes pass by (the oslo "capture region" idea).
 *
 * We keep a bounded head (`limits.headBytes`), a ring of the last `limits.tailBytes` and the
 * regions the format inspectors asked for. Inspection is re-run from scratch on the captured
 * bytes whenever something new is captured: when a read hits bytes that are still ahead of the
 * stream, the capture source throws `NeedBytes`, we declare that region and wait for it. A read of
 * bytes that already went by and were not kept cannot be answered: the final run turns it into an
 * INSPECTION_INCOMPLETE finding (fail closed). Memory held never exceeds
 * headBytes + tailBytes + maxCaptureBytes, whatever the stream's length.
 */
import type { ByteSource } from './byte-source.js';
import type { Hash } from 'node:crypto';
import { FormatError, NeedBytes, NeedDigest, checkRange, type DigestAlgorithm } from './byte-source.js';
import { TableScanner, type TableRule, type TableScan, type TableSweep } from './block-map-rules.js';
import { finding } from './findings.js';
import { inspectSource, verdictOf, type InspectOptions, type InspectionReport } from './inspect-source.js';
import { limitsWith, type InspectLimits } from './limits.js';

/** node:crypto, loaded on first use: most inspections never hash (issue 20, CLI start) */
const createHash = (algorithm: DigestAlgorithm): Hash => process.getBuiltinModule('node:crypto').createHash(algorithm);

interface DigestRegion {
  offset: number;
  length: number;
  algorithm: DigestAlgorithm;
  hash: Hash;
  /** bytes hashed so far */
  done: number;
  hex?: string;
}

/** A table scanned entry by entry as its bytes pass (block-map-rules.ts): a few bytes held, not the table. */
interface ScanRegion {
  offset: number;
  length: number;
  scanner: TableScanner;
  /** bytes scanned so far */
  done: number;
  complete: boolean;
  /** its start had streamed by, unkept, before it was declared */
  missed: boolean;
}

interface Region {
  offset: number;
  data: Uint8Array;
  /** bytes of data filled so far (regions fill in stream order) */
  filled: number;
}

/** A sweep in flight: one scan result per unit, from the first unit that starts ahead of the stream. */
interface SweepState {
  sweep: TableSweep;
  /** offset of the first unit covered */
  from: number;
  units: number;
  maxNeed: Float64Array;
  worstIndex: Int32Array;
  entries: Int32Array;
  problems: Map<number, { index: number; message: string }>;
  /** the unit being scanned */
  current?: { unit: number; scanner: TableScanner; done: number };
}

/** Bytes of state per swept unit (maxNeed, worst index, entries). */
const SWEEP_UNIT_BYTES = 16;

/** What one table scan in flight is charged against `maxCaptureBytes` (its state, a generous bound). */
const SCAN_STATE_BYTES = 256;

export class StreamInspector {
  private readonly limits: InspectLimits;
  private readonly head: Uint8Array;
  private headFilled = 0;
  private readonly tail: Uint8Array;
  private position = 0;
  private readonly regions: Region[] = [];
  private readonly digests: DigestRegion[] = [];
  private capturedBytes = 0;
  /** scans by `${offset}:${length}:${rule.key}`, and the open ones in file order */
  private readonly scans = new Map<string, ScanRegion>();
  private openScans: ScanRegion[] = [];
  private readonly sweeps = new Map<string, SweepState>();
  private overCapture?: { offset: number; length: number };
  private ended = false;
  private report?: InspectionReport;

  constructor(private readonly opts: InspectOptions = {}) {
    this.limits = limitsWith(opts.limits);
    this.head = new Uint8Array(this.limits.headBytes);
    this.tail = new Uint8Array(this.limits.tailBytes);
  }

  /** Bytes seen so far. */
  get bytesSeen(): number {
    return this.position;
  }

  /** Bytes held in memory for inspection (head + tail + declared regions). */
  get heldBytes(): number {
    return this.head.length + this.tail.length + this.capturedBytes;
  }

  /** The first bytes of the stream (up to headBytes) — enough to recognise a compression wrapper. */
  headBytes(): Uint8Array {
    return this.head.subarray(0, this.headFilled);
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.ended) throw new Error('StreamInspector: write after end');
    // A chunk is taken in pieces that end where something completes (the head, a region, a
    // digest): inspection re-runs right there, so whatever it declares next starts at or after
    // the current position and is captured from the rest of this very chunk.
    let rest = chunk;
    while (rest.length > 0) {
      const boundary = this.nextBoundary();
      const n = boundary === undefined ? rest.length : Math.min(rest.length, boundary - this.position);
      const completed = this.take(rest.subarray(0, n));
      rest = rest.subarray(n);
      if (completed) await this.probeForRegions();
    }
  }

  /** The nearest stream offset past the current position where a capture completes. */
  private nextBoundary(): number | undefined {
    let b: number | undefined;
    const consider = (end: number) => {
      if (end > this.position && (b === undefined || end < b)) b = end;
    };
    if (this.headFilled < this.head.length) consider(this.head.length);
    for (const r of this.regions) if (r.filled < r.data.length) consider(r.offset + r.data.length);
    for (const d of this.digests) if (d.hex === undefined) consider(d.offset + d.length);
    return b;
  }

  /** Captures one piece; true when the head, a region or a digest completed with it. */
  private take(piece: Uint8Array): boolean {
    const start = this.position;
    const end = start + piece.length;
    let completed = false;
    if (start < this.head.length) {
      const n = Math.min(this.head.length - start, piece.length);
      this.head.set(piece.subarray(0, n), start);
      this.headFilled = start + n;
      if (this.headFilled === this.head.length) completed = true;
    }
    for (const r of this.regions) {
      const rEnd = r.offset + r.data.length;
      const from = Math.max(r.offset + r.filled, start);
      const to = Math.min(rEnd, end);
      if (from < to && from === r.offset + r.filled) {
        r.data.set(piece.subarray(from - start, to - start), from - r.offset);
        r.filled = to - r.offset;
        if (r.filled === r.data.length) completed = true;
      }
    }
    for (const d of this.digests) {
      if (d.hex !== undefined) continue;
      if (feedInOrder(d, piece, start, end, (bytes) => d.hash.update(bytes))) {
        d.hex = d.hash.digest('hex');
        completed = true;
      }
    }
    this.feedScans(piece, start, end);
    for (const sw of this.sweeps.values()) this.feedSweep(sw, piece, start, end);
    this.pushTail(piece);
    this.position = end;
    return completed;
  }

  /** Feeds the open table scans; they sit in file order, so only the first few are looked at. */
  private feedScans(piece: Uint8Array, start: number, end: number): void {
    let closed = 0;
    for (const sc of this.openScans) {
      if (sc.offset >= end) break;
      if (feedInOrder(sc, piece, start, end, (bytes) => sc.scanner.update(bytes))) {
        sc.complete = true;
        closed++;
      }
    }
    if (closed > 0) this.openScans = this.openScans.filter((sc) => !sc.complete);
  }

  /** @internal Declares a sweep (block-map-rules.ts) over the units still ahead of the stream. */
  declareSweep(sweep: TableSweep): void {
    if (this.sweeps.has(sweep.key) || sweep.unit <= 0) return;
    const first = Math.max(sweep.offset, this.position);
    const from = sweep.offset + Math.ceil((first - sweep.offset) / sweep.unit) * sweep.unit;
    const units = Math.max(0, Math.floor((sweep.offset + sweep.length - from) / sweep.unit));
    if (units === 0) return;
    if (this.capturedBytes + units * SWEEP_UNIT_BYTES > this.limits.maxCaptureBytes) return; // the scans it stood for report it
    this.capturedBytes += units * SWEEP_UNIT_BYTES;
    this.sweeps.set(sweep.key, {
      sweep,
      from,
      units,
      maxNeed: new Float64Array(units),
      worstIndex: new Int32Array(units).fill(-1),
      entries: new Int32Array(units),
      problems: new Map(),
    });
  }

  private feedSweep(sw: SweepState, piece: Uint8Array, start: number, end: number): void {
    const unit = sw.sweep.unit;
    const stop = sw.from + sw.units * unit;
    let pos = Math.max(start, sw.from);
    while (pos < Math.min(end, stop)) {
      const u = Math.floor((pos - sw.from) / unit);
      const unitStart = sw.from + u * unit;
      if (sw.current?.unit !== u) {
        if (pos !== unitStart) return; // joined mid-unit: cannot happen (units start ahead of the stream)
        sw.current = { unit: u, scanner: new TableScanner(sw.sweep.ruleAt(unitStart)), done: 0 };
      }
      const cur = sw.current;
      const n = Math.min(end, unitStart + unit) - pos;
      cur.scanner.update(piece.subarray(pos - start, pos - start + n));
      cur.done += n;
      pos += n;
      if (cur.done === unit) {
        const r = cur.scanner.result;
        sw.maxNeed[u] = r.maxNeed;
        sw.worstIndex[u] = r.worst?.index ?? -1;
        sw.entries[u] = r.entries;
        if (r.problem) sw.problems.set(u, r.problem);
        sw.current = undefined;
      }
    }
  }

  /** A scan of one whole swept unit, when a sweep covered it with the same rule. */
  private swept(offset: number, length: number, rule: TableRule): TableScan | undefined {
    for (const sw of this.sweeps.values()) {
      const u = (offset - sw.from) / sw.sweep.unit;
      if (length !== sw.sweep.unit || !Number.isInteger(u) || u < 0 || u >= sw.units) continue;
      if (offset + length > this.position || sw.current?.unit === u) continue; // not scanned whole yet
      const unitRule = sw.sweep.ruleAt(offset);
      if (unitRule.key !== rule.key) continue;
      const r: TableScan = { entries: sw.entries[u]!, maxNeed: sw.maxNeed[u]! };
      if (sw.worstIndex[u]! >= 0) r.worst = { index: sw.worstIndex[u]!, offset: r.maxNeed - rule.span, what: rule.what };
      const p = sw.problems.get(u);
      if (p) r.problem = p;
      return r;
    }
    return undefined;
  }

  /**
   * @internal A table scan: its result once the bytes passed; a placeholder while discovering
   * (the scan is declared then, from here on its bytes are scanned as they pass); undefined when
   * it cannot be answered (its bytes went by unkept).
   */
  scanResult(offset: number, length: number, rule: TableRule, discovering: boolean): TableScan | undefined {
    const key = `${offset}:${length}:${rule.key}`;
    let sc = this.scans.get(key);
    if (!sc) {
      if (!discovering) return this.scanKept(offset, length, rule);
      // every declared scan is charged to the capture budget: a table-heavy image cannot make the
      // inspector hold state without bound
      if (this.capturedBytes + SCAN_STATE_BYTES > this.limits.maxCaptureBytes) {
        this.overCapture ??= { offset, length };
        return discovering ? { entries: 0, maxNeed: 0 } : undefined;
      }
      this.capturedBytes += SCAN_STATE_BYTES;
      sc = { offset, length, scanner: new TableScanner(rule), done: 0, complete: length === 0, missed: false };
      if (offset < this.position) {
        // started in bytes already gone by: answerable only when those were kept (head, a region)
        const passed = Math.min(length, this.position - offset);
        const kept = new Uint8Array(passed);
        if (this.copyCaptured(offset, kept, undefined) === passed) {
          sc.scanner.update(kept);
          sc.done = passed;
          sc.complete = passed === length;
        } else {
          const swept = this.swept(offset, length, rule);
          if (swept) return swept;
          sc.missed = true;
        }
      }
      this.scans.set(key, sc);
      if (!sc.complete && !sc.missed) this.insertOpenScan(sc);
    }
    if (sc.missed) return undefined;
    if (sc.complete) return sc.scanner.result;
    // at the end, an open scan has seen every byte of its table the stream held (a table cut short
    // by the end is the rule of the entry that names it)
    return discovering ? { entries: 0, maxNeed: 0 } : sc.scanner.result;
  }

  /** A scan never declared (the stream was short enough to be inspected only at its end). */
  private scanKept(offset: number, length: number, rule: TableRule): TableScan | undefined {
    const swept = this.swept(offset, length, rule);
    if (swept) return swept;
    const s = new TableScanner(rule);
    const chunk = 64 * 1024;
    // a table cut short by the end of the stream scans what there is (as a random-access read)
    const have = Math.max(0, Math.min(length, this.position - offset));
    for (let done = 0; done < have;) {
      const out = new Uint8Array(Math.min(chunk, have - done));
      const got = this.copyCaptured(offset + done, out, this.position);
      if (got < out.length) return undefined;
      s.update(out);
      done += got;
    }
    return s.result;
  }

  private insertOpenScan(sc: ScanRegion): void {
    const a = this.openScans;
    let i = a.length;
    while (i > 0 && a[i - 1]!.offset > sc.offset) i--;
    a.splice(i, 0, sc);
  }

  /** Ends the stream and returns the final report (the same shape as a random-access inspection). */
  async end(): Promise<InspectionReport> {
    if (this.report) return this.report;
    this.ended = true;
    const src = new CaptureSource(this, this.position);
    const report = await inspectSource(src, this.opts);
    if (this.overCapture) {
      report.findings.push(
        finding(
          'OVER_LIMIT',
          `inspection needed ${this.overCapture.length} bytes at offset ${this.overCapture.offset}, over the ` +
            `${this.limits.maxCaptureBytes}-byte capture limit for streamed uploads; the image declares tables too large to check`,
        ),
      );
      report.verdict = verdictOf(report.findings);
    }
    this.report = report;
    return report;
  }

  /** Appends to the tail ring: `tail[(pos) % tail.length]` holds the byte at stream position pos. */
  private pushTail(chunk: Uint8Array): void {
    const t = this.tail;
    if (t.length === 0) return;
    let src = chunk;
    let pos = this.position;
    if (src.length > t.length) {
      pos += src.length - t.length;
      src = src.subarray(src.length - t.length);
    }
    const at = pos % t.length;
    const first = Math.min(src.length, t.length - at);
    t.set(src.subarray(0, first), at);
    if (first < src.length) t.set(src.subarray(first), 0);
  }

  /** Re-runs inspection on what is captured to learn the next region it needs. */
  private async probeForRegions(): Promise<void> {
    for (let guard = 0; guard < 8192; guard++) {
      try {
        await inspectSource(new CaptureSource(this, undefined), this.opts);
        return;
      } catch (e) {
        if (e instanceof NeedDigest) {
          // declared digests answer with a placeholder in later discovery runs (see capturedDigest),
          // so the run goes on to declare whatever else it needs from the same bytes
          if (!this.declareDigest(e.offset, e.length, e.algorithm) && !this.isDeclaredDigest(e.offset, e.length, e.algorithm)) return;
          continue;
        }
        if (!(e instanceof NeedBytes) || e.needsSize) return;
        if (!this.declare(e.offset, e.length)) return;
      }
    }
  }

  /** Declares a region ahead of the stream; false when nothing more can be learned now. */
  private declare(offset: number, length: number): boolean {
    if (offset < this.position) return false; // already gone by: the final run reports it
    if (this.regions.some((r) => r.offset <= offset && offset + length <= r.offset + r.data.length)) return false;
    if (this.capturedBytes + length > this.limits.maxCaptureBytes) {
      this.overCapture ??= { offset, length };
      return false;
    }
    this.regions.push({ offset, data: new Uint8Array(length), filled: 0 });
    this.capturedBytes += length;
    return false; // wait for the bytes to arrive
  }

  private declareDigest(offset: number, length: number, algorithm: DigestAlgorithm): boolean {
    if (this.digests.some((d) => d.offset === offset && d.length === length && d.algorithm === algorithm)) return false;
    if (this.digests.length >= 4096) return false;
    const d: DigestRegion = { offset, length, algorithm, hash: createHash(algorithm), done: 0 };
    if (offset < this.position) {
      // the range started in bytes already gone by: only possible when those were kept (head, a region)
      const passed = Math.min(length, this.position - offset);
      const kept = new Uint8Array(passed);
      if (this.copyCaptured(offset, kept, undefined) !== passed) return false;
      d.hash.update(kept);
      d.done = passed;
      if (d.done === length) d.hex = d.hash.digest('hex');
    }
    if (length === 0) d.hex = d.hash.digest('hex');
    this.digests.push(d);
    return d.hex !== undefined;
  }

  /** @internal */
  isPendingDigest(offset: number, length: number, algorithm: DigestAlgorithm): boolean {
    return this.digests.some((d) => d.offset === offset && d.length === length && d.algorithm === algorithm && d.hex === undefined);
  }

  private isDeclaredDigest(offset: number, length: number, algorithm: DigestAlgorithm): boolean {
    return this.digests.some((d) => d.offset === offset && d.length === length && d.algorithm === algorithm);
  }

  /** @internal digest of a range if it was hashed as it passed */
  capturedDigest(offset: number, length: number, algorithm: DigestAlgorithm): string | undefined {
    return this.digests.find((d) => d.offset === offset && d.length === length && d.algorithm === algorithm)?.hex;
  }

  /** @internal byte at `offset` if captured */
  copyCaptured(offset: number, out: Uint8Array, size: number | undefined): number {
    // returns how many bytes from the start of `out` could be filled contiguously
    let done = 0;
    while (done < out.length) {
      const pos = offset + done;
      let n = 0;
      if (pos < this.headFilled) {
        n = Math.min(this.headFilled - pos, out.length - done);
        out.set(this.head.subarray(pos, pos + n), done);
      } else if (size !== undefined && pos >= size - Math.min(size, this.tail.length)) {
        n = Math.min(size - pos, out.length - done);
        for (let i = 0; i < n; i++) out[done + i] = this.tail[(pos + i) % this.tail.length]!;
      } else {
        const r = this.regions.find((x) => x.offset <= pos && pos < x.offset + x.filled);
        if (!r) break;
        n = Math.min(r.offset + r.filled - pos, out.length - done);
        out.set(r.data.subarray(pos - r.offset, pos - r.offset + n), done);
      }
      if (n <= 0) break;
      done += n;
    }
    return done;
  }
}

/** A ByteSource over a StreamInspector's captured bytes. */
class CaptureSource implements ByteSource {
  constructor(
    private readonly owner: StreamInspector,
    readonly size: number | undefined,
  ) {}

  async read(offset: number, length: number): Promise<Uint8Array> {
    checkRange(offset, length);
    let want = length;
    if (this.size !== undefined) {
      if (offset >= this.size) return new Uint8Array(0);
      want = Math.min(length, this.size - offset);
    }
    const out = new Uint8Array(want);
    const got = this.owner.copyCaptured(offset, out, this.size);
    if (got === want) return out;
    if (this.size === undefined) throw new NeedBytes(offset + got, want - got);
    throw new FormatError(
      `bytes ${offset}..${offset + want} were needed for inspection but had already streamed by; ` +
        `upload the image where it can be read at random (or reorder its tables)`,
      'INSPECTION_INCOMPLETE',
    );
  }

  sweep(s: TableSweep): void {
    if (this.size === undefined) this.owner.declareSweep(s);
  }

  async scan(offset: number, length: number, rule: TableRule): Promise<TableScan> {
    checkRange(offset, length);
    const r = this.owner.scanResult(offset, length, rule, this.size === undefined);
    if (r !== undefined) return r;
    throw new FormatError(
      `${rule.table} (${length} bytes at ${offset}) had to be checked but its bytes had already streamed by; ` +
        `upload the image where it can be read at random (or reorder its tables)`,
      'INSPECTION_INCOMPLETE',
    );
  }

  async digest(offset: number, length: number, algorithm: DigestAlgorithm): Promise<string> {
    checkRange(offset, length);
    const hex = this.owner.capturedDigest(offset, length, algorithm);
    if (hex !== undefined) return hex;
    // discovery run: a digest already being computed as bytes pass is answered with a placeholder
    // (discovery results are thrown away; the final run sees the real digest)
    if (this.size === undefined && this.owner.isPendingDigest(offset, length, algorithm)) return 'pending';
    if (length <= 1024 * 1024) {
      // small ranges that were captured anyway (head, tail, a region) hash from memory
      const out = new Uint8Array(length);
      if (this.owner.copyCaptured(offset, out, this.size) === length) return createHash(algorithm).update(out).digest('hex');
    }
    if (this.size === undefined) throw new NeedDigest(offset, length, algorithm);
    throw new FormatError(
      `the ${algorithm} digest of bytes ${offset}..${offset + length} was needed but those bytes had already streamed by`,
      'INSPECTION_INCOMPLETE',
    );
  }
}

/**
 * Feeds the part of `piece` (stream bytes [start, end)) that a consumer of [offset, offset + length)
 * takes next: a consumer takes its bytes in order, from `offset + done`. True once it has them all.
 */
function feedInOrder(
  c: { readonly offset: number; readonly length: number; done: number },
  piece: Uint8Array,
  start: number,
  end: number,
  update: (bytes: Uint8Array) => void,
): boolean {
  const from = Math.max(c.offset + c.done, start);
  const to = Math.min(c.offset + c.length, end);
  if (from < to && from === c.offset + c.done) {
    update(piece.subarray(from - start, to - start));
    c.done = to - c.offset;
  }
  return c.done === c.length;
}

/**
 * The one set of rules for the entries of block-mapping tables: qcow2 L1/L2 and refcount tables,
 * vmdk grain directories and grain tables, the vhd and vhdx BATs, the vdi block map.
 *
 * Both sides use them, so they cannot drift:
 * - the format parsers (`inspect`, random access and the stream inspector) scan every entry of
 *   every table with `scanTable` and turn the result into findings (`tableFindings`);
 * - the disk readers (src/disk/readers) check the entry they are about to follow with the same
 *   rule (`checkEntry`) before reading through it.
 *
 * A rule looks at one entry and says: unallocated (undefined), invalid in itself (a `problem`:
 * misaligned, into the header, over another structure), or the byte of the file it needs
 * (`need`: the end of a table it points to, or one past the first byte of a data cluster — a data
 * cluster must start inside the file, as qemu reads it). Whether the need is met is a comparison
 * with the file size, which a stream only knows at its end: scanning keeps the largest need and
 * which entry has it, never the table (a stream inspector scans tables as they pass, holding a few
 * bytes per table).
 *
 * Why: a truncated or edited image whose tables point past its end is `safe` to a header-only
 * check, but qemu-img check reports it corrupt and every reader fails on it (issue 18, item 2).
 */
import type { ByteSource } from './byte-source.js';
import { checkRange, view } from './byte-source.js';
import { finding, type Finding } from './findings.js';

/**
 * What one entry asks of the file: 0 when it maps nothing, else the file size it needs; a string
 * (the problem) when it is invalid in itself. Plain values: a scan checks millions of entries.
 */
export type EntryCheck = number | string;

export interface TableRule {
  /** identifies the rule and its parameters: the same key over the same bytes gives the same scan */
  readonly key: string;
  /** e.g. "qcow2 L2 table at 327680" */
  readonly table: string;
  /** what an entry maps, e.g. "data cluster" */
  readonly what: string;
  /** bytes from the start of what an entry maps to the size it needs (need − span = its offset) */
  readonly span: number;
  readonly entryBytes: number;
  /**
   * The entry at `at`: without `why` a problem is only `PROBLEM` (a scan checks millions of
   * entries; the message is built once, for the first problem of a table). The result depends on
   * the entry's bytes alone (`index` may name it in a message): when an all-zero entry maps
   * nothing, `TableScanner` counts runs of them without calling this.
   */
  check(v: DataView, at: number, index: number, why?: boolean): EntryCheck;
}

/** What `check` returns without `why` for an entry that is invalid in itself. */
export const PROBLEM = -1;

export interface TableScan {
  entries: number;
  /** the largest file size any entry needs (0: none) */
  maxNeed: number;
  /** the entry with that need */
  worst?: { index: number; offset: number; what: string };
  /** the first entry that is invalid in itself */
  problem?: { index: number; message: string };
}

/** Accumulates a scan over a table's bytes delivered in pieces of any size. */
export class TableScanner {
  private entries = 0;
  private maxNeed = 0;
  private worstIndex = -1;
  private problem?: { index: number; message: string };
  private readonly partial: Uint8Array;
  private partialLength = 0;
  /**
   * 32-bit words per entry when an all-zero entry maps nothing under this rule (qcow2, VMDK and
   * VHDX tables, mostly zeros in a young image), else 0. Runs of zero entries are then counted with
   * a plain loop over words instead of a `check` call each: a fresh 64 MiB qcow2's 8,192-entry
   * refcount table cost `imago inspect` ~2 ms of its start in V8's interpreter (issue 20).
   */
  private readonly zeroRunWords: number;

  constructor(private readonly rule: TableRule) {
    this.partial = new Uint8Array(rule.entryBytes);
    const eb = rule.entryBytes;
    this.zeroRunWords = (eb === 4 || eb === 8) && rule.check(view(new Uint8Array(eb)), 0, 0, false) === 0 ? eb / 4 : 0;
  }

  update(piece: Uint8Array): void {
    const eb = this.rule.entryBytes;
    let at = 0;
    if (this.partialLength > 0) {
      const n = Math.min(eb - this.partialLength, piece.length);
      this.partial.set(piece.subarray(0, n), this.partialLength);
      this.partialLength += n;
      at = n;
      if (this.partialLength === eb) {
        this.entry(view(this.partial), 0);
        this.partialLength = 0;
      }
    }
    const v = view(piece);
    const wpe = this.zeroRunWords;
    const start = at;
    // whole words from `start`, when they can be read as such (aligned)
    const words =
      wpe > 0 && (piece.byteOffset + start) % 4 === 0 ? new Uint32Array(piece.buffer, piece.byteOffset + start, (piece.length - start) >>> 2) : undefined;
    for (; at + eb <= piece.length; at += eb) {
      if (words !== undefined) {
        const from = (at - start) >>> 2;
        let w = from;
        while (w + wpe <= words.length && words[w] === 0 && (wpe === 1 || words[w + 1] === 0)) w += wpe;
        if (w > from) {
          this.entries += (w - from) / wpe;
          at += (w - from) * 4;
          if (at + eb > piece.length) break;
        }
      }
      this.entry(v, at);
    }
    if (at < piece.length) {
      this.partial.set(piece.subarray(at), 0);
      this.partialLength = piece.length - at;
    }
  }

  private entry(v: DataView, at: number): void {
    const index = this.entries++;
    const c = this.rule.check(v, at, index, false) as number;
    if (c === 0) return;
    if (c === PROBLEM) {
      this.problem ??= { index, message: String(this.rule.check(v, at, index, true)) };
      return;
    }
    if (c > this.maxNeed) {
      this.maxNeed = c;
      this.worstIndex = index;
    }
  }

  get result(): TableScan {
    const r: TableScan = { entries: this.entries, maxNeed: this.maxNeed };
    if (this.worstIndex >= 0) r.worst = { index: this.worstIndex, offset: this.maxNeed - this.rule.span, what: this.rule.what };
    if (this.problem) r.problem = this.problem;
    return r;
  }
}

/** A source that can scan a range itself (the stream inspector scans as bytes pass). */
export interface ScanningSource extends ByteSource {
  scan(offset: number, length: number, rule: TableRule): Promise<TableScan>;
}

function canScan(src: ByteSource): src is ScanningSource {
  return typeof (src as Partial<ScanningSource>).scan === 'function';
}

const SCAN_CHUNK = 1024 * 1024;

/** Scans the table of `length` bytes at `offset`; a short table (past the end) scans what there is. */
export async function scanTable(src: ByteSource, offset: number, length: number, rule: TableRule): Promise<TableScan> {
  checkRange(offset, length);
  if (canScan(src)) return src.scan(offset, length, rule);
  const s = new TableScanner(rule);
  for (let done = 0; done < length;) {
    const b = await src.read(offset + done, Math.min(SCAN_CHUNK, length - done));
    if (b.length === 0) break;
    s.update(b);
    done += b.length;
  }
  return s.result;
}

/** Adds one scan into a running total (one finding per kind per image is enough to refuse it). */
export function mergeScan(into: TableScan, scan: TableScan, table: string): void {
  into.entries += scan.entries;
  if (scan.problem && !into.problem) {
    into.problem = { index: scan.problem.index, message: `${table}, entry ${scan.problem.index}: ${scan.problem.message}` };
  }
  if (scan.maxNeed > into.maxNeed) {
    into.maxNeed = scan.maxNeed;
    into.worst = { ...scan.worst!, what: `${table}, entry ${scan.worst!.index}: ${scan.worst!.what}` };
  }
}

export function emptyScan(): TableScan {
  return { entries: 0, maxNeed: 0 };
}

const REMEDY = 'check it with "qemu-img check" and re-create it with "qemu-img convert", then upload again';

/**
 * Findings of a (merged) scan: `TABLE_MALFORMED` for an invalid entry, `OFFSET_PAST_END` for an
 * entry that points past the end of the file. `size` is absent while a stream is still flowing.
 */
export function tableFindings(scan: TableScan, size: number | undefined): Finding[] {
  const out: Finding[] = [];
  if (scan.problem) out.push(finding('TABLE_MALFORMED', `${scan.problem.message}; the image is damaged or crafted — ${REMEDY}`));
  if (size !== undefined && scan.maxNeed > size && scan.worst) {
    out.push(
      finding(
        'OFFSET_PAST_END',
        `${scan.worst.what} at offset ${scan.worst.offset} lies past the end of the ${size}-byte image ` +
          `(the tables need at least ${scan.maxNeed} bytes); the image is truncated or damaged — ${REMEDY}`,
      ),
    );
  }
  return out;
}

/** The reader's side: the entry it follows must be valid and inside a file of `size` bytes. */
export function entryError(c: EntryCheck, rule: TableRule, size: number, span = rule.span): string | undefined {
  if (typeof c === 'string') return c;
  if (c > size) return `${rule.what} at offset ${c - span} lies past the end of the ${size}-byte file; the image is truncated or crafted`;
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// qcow2 (qemu docs/interop/qcow2.rst; qemu block/qcow2-refcount.c check_refcounts_l1/l2)

/** Bits 9..55 of a big-endian u64 entry (QCOW2.entry.offsetMask, qcow2-layout.ts), read as two u32 (no bigint in the hot loop). */
function qcow2Offset(v: DataView, at: number): number {
  return (v.getUint32(at) & 0x00ffffff) * 0x100000000 + ((v.getUint32(at + 4) & 0xfffffe00) >>> 0);
}

export interface Qcow2Geometry {
  clusterSize: number;
  extendedL2: boolean;
  l1Offset: number;
  l1Bytes: number;
}

/** The size a host cluster entry needs (cluster aligned, after the header, not over the L1 table), or PROBLEM. */
function qcow2Host(v: DataView, at: number, g: Qcow2Geometry, need: number): number {
  // alignment from the low u32 (a cluster size divides 2^32): no float arithmetic per entry
  if ((v.getUint32(at + 4) & 0xfffffe00 & (g.clusterSize - 1)) !== 0) return PROBLEM;
  const offset = qcow2Offset(v, at);
  if (offset < g.clusterSize) return PROBLEM;
  if (offset < g.l1Offset + g.l1Bytes && offset + g.clusterSize > g.l1Offset) return PROBLEM;
  return offset + need;
}

/** Why qcow2Host said PROBLEM (built once per table). */
function qcow2HostWhy(offset: number, g: Qcow2Geometry, what: string): string {
  if (offset % g.clusterSize !== 0) return `${what} offset ${offset} is not aligned to the ${g.clusterSize}-byte cluster size`;
  if (offset < g.clusterSize) return `${what} at offset ${offset} points into the header cluster`;
  return `${what} at offset ${offset} overlaps the L1 table`;
}

/** L1 entry → the L2 table it names (a whole cluster). */
export function qcow2L1Rule(g: Qcow2Geometry): TableRule {
  return {
    key: `qcow2-l1:${g.clusterSize}:${g.l1Offset}:${g.l1Bytes}`,
    table: `qcow2 L1 table at ${g.l1Offset}`,
    what: 'L2 table',
    span: g.clusterSize,
    entryBytes: 8,
    check(v, at, _index, why = true) {
      if ((v.getUint32(at) & 0x00ffffff) === 0 && (v.getUint32(at + 4) & 0xfffffe00) === 0) return 0;
      const need = qcow2Host(v, at, g, g.clusterSize);
      return need === PROBLEM && why ? qcow2HostWhy(qcow2Offset(v, at), g, 'L2 table') : need;
    },
  };
}

/**
 * L2 entry → the data cluster it maps (a compressed one: its first byte); the table itself is at
 * `l2Offset`. Bit 62 compressed, bits 0..x−1 its offset, x = 62 − (cluster_bits − 8).
 */
export function qcow2L2Rule(g: Qcow2Geometry, l2Offset: number): TableRule {
  const clusterBits = Math.log2(g.clusterSize);
  // x = 62 − (cluster_bits − 8) is 49..61: the offset's high part is bits 0..x−33 of the high u32
  const coffsetHighMask = 2 ** (62 - (clusterBits - 8) - 32) - 1;
  return {
    key: `qcow2-l2:${g.clusterSize}:${g.extendedL2}:${g.l1Offset}:${g.l1Bytes}:${l2Offset}`,
    table: `qcow2 L2 table at ${l2Offset}`,
    what: 'data cluster',
    span: 1,
    entryBytes: g.extendedL2 ? 16 : 8,
    check(v, at, _index, why = true) {
      if (v.getUint32(at) & 0x40000000) {
        const coffset = (v.getUint32(at) & coffsetHighMask) * 0x100000000 + v.getUint32(at + 4);
        if (coffset < g.clusterSize) return why ? `compressed cluster at offset ${coffset} points into the header cluster` : PROBLEM;
        return coffset + 1;
      }
      if ((v.getUint32(at) & 0x00ffffff) === 0 && (v.getUint32(at + 4) & 0xfffffe00) === 0) return 0;
      const need = qcow2Host(v, at, g, 1);
      if (need === PROBLEM) return why ? qcow2HostWhy(qcow2Offset(v, at), g, 'data cluster') : PROBLEM;
      if (need === l2Offset + 1) return why ? `data cluster at offset ${l2Offset} is its own L2 table` : PROBLEM;
      return need;
    },
  };
}

/** Refcount table entry → the refcount block it names (a whole cluster). */
export function qcow2RefcountRule(clusterSize: number, tableOffset: number): TableRule {
  return {
    key: `qcow2-refcount:${clusterSize}:${tableOffset}`,
    table: `qcow2 refcount table at ${tableOffset}`,
    what: 'refcount block',
    span: clusterSize,
    entryBytes: 8,
    check(v, at, _index, why = true) {
      const block = qcow2Offset(v, at);
      if (block === 0) return 0;
      if (block % clusterSize !== 0) return why ? `refcount block offset ${block} is not aligned to the ${clusterSize}-byte cluster size` : PROBLEM;
      if (block < clusterSize) return why ? `refcount block at offset ${block} points into the header cluster` : PROBLEM;
      return block + clusterSize;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// vmdk (VMware Virtual Disk Format 5.0 §Grain Directories and Grain Tables; offsets in sectors)

const SECTOR = 512;

/** Grain directory entry → the grain table it names (numGTEsPerGT × 4 bytes). */
export function vmdkGdRule(gtEntries: number, gdOffset: number): TableRule {
  return {
    key: `vmdk-gd:${gtEntries}:${gdOffset}`,
    table: `VMDK grain directory at ${gdOffset}`,
    what: 'grain table',
    span: gtEntries * 4,
    entryBytes: 4,
    check(v, at) {
      // a grain table is never malformed by itself: only where it ends matters
      const sector = v.getUint32(at, true);
      if (sector === 0) return 0;
      const off = sector * SECTOR;
      return off + gtEntries * 4;
    },
  };
}

/** Grain table entry → the grain it maps (0 unallocated, 1 zeroed grain). */
export function vmdkGtRule(gtOffset: number): TableRule {
  return {
    key: `vmdk-gt:${gtOffset}`,
    table: `VMDK grain table at ${gtOffset}`,
    what: 'grain',
    span: 1,
    entryBytes: 4,
    check(v, at, _index, why = true) {
      const sector = v.getUint32(at, true);
      if (sector === 0 || sector === 1) return 0;
      const off = sector * SECTOR;
      if (off === gtOffset) return why ? `grain at sector ${sector} is its own grain table` : PROBLEM;
      return off + 1;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// vhd (Microsoft VHD Image Format Specification, dynamic disks; qemu block/vpc.c). Big-endian.

export const VHD_BAT_UNUSED = 0xffffffff;

export interface VhdBatGeometry {
  batOffset: number;
  batBytes: number;
  blockSize: number;
}

/** Bytes of the sector bitmap in front of each block (rounded up to whole sectors). */
export function vhdBitmapBytes(blockSize: number): number {
  return Math.ceil(blockSize / SECTOR / 8 / SECTOR) * SECTOR;
}

/** BAT entry (a sector number) → the block: its bitmap and its first data byte must be in the file. */
export function vhdBatRule(g: VhdBatGeometry): TableRule {
  const bitmap = vhdBitmapBytes(g.blockSize);
  return {
    key: `vhd-bat:${g.batOffset}:${g.batBytes}:${g.blockSize}`,
    table: `VHD block allocation table at ${g.batOffset}`,
    what: 'block',
    span: bitmap + 1,
    entryBytes: 4,
    check(v, at, _index, why = true) {
      const e = v.getUint32(at);
      if (e === VHD_BAT_UNUSED) return 0;
      const off = e * SECTOR;
      if (off < SECTOR) return why ? `block at sector ${e} points into the footer copy` : PROBLEM;
      if (off < g.batOffset + g.batBytes && off + bitmap + g.blockSize > g.batOffset) return why ? `block at sector ${e} overlaps the BAT` : PROBLEM;
      return off + bitmap + 1;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// vhdx ([MS-VHDX] §2.5 BAT). Little-endian; state in bits 0..2, file offset in MiB in bits 20..63.

const MiB = 1024 * 1024;
export const VHDX_PAYLOAD_FULLY_PRESENT = 6;
export const VHDX_PAYLOAD_PARTIALLY_PRESENT = 7;
const VHDX_PAYLOAD_STATES = new Set([0, 1, 2, 3, 6, 7]);

/**
 * BAT entry → the block it maps. The rule needs no metadata (a stream passes the BAT before the
 * metadata region that gives the block size): payload and sector-bitmap entries are told apart
 * only by their states (4 and 5 are invalid for both); `need` is one past the block's first byte,
 * and `vhdxBlockNeed` extends it to the whole block once the block size is known — qemu's check:
 * "BAT entry offset points after end of file".
 */
export function vhdxBatRule(batOffset: number, batBytes: number): TableRule {
  return {
    key: `vhdx-bat:${batOffset}:${batBytes}`,
    table: `VHDX BAT at ${batOffset}`,
    what: 'block',
    span: 1,
    entryBytes: 8,
    check(v, at, _index, why = true) {
      const lo = v.getUint32(at, true);
      const state = lo & 7;
      if (!VHDX_PAYLOAD_STATES.has(state)) return why ? `block entry has the invalid state ${state}` : PROBLEM;
      if (state !== VHDX_PAYLOAD_FULLY_PRESENT && state !== VHDX_PAYLOAD_PARTIALLY_PRESENT) return 0;
      // bits 20..63: the offset in MiB (44 bits: up to 16 EiB; a safe integer of bytes below 8 PiB)
      const mib = v.getUint32(at + 4, true) * 4096 + (lo >>> 20);
      if (mib > Number.MAX_SAFE_INTEGER / MiB) return why ? `block offset ${mib} MiB is out of range` : PROBLEM;
      const off = mib * MiB;
      if (off < MiB) return why ? `block points into the header area (offset ${off})` : PROBLEM;
      if (off < batOffset + batBytes && off + MiB > batOffset) return why ? `block at ${off} overlaps the BAT` : PROBLEM;
      return off + 1;
    },
  };
}

/** A VHDX BAT entry's need once the block size is known: the whole block (the reader's side). */
export function vhdxWholeBlock(c: EntryCheck, blockSize: number): EntryCheck {
  return typeof c === 'number' && c > 0 ? c - 1 + blockSize : c;
}

/** A VHDX BAT scan's need once the block size is known: the whole block. */
export function vhdxBlockNeed(scan: TableScan, blockSize: number): TableScan {
  return scan.maxNeed === 0 ? scan : { ...scan, maxNeed: scan.maxNeed - 1 + blockSize };
}

// ---------------------------------------------------------------------------------------------
// vdi (VirtualBox VDICore.h; qemu block/vdi.c). Little-endian block numbers.

export const VDI_BLOCK_FREE = 0xffffffff;
export const VDI_BLOCK_DISCARDED = 0xfffffffe;

export interface VdiMapGeometry {
  dataOffset: number;
  blockSize: number;
  blocks: number;
}

/** Block map entry → the data block it maps. */
export function vdiMapRule(g: VdiMapGeometry): TableRule {
  return {
    key: `vdi-map:${g.dataOffset}:${g.blockSize}:${g.blocks}`,
    table: 'VDI block map',
    what: 'data block',
    span: 1,
    entryBytes: 4,
    check(v, at, _index, why = true) {
      const e = v.getUint32(at, true);
      if (e === VDI_BLOCK_FREE || e === VDI_BLOCK_DISCARDED) return 0;
      if (e >= g.blocks) return why ? `maps to data block ${e}, past the ${g.blocks} blocks of the image` : PROBLEM;
      return g.dataOffset + e * g.blockSize + 1;
    },
  };
}

export interface TableToScan {
  offset: number;
  length: number;
  rule: TableRule;
}

/**
 * Scans a format's tables (in file order, which is the order a stream delivers them) within
 * `maxTableScanBytes`, and returns the findings: one place where every parser applies the rules.
 */
export async function checkTables(src: ByteSource, tables: TableToScan[], maxTableScanBytes: number, format: string): Promise<Finding[]> {
  const total = emptyScan();
  const ordered = [...tables].sort((a, b) => a.offset - b.offset);
  let bytes = 0;
  for (const t of ordered) bytes += t.length;
  if (bytes > maxTableScanBytes) {
    return [
      finding(
        'OVER_LIMIT',
        `${format} tables of ${bytes} bytes are over the ${maxTableScanBytes}-byte limit of table bytes checked per image; ` +
          `the image cannot be verified — convert it to a format with larger clusters or ask an administrator to raise maxTableScanBytes`,
      ),
    ];
  }
  for (const t of ordered) mergeScan(total, await scanTable(src, t.offset, t.length, t.rule), t.rule.table);
  return tableFindings(total, src.size);
}

/**
 * Every `unit`-sized piece of a range scanned as if it were a table with the rule `ruleAt(offset)`
 * gives: a stream learns where a qcow2 image's L2 tables are only from its L1 table, which `qemu-img
 * resize` moves to the end, after the L2 tables. A stream inspector that supports sweeps keeps a
 * few bytes of scan result per unit, so that an L2 table that went by before the L1 table named it
 * is still checked. A hint: sources that read at random ignore it.
 */
export interface TableSweep {
  /** identifies the sweep and its parameters */
  key: string;
  offset: number;
  length: number;
  unit: number;
  ruleAt(offset: number): TableRule;
}

interface SweepingSource extends ByteSource {
  sweep(s: TableSweep): void;
}

export function sweepTables(src: ByteSource, s: TableSweep): void {
  const sweeping = src as Partial<SweepingSource>;
  if (typeof sweeping.sweep === 'function') sweeping.sweep(s);
}

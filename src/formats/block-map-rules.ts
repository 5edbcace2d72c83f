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

/** What one entry asks of the file; undefined when the entry maps nothing. */
export type EntryCheck = { problem: string } | { need: number; offset: number; what: string } | undefined;

export interface TableRule {
  /** identifies the rule and its parameters: the same key over the same bytes gives the same scan */
  readonly key: string;
  /** e.g. "qcow2 L2 table at 327680" */
  readonly table: string;
  readonly entryBytes: number;
  check(v: DataView, at: number, index: number): EntryCheck;
}

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
  readonly result: TableScan = { entries: 0, maxNeed: 0 };
  private readonly partial: Uint8Array;
  private partialLength = 0;

  constructor(private readonly rule: TableRule) {
    this.partial = new Uint8Array(rule.entryBytes);
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
    for (; at + eb <= piece.length; at += eb) this.entry(v, at);
    if (at < piece.length) {
      this.partial.set(piece.subarray(at), 0);
      this.partialLength = piece.length - at;
    }
  }

  private entry(v: DataView, at: number): void {
    const index = this.result.entries++;
    const c = this.rule.check(v, at, index);
    if (c === undefined) return;
    if ('problem' in c) {
      this.result.problem ??= { index, message: c.problem };
      return;
    }
    if (c.need > this.result.maxNeed) {
      this.result.maxNeed = c.need;
      this.result.worst = { index, offset: c.offset, what: c.what };
    }
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
  for (let done = 0; done < length; ) {
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
export function entryError(c: EntryCheck, size: number): string | undefined {
  if (c === undefined) return undefined;
  if ('problem' in c) return c.problem;
  if (c.need > size) return `${c.what} at offset ${c.offset} lies past the end of the ${size}-byte file; the image is truncated or crafted`;
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// qcow2 (qemu docs/interop/qcow2.rst; qemu block/qcow2-refcount.c check_refcounts_l1/l2)

/** bits 9..55 of L1, L2 and refcount table entries */
export const QCOW2_OFFSET_MASK = 0x00fffffffffffe00n;
export const QCOW2_COMPRESSED = 1n << 62n;
export const QCOW2_ZERO = 1n;

export interface Qcow2Geometry {
  clusterSize: number;
  extendedL2: boolean;
  l1Offset: number;
  l1Bytes: number;
}

function qcow2Host(offset: number, g: Qcow2Geometry, what: string): string | undefined {
  if (offset % g.clusterSize !== 0) return `${what} offset ${offset} is not aligned to the ${g.clusterSize}-byte cluster size`;
  if (offset < g.clusterSize) return `${what} at offset ${offset} points into the header cluster`;
  if (offset < g.l1Offset + g.l1Bytes && offset + g.clusterSize > g.l1Offset) return `${what} at offset ${offset} overlaps the L1 table`;
  return undefined;
}

/** L1 entry → the L2 table it names (a whole cluster). */
export function qcow2L1Rule(g: Qcow2Geometry): TableRule {
  return {
    key: `qcow2-l1:${g.clusterSize}:${g.l1Offset}:${g.l1Bytes}`,
    table: `qcow2 L1 table at ${g.l1Offset}`,
    entryBytes: 8,
    check(v, at) {
      const l2 = Number(v.getBigUint64(at) & QCOW2_OFFSET_MASK);
      if (l2 === 0) return undefined;
      const p = qcow2Host(l2, g, 'L2 table');
      return p ? { problem: p } : { need: l2 + g.clusterSize, offset: l2, what: 'L2 table' };
    },
  };
}

/** L2 entry → the data (or compressed) cluster it maps; the table itself is at `l2Offset`. */
export function qcow2L2Rule(g: Qcow2Geometry, l2Offset: number): TableRule {
  const clusterBits = Math.log2(g.clusterSize);
  const csizeShift = BigInt(62 - (clusterBits - 8));
  return {
    key: `qcow2-l2:${g.clusterSize}:${g.extendedL2}:${g.l1Offset}:${g.l1Bytes}:${l2Offset}`,
    table: `qcow2 L2 table at ${l2Offset}`,
    entryBytes: g.extendedL2 ? 16 : 8,
    check(v, at) {
      const entry = v.getBigUint64(at);
      if (entry & QCOW2_COMPRESSED) {
        const coffset = Number(entry & ((1n << csizeShift) - 1n));
        if (coffset < g.clusterSize) return { problem: `compressed cluster at offset ${coffset} points into the header cluster` };
        return { need: coffset + 1, offset: coffset, what: 'compressed cluster' };
      }
      const host = Number(entry & QCOW2_OFFSET_MASK);
      if (host === 0) return undefined;
      const p = qcow2Host(host, g, 'data cluster');
      if (p) return { problem: p };
      if (host === l2Offset) return { problem: `data cluster at offset ${host} is its own L2 table` };
      return { need: host + 1, offset: host, what: 'data cluster' };
    },
  };
}

/** Refcount table entry → the refcount block it names (a whole cluster). */
export function qcow2RefcountRule(clusterSize: number, tableOffset: number): TableRule {
  return {
    key: `qcow2-refcount:${clusterSize}:${tableOffset}`,
    table: `qcow2 refcount table at ${tableOffset}`,
    entryBytes: 8,
    check(v, at) {
      const block = Number(v.getBigUint64(at) & QCOW2_OFFSET_MASK);
      if (block === 0) return undefined;
      if (block % clusterSize !== 0) return { problem: `refcount block offset ${block} is not aligned to the ${clusterSize}-byte cluster size` };
      if (block < clusterSize) return { problem: `refcount block at offset ${block} points into the header cluster` };
      return { need: block + clusterSize, offset: block, what: 'refcount block' };
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
    entryBytes: 4,
    check(v, at) {
      const sector = v.getUint32(at, true);
      if (sector === 0) return undefined;
      const off = sector * SECTOR;
      if (off < SECTOR) return { problem: `grain table at sector ${sector} points into the header` };
      return { need: off + gtEntries * 4, offset: off, what: 'grain table' };
    },
  };
}

/** Grain table entry → the grain it maps (0 unallocated, 1 zeroed grain). */
export function vmdkGtRule(gtOffset: number): TableRule {
  return {
    key: `vmdk-gt:${gtOffset}`,
    table: `VMDK grain table at ${gtOffset}`,
    entryBytes: 4,
    check(v, at) {
      const sector = v.getUint32(at, true);
      if (sector === 0 || sector === 1) return undefined;
      const off = sector * SECTOR;
      if (off === gtOffset) return { problem: `grain at sector ${sector} is its own grain table` };
      return { need: off + 1, offset: off, what: 'grain' };
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
    entryBytes: 4,
    check(v, at) {
      const e = v.getUint32(at);
      if (e === VHD_BAT_UNUSED) return undefined;
      const off = e * SECTOR;
      if (off < SECTOR) return { problem: `block at sector ${e} points into the footer copy` };
      if (off < g.batOffset + g.batBytes && off + bitmap + g.blockSize > g.batOffset) return { problem: `block at sector ${e} overlaps the BAT` };
      return { need: off + bitmap + 1, offset: off, what: 'block' };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// vhdx ([MS-VHDX] §2.5 BAT). Little-endian; state in bits 0..2, file offset in MiB in bits 20..63.

const MiB = 1024 * 1024;
export const VHDX_STATE_MASK = 7n;
export const VHDX_OFFSET_SHIFT = 20n;
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
    entryBytes: 8,
    check(v, at) {
      const e = v.getBigUint64(at, true);
      const state = Number(e & VHDX_STATE_MASK);
      if (!VHDX_PAYLOAD_STATES.has(state)) return { problem: `block entry has the invalid state ${state}` };
      if (state !== VHDX_PAYLOAD_FULLY_PRESENT && state !== VHDX_PAYLOAD_PARTIALLY_PRESENT) return undefined;
      const mib = e >> VHDX_OFFSET_SHIFT;
      if (mib > BigInt(Number.MAX_SAFE_INTEGER) / BigInt(MiB)) return { problem: `block offset ${mib} MiB is out of range` };
      const off = Number(mib) * MiB;
      if (off < MiB) return { problem: `block points into the header area (offset ${off})` };
      if (off < batOffset + batBytes && off + MiB > batOffset) return { problem: `block at ${off} overlaps the BAT` };
      return { need: off + 1, offset: off, what: 'block' };
    },
  };
}

/** A VHDX BAT entry's need once the block size is known: the whole block (the reader's side). */
export function vhdxWholeBlock(c: EntryCheck, blockSize: number): EntryCheck {
  return c !== undefined && 'need' in c ? { ...c, need: c.need - 1 + blockSize } : c;
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
    entryBytes: 4,
    check(v, at) {
      const e = v.getUint32(at, true);
      if (e === VDI_BLOCK_FREE || e === VDI_BLOCK_DISCARDED) return undefined;
      if (e >= g.blocks) return { problem: `maps to data block ${e}, past the ${g.blocks} blocks of the image` };
      const off = g.dataOffset + e * g.blockSize;
      return { need: off + 1, offset: off, what: `data block ${e}` };
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

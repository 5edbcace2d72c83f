/**
 * POSIX ustar / GNU tar headers: the container of an OVA (random access, `readTarMembers`) and of
 * an OCI containerDisk layer (a stream, `TarStreamParser`; written by `ustarHeader`).
 *
 * Spec: POSIX.1-2017 pax "ustar Interchange Format" and "pax Extended Header" (records
 * "LEN key=value\n", LEN counting the whole record); GNU tar manual §"Basic Tar Format" for the
 * 'L' long-name record and base-256 sizes.
 *
 * | offset | size | field |
 * |--------|------|-------|
 * | 0   | 100 | name |
 * | 100 | 8   | mode (octal) |
 * | 108 | 8   | uid (octal) |
 * | 116 | 8   | gid (octal) |
 * | 124 | 12  | size (octal, or base-256 when the first byte has bit 7 set) |
 * | 136 | 12  | mtime (octal) |
 * | 148 | 8   | checksum: sum of the header bytes with this field read as spaces |
 * | 156 | 1   | type: '0'/NUL/'7' file, '1' hard link, '2' symlink, '3' char, '4' block, '5' dir, '6' fifo, 'x' pax, 'g' global pax, 'L' GNU long name, 'K' GNU long link name |
 * | 157 | 100 | link name |
 * | 257 | 6   | magic "ustar\0" (POSIX) or "ustar " (GNU) |
 * | 263 | 2   | version "00" (POSIX) |
 * | 265 | 32  | uname |
 * | 297 | 32  | gname |
 * | 345 | 155 | prefix (ustar) |
 *
 * Each header is one 512-byte read; member data is skipped (the next header sits at the next
 * 512-aligned offset after the data), so a walk costs O(members), not O(archive). A pax 'x' record
 * may override the next member's `path`, `linkpath` and `size` (members over 8 GiB).
 * Errors: a bad checksum or a size that is not a number is OVA_MALFORMED; an archive cut inside a
 * member or a header is TRUNCATED; more members than allowed stops the walk (`truncated`).
 *
 * The stream parser is stricter, because what it reads is extracted by other programs (KubeVirt,
 * CDI, GNU tar) whose reading of an odd archive may differ from ours: a pax record whose length
 * does not add up, a name with a NUL inside, a pax `size` that is not a number, a global header
 * that renames entries, extension records piled up before one entry, an extension record with no
 * entry after it, and anything but zeros after the end-of-archive block are refused, not
 * guessed at (the "two parsers read one archive two ways" smuggling).
 */
import { FormatError, cString, latin1, readExact, type ByteSource } from './byte-source.js';

export const BLOCK = 512;

export interface TarMember {
  name: string;
  type: 'file' | 'hardlink' | 'symlink' | 'chardev' | 'blockdev' | 'directory' | 'fifo' | 'other';
  /** the raw type flag, for messages */
  typeflag: string;
  size: number;
  linkName?: string;
  /** offset of the header block */
  headerOffset: number;
  /** offset of the member's data */
  dataOffset: number;
}

const TYPES: Record<string, TarMember['type']> = {
  '0': 'file',
  '\0': 'file',
  '7': 'file',
  '1': 'hardlink',
  '2': 'symlink',
  '3': 'chardev',
  '4': 'blockdev',
  '5': 'directory',
  '6': 'fifo',
};

export function checksumOk(h: Uint8Array): boolean {
  const stored = parseOctal(h.subarray(148, 156));
  if (stored === undefined) return false;
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
  return sum === stored;
}

export function isUstarHeader(h: Uint8Array): boolean {
  return h.length >= BLOCK && latin1(h.subarray(257, 262)) === 'ustar' && checksumOk(h);
}

function parseOctal(b: Uint8Array): number | undefined {
  const s = latin1(b)
    .replace(/[\0 ]+$/, '')
    .trim();
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) return undefined;
  return parseInt(s, 8);
}

function parseSize(b: Uint8Array, malformedCode: string): number {
  if (b[0]! & 0x80) {
    let v = 0n;
    for (let i = 1; i < b.length; i++) v = (v << 8n) | BigInt(b[i]!);
    if (b[0]! & 0x40 || v > BigInt(Number.MAX_SAFE_INTEGER)) throw new FormatError('tar member size is out of range', 'FIELD_OUT_OF_RANGE');
    return Number(v);
  }
  const n = parseOctal(b);
  if (n === undefined) throw new FormatError('tar member size is not an octal number', malformedCode);
  return n;
}

/**
 * Walks the members in order, reading one header block per member (data is skipped). Stops at
 * the end-of-archive zero block or after `maxMembers` (then `truncated` is true). `onMember` runs as
 * each header is met, so a caller can read or hash that member while a stream is still before it.
 */
export async function readTarMembers(
  src: ByteSource,
  maxMembers: number,
  maxNameBytes: number,
  onMember?: (m: TarMember, index: number) => Promise<void>,
): Promise<{ members: TarMember[]; truncated: boolean }> {
  const members: TarMember[] = [];
  let at = 0;
  let longName: string | undefined;
  let longLink: string | undefined;
  let pax: Record<string, string> = {};
  // extension records ('x', 'L', ...) do not count as members but must not loop for ever either
  for (let records = 0; records < maxMembers * 4; records++) {
    const h = await src.read(at, BLOCK);
    if (h.length < BLOCK) {
      // an archive may end without its two zero blocks, but not inside a header or a member's data
      if (h.length === 0 && members.length > 0 && (src.size === undefined || at === src.size)) return { members, truncated: false };
      throw new FormatError(`tar header at ${at} is cut short; the archive is truncated`, 'TRUNCATED');
    }
    if (h.every((x) => x === 0)) return { members, truncated: false };
    const block = decodeTarHeader(h, at, 'OVA_MALFORMED');
    const typeflag = block.typeflag;
    let size = block.size;
    if (pax.size !== undefined && /^\d+$/.test(pax.size) && !'xgLK'.includes(typeflag)) size = Number(pax.size);
    if (!Number.isSafeInteger(size)) throw new FormatError(`tar member size at ${at} is out of range`, 'FIELD_OUT_OF_RANGE');
    const dataOffset = at + BLOCK;
    const next = dataOffset + Math.ceil(size / BLOCK) * BLOCK;
    if (typeflag === 'L' || typeflag === 'K' || typeflag === 'x' || typeflag === 'g') {
      if (size > maxNameBytes) throw new FormatError(`tar '${typeflag}' record of ${size} bytes is over the ${maxNameBytes}-byte limit`, 'OVER_LIMIT');
      const body = await readExact(src, dataOffset, size, 'tar extended header');
      if (typeflag === 'L') longName = cString(body);
      else if (typeflag === 'K') longLink = cString(body);
      else if (typeflag === 'x') pax = { ...pax, ...paxRecords(body) };
      at = next;
      continue;
    }
    const name = pax.path ?? longName ?? block.name;
    const m: TarMember = { name, type: TYPES[typeflag] ?? 'other', typeflag, size, headerOffset: at, dataOffset };
    const link = pax.linkpath ?? longLink ?? block.linkName;
    if (link) m.linkName = link;
    longName = undefined;
    longLink = undefined;
    pax = {};
    members.push(m);
    await onMember?.(m, members.length - 1);
    if (members.length >= maxMembers) return { members, truncated: true };
    at = next;
  }
  return { members, truncated: true };
}

/** pax extended header: records "LEN key=value\n". */
function paxRecords(body: Uint8Array): Record<string, string> {
  const out: Record<string, string> = {};
  for (const rec of new TextDecoder().decode(body).split('\n')) {
    const m = /^\d+ ([^=]+)=(.*)$/s.exec(rec);
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}

/** What one header block says, before extension records (pax, GNU long names) are applied. */
export interface TarHeaderBlock {
  typeflag: string;
  /** the header's own name (ustar prefix joined) */
  name: string;
  linkName: string;
  size: number;
}

/** Decodes one 512-byte header block; a bad checksum or size is a FormatError naming `at`. */
export function decodeTarHeader(h: Uint8Array, at: number, malformedCode = 'MALFORMED_HEADER'): TarHeaderBlock {
  if (!checksumOk(h)) throw new FormatError(`tar header at ${at} has a bad checksum; the archive is damaged or not a tar`, malformedCode);
  const typeflag = String.fromCharCode(h[156]!);
  const size = parseSize(h.subarray(124, 136), malformedCode);
  const prefix = cString(h.subarray(345, 500));
  const baseName = cString(h.subarray(0, 100));
  return { typeflag, name: prefix ? `${prefix}/${baseName}` : baseName, linkName: cString(h.subarray(157, 257)), size };
}

export const TAR_EXTENSION_TYPES = 'xgLK';

/** A member as the stream parser meets it, extension records applied. */
export interface TarEntry {
  name: string;
  type: TarMember['type'];
  typeflag: string;
  size: number;
  linkName?: string;
  /** offset of the header block (of the first extension record, when there are any) */
  headerOffset: number;
  dataOffset: number;
}

export type TarEvent =
  | { kind: 'entry'; entry: TarEntry }
  /** the current entry's next bytes: a view of the pushed chunk (copy it to keep it past the chunk's life) */
  | { kind: 'data'; bytes: Uint8Array }
  /** the end-of-archive block was met (or, at `finish`, the archive ended cleanly at an entry boundary) */
  | { kind: 'end' };

export interface TarStreamLimits {
  /** bytes of one extension record (pax 'x'/'g', GNU 'L'/'K') we hold (default 64 KiB) */
  maxExtensionBytes: number;
  /** extension records before one entry (default 4: one of each kind) */
  maxExtensionRecords: number;
  /** zero bytes accepted after the end-of-archive block (default 1 MiB: record padding is 10 KiB) */
  maxTrailingBytes: number;
}

export const DEFAULT_TAR_STREAM_LIMITS: Readonly<TarStreamLimits> = Object.freeze({
  maxExtensionBytes: 64 * 1024,
  maxExtensionRecords: 4,
  maxTrailingBytes: 1024 * 1024,
});

type Phase =
  | { kind: 'header' }
  | { kind: 'extension'; typeflag: string; size: number; at: number }
  | { kind: 'data'; left: number }
  | { kind: 'padding'; left: number }
  | { kind: 'trailer' };

/**
 * A push parser of a tar stream: `push(chunk)` returns what the chunk completed (entries, their
 * data as views of the chunk, the end); `finish()` checks the archive did not stop midway. Pure and
 * synchronous, holding at most one header block and one extension record.
 */
export class TarStreamParser {
  private readonly limits: TarStreamLimits;
  private phase: Phase = { kind: 'header' };
  /** a header block or an extension record being gathered */
  private held = new Uint8Array(BLOCK);
  private heldBytes = 0;
  private offset = 0;
  private extensionRecords = 0;
  private firstExtensionAt: number | undefined;
  private longName: string | undefined;
  private longLink: string | undefined;
  private pax: Record<string, string> = {};
  private entries = 0;
  private ended = false;
  private trailingBytes = 0;

  constructor(limits: Partial<TarStreamLimits> = {}) {
    this.limits = { ...DEFAULT_TAR_STREAM_LIMITS, ...limits };
  }

  /** bytes consumed so far */
  get position(): number {
    return this.offset;
  }

  push(chunk: Uint8Array): TarEvent[] {
    const events: TarEvent[] = [];
    let i = 0;
    while (i < chunk.length) {
      const p = this.phase;
      const rest = chunk.length - i;
      if (p.kind === 'data') {
        const n = Math.min(p.left, rest);
        events.push({ kind: 'data', bytes: chunk.subarray(i, i + n) });
        this.advance(n);
        i += n;
        p.left -= n;
        if (p.left === 0) this.afterData(this.offset);
      } else if (p.kind === 'padding') {
        const n = Math.min(p.left, rest);
        this.advance(n);
        i += n;
        p.left -= n;
        if (p.left === 0) this.phase = { kind: 'header' };
      } else if (p.kind === 'trailer') {
        for (let k = i; k < chunk.length; k++) {
          if (chunk[k] !== 0) {
            throw new FormatError(
              `non-zero byte at ${this.offset + (k - i)}, after the tar end-of-archive block at ${this.offset - this.trailingBytes - BLOCK}; nothing may follow the end of the archive`,
              'TRAILING_DATA',
            );
          }
        }
        this.trailingBytes += rest;
        this.advance(rest);
        i += rest;
        if (this.trailingBytes > this.limits.maxTrailingBytes) {
          throw new FormatError(`more than ${this.limits.maxTrailingBytes} bytes of padding after the tar end-of-archive block`, 'OVER_LIMIT');
        }
      } else {
        const want = p.kind === 'header' ? BLOCK : p.size;
        const n = Math.min(want - this.heldBytes, rest);
        this.held.set(chunk.subarray(i, i + n), this.heldBytes);
        this.heldBytes += n;
        this.advance(n);
        i += n;
        if (this.heldBytes < want) continue;
        this.heldBytes = 0;
        if (p.kind === 'header') this.header(this.held, this.offset - BLOCK, events);
        else this.extension(p, this.held.subarray(0, p.size));
      }
    }
    return events;
  }

  /** The stream ended: throws TRUNCATED unless it ended at an entry boundary; returns the final events. */
  finish(): TarEvent[] {
    const p = this.phase;
    if (p.kind === 'trailer') return [];
    if (p.kind === 'header' && this.heldBytes === 0 && this.extensionRecords === 0) {
      if (this.entries === 0) throw new FormatError('the tar stream holds no entry', 'TRUNCATED');
      return [{ kind: 'end' }];
    }
    const what =
      p.kind === 'data'
        ? `inside an entry's data (${p.left} of its bytes are missing: its header declares more than the stream holds)`
        : p.kind === 'padding'
          ? "inside an entry's padding"
          : p.kind === 'extension' || this.extensionRecords > 0
            ? 'after an extension record (pax or GNU long name) with no entry after it'
            : 'inside a header block';
    throw new FormatError(`the tar stream ends at ${this.offset}, ${what}; the archive is truncated`, 'TRUNCATED');
  }

  private advance(n: number): void {
    this.offset += n;
  }

  private afterData(at: number): void {
    const pad = (BLOCK - (at % BLOCK)) % BLOCK;
    this.phase = pad ? { kind: 'padding', left: pad } : { kind: 'header' };
  }

  private header(h: Uint8Array, at: number, events: TarEvent[]): void {
    if (this.ended) throw new FormatError('tar data after the end of the archive', 'TRAILING_DATA');
    if (isAllZeroBlock(h)) {
      if (this.extensionRecords > 0)
        throw new FormatError(`the tar archive ends at ${at} right after an extension record with no entry after it`, 'MALFORMED_HEADER');
      this.ended = true;
      this.phase = { kind: 'trailer' };
      events.push({ kind: 'end' });
      return;
    }
    const block = decodeTarHeader(h, at);
    if (TAR_EXTENSION_TYPES.includes(block.typeflag)) {
      this.firstExtensionAt ??= at;
      if (++this.extensionRecords > this.limits.maxExtensionRecords) {
        throw new FormatError(
          `more than ${this.limits.maxExtensionRecords} extension records (pax or GNU long names) before one tar entry at ${at}`,
          'OVER_LIMIT',
        );
      }
      if (block.size > this.limits.maxExtensionBytes) {
        throw new FormatError(
          `tar '${block.typeflag}' record at ${at} declares ${block.size} bytes, over the ${this.limits.maxExtensionBytes}-byte limit`,
          'OVER_LIMIT',
        );
      }
      if (this.held.length < Math.max(BLOCK, block.size)) {
        const bigger = new Uint8Array(Math.max(BLOCK, block.size));
        this.held = bigger;
      }
      if (block.size === 0) this.extension({ kind: 'extension', typeflag: block.typeflag, size: 0, at }, new Uint8Array(0));
      else this.phase = { kind: 'extension', typeflag: block.typeflag, size: block.size, at };
      return;
    }
    // GNU tar and Go's archive/tar disagree on which wins when both a GNU long name and a pax
    // path are given: two names for one entry are refused, not resolved
    if (this.longName !== undefined && this.pax.path !== undefined && this.longName !== this.pax.path) {
      throw new FormatError(
        `tar entry at ${at} has two names: ${JSON.stringify(this.longName)} (GNU long name) and ${JSON.stringify(this.pax.path)} (pax path)`,
        'MALFORMED_HEADER',
      );
    }
    if (this.longLink !== undefined && this.pax.linkpath !== undefined && this.longLink !== this.pax.linkpath) {
      throw new FormatError(`tar entry at ${at} has two link names (GNU long link name and pax linkpath)`, 'MALFORMED_HEADER');
    }
    let size = block.size;
    if (this.pax.size !== undefined) size = Number(this.pax.size);
    if (!Number.isSafeInteger(size)) throw new FormatError(`tar entry size at ${at} is out of range`, 'FIELD_OUT_OF_RANGE');
    const entry: TarEntry = {
      name: this.pax.path ?? this.longName ?? block.name,
      type: TYPES[block.typeflag] ?? 'other',
      typeflag: block.typeflag,
      size,
      headerOffset: this.firstExtensionAt ?? at,
      dataOffset: at + BLOCK,
    };
    const link = this.pax.linkpath ?? this.longLink ?? block.linkName;
    if (link) entry.linkName = link;
    this.longName = undefined;
    this.longLink = undefined;
    this.pax = {};
    this.extensionRecords = 0;
    this.firstExtensionAt = undefined;
    this.entries++;
    events.push({ kind: 'entry', entry });
    if (size > 0) this.phase = { kind: 'data', left: size };
    else this.phase = { kind: 'header' };
  }

  private extension(p: Extract<Phase, { kind: 'extension' }>, body: Uint8Array): void {
    const at = p.at;
    if (p.typeflag === 'L' || p.typeflag === 'K') {
      const name = strictCString(body, `GNU long ${p.typeflag === 'L' ? 'name' : 'link name'} at ${at}`);
      if (p.typeflag === 'L') this.longName = name;
      else this.longLink = name;
    } else {
      const records = strictPaxRecords(body, at);
      for (const [k, v] of Object.entries(records)) {
        // a sparse entry's bytes are a map plus the data without its holes: what Go's archive/tar
        // (KubeVirt, CDI) expands is not what a reader that ignores the map sees; refused
        if (k.startsWith('GNU.sparse.'))
          throw new FormatError(`tar entry at ${at} is a GNU sparse file (pax ${k}); sparse entries are not accepted`, 'MALFORMED_HEADER');
        if ((k === 'path' || k === 'linkpath') && v.includes('\0')) throw new FormatError(`pax ${k} at ${at} holds a NUL byte`, 'MALFORMED_HEADER');
        if (k === 'size' && !/^\d{1,16}$/.test(v))
          throw new FormatError(`pax size at ${at} is not a decimal number (${JSON.stringify(v.slice(0, 40))})`, 'MALFORMED_HEADER');
      }
      if (p.typeflag === 'g') {
        // a global header that renames or resizes every entry after it: readers disagree on it
        const bad = ['path', 'linkpath', 'size'].filter((k) => records[k] !== undefined);
        if (bad.length > 0) throw new FormatError(`pax global header at ${at} sets ${bad.join(', ')} for every entry after it; refused`, 'MALFORMED_HEADER');
      } else {
        this.pax = { ...this.pax, ...records };
      }
    }
    const end = at + BLOCK + p.size;
    const pad = (BLOCK - (end % BLOCK)) % BLOCK;
    this.phase = pad ? { kind: 'padding', left: pad } : { kind: 'header' };
  }
}

function isAllZeroBlock(h: Uint8Array): boolean {
  for (let i = 0; i < BLOCK; i++) if (h[i] !== 0) return false;
  return true;
}

/** A NUL-terminated name whose bytes after the first NUL are all NUL (no second name hidden there). */
function strictCString(b: Uint8Array, what: string): string {
  const end = b.indexOf(0);
  if (end >= 0) {
    for (let i = end; i < b.length; i++) if (b[i] !== 0) throw new FormatError(`${what} holds bytes after a NUL`, 'MALFORMED_HEADER');
  }
  return new TextDecoder().decode(end < 0 ? b : b.subarray(0, end));
}

/** pax extended header records, strictly: every "LEN key=value\n" must be exactly LEN bytes. */
export function strictPaxRecords(body: Uint8Array, at: number): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  while (i < body.length) {
    if (body[i] === 0 && body.subarray(i).every((x) => x === 0)) break; // NUL padding some writers leave
    const sp = body.indexOf(0x20, i);
    const lenText = sp < 0 ? '' : latin1(body.subarray(i, sp));
    if (!/^[1-9]\d{0,5}$/.test(lenText)) throw new FormatError(`pax record at ${at}+${i} has no valid length`, 'MALFORMED_HEADER');
    const len = Number(lenText);
    if (i + len > body.length || body[i + len - 1] !== 0x0a)
      throw new FormatError(`pax record at ${at}+${i} says ${len} bytes but does not end there`, 'MALFORMED_HEADER');
    const rec = new TextDecoder().decode(body.subarray(sp + 1, i + len - 1));
    const eq = rec.indexOf('=');
    if (eq <= 0) throw new FormatError(`pax record at ${at}+${i} is not key=value`, 'MALFORMED_HEADER');
    const key = rec.slice(0, eq);
    // readers differ on which of two values wins
    if (Object.hasOwn(out, key)) throw new FormatError(`pax header at ${at} sets ${JSON.stringify(key)} twice`, 'MALFORMED_HEADER');
    out[key] = rec.slice(eq + 1);
    i += len;
  }
  return out;
}

export interface UstarFields {
  name: string;
  /** '0' file, '5' directory, 'x' pax record */
  typeflag: '0' | '5' | 'x';
  size: number;
  mode: number;
  uid: number;
  gid: number;
  /** seconds since the epoch */
  mtime: number;
}

/**
 * One POSIX ustar header block ("ustar\0" "00"). Fields are written as GNU tar and Go's archive/tar
 * write them: octal, zero-padded, NUL-terminated; the checksum as six octal digits, NUL, space.
 * `size` must fit the 11 octal digits (< 8 GiB); a larger entry is preceded by a pax `size` record.
 */
export function ustarHeader(f: UstarFields): Uint8Array {
  const h = new Uint8Array(BLOCK);
  const name = new TextEncoder().encode(f.name);
  if (name.length > 100) throw new RangeError(`tar name ${JSON.stringify(f.name)} is over 100 bytes`);
  h.set(name, 0);
  const octal = (v: number, at: number, width: number) => {
    const s = v.toString(8).padStart(width - 1, '0');
    if (s.length > width - 1) throw new RangeError(`tar field value ${v} does not fit ${width - 1} octal digits`);
    for (let i = 0; i < s.length; i++) h[at + i] = s.charCodeAt(i);
  };
  octal(f.mode, 100, 8);
  octal(f.uid, 108, 8);
  octal(f.gid, 116, 8);
  octal(f.typeflag === 'x' || f.size < MAX_OCTAL_SIZE ? f.size : 0, 124, 12);
  octal(f.mtime, 136, 12);
  h[156] = f.typeflag.charCodeAt(0);
  h.set([0x75, 0x73, 0x74, 0x61, 0x72, 0x00, 0x30, 0x30], 257); // "ustar\0" "00"
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += h[i]!;
  const c = sum.toString(8).padStart(6, '0');
  for (let i = 0; i < 6; i++) h[148 + i] = c.charCodeAt(i);
  h[154] = 0;
  h[155] = 0x20;
  return h;
}

/** Sizes from this one up do not fit the ustar size field (11 octal digits). */
export const MAX_OCTAL_SIZE = 8 ** 11;

/** A pax record "LEN key=value\n" (LEN counts itself). */
export function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  const bytes = new TextEncoder().encode(body).length;
  let len = bytes + String(bytes).length;
  if (String(len).length !== String(bytes).length) len = bytes + String(len).length;
  return `${len}${body}`;
}

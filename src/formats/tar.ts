/**
 * POSIX ustar / GNU tar headers (the container of an OVA).
 *
 * Spec: POSIX.1-2017 pax "ustar Interchange Format"; GNU tar manual §"Basic Tar Format" for the
 * 'L' long-name record and base-256 sizes; pax 'x' records for `path=`.
 *
 * | offset | size | field |
 * |--------|------|-------|
 * | 0   | 100 | name |
 * | 100 | 8   | mode (octal) |
 * | 124 | 12  | size (octal, or base-256 when the first byte has bit 7 set) |
 * | 148 | 8   | checksum: sum of the header bytes with this field read as spaces |
 * | 156 | 1   | type: '0'/NUL/'7' file, '1' hard link, '2' symlink, '3' char, '4' block, '5' dir, '6' fifo, 'x' pax, 'g' global pax, 'L' GNU long name, 'K' GNU long link name |
 * | 157 | 100 | link name |
 * | 257 | 6   | magic "ustar" (NUL or space) |
 * | 345 | 155 | prefix (ustar) |
 *
 * Each header is one 512-byte read; member data is skipped (the next header sits at the next
 * 512-aligned offset after the data), so a walk costs O(members), not O(archive). A pax 'x' record
 * may override the next member's `path`, `linkpath` and `size` (members over 8 GiB).
 * Errors: a bad checksum or a size that is not a number is OVA_MALFORMED; an archive cut inside a
 * member or a header is TRUNCATED; more members than allowed stops the walk (`truncated`).
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

function parseSize(b: Uint8Array): number {
  if (b[0]! & 0x80) {
    let v = 0n;
    for (let i = 1; i < b.length; i++) v = (v << 8n) | BigInt(b[i]!);
    if (b[0]! & 0x40 || v > BigInt(Number.MAX_SAFE_INTEGER)) throw new FormatError('tar member size is out of range', 'FIELD_OUT_OF_RANGE');
    return Number(v);
  }
  const n = parseOctal(b);
  if (n === undefined) throw new FormatError('tar member size is not an octal number', 'OVA_MALFORMED');
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
    if (!checksumOk(h)) throw new FormatError(`tar header at ${at} has a bad checksum; the archive is damaged or not a tar`, 'OVA_MALFORMED');
    const typeflag = String.fromCharCode(h[156]!);
    let size = parseSize(h.subarray(124, 136));
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
    const prefix = cString(h.subarray(345, 500));
    const baseName = cString(h.subarray(0, 100));
    const name = pax.path ?? longName ?? (prefix ? `${prefix}/${baseName}` : baseName);
    const m: TarMember = { name, type: TYPES[typeflag] ?? 'other', typeflag, size, headerOffset: at, dataOffset };
    const link = pax.linkpath ?? longLink ?? cString(h.subarray(157, 257));
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

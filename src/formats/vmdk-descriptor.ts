/**
 * The VMDK text descriptor: the part of a VMDK that names files, and so the part attackers write
 * (CVE-2022-47951 pointed an extent at /etc/passwd).
 *
 * Spec: "Virtual Disk Format 5.0" §"The Descriptor File" (header keys, extent descriptions,
 * disk database); qemu block/vmdk.c (vmdk_parse_description, vmdk_parse_extents,
 * vmdk_parent_open). The descriptor is ASCII lines:
 *
 * | line | meaning |
 * |------|---------|
 * | `# ...`, blank | comment |
 * | `version=1` | descriptor version (1..3) |
 * | `CID=hex`, `parentCID=hex` (up to 8 digits; qemu does not zero-pad) | content id; parentCID `ffffffff` = no parent |
 * | `createType="monolithicSparse"` | how the disk is split into files (the subformat) |
 * | `parentFileNameHint="base.vmdk"` | the parent's file name (delta disks) |
 * | `ACCESS SECTORS TYPE ["FILE" [OFFSET]]` | one extent: RW / RDONLY / NOACCESS, its size in 512-byte sectors, FLAT / SPARSE / ZERO / VMFS / VMFSSPARSE / VMFSRDM / VMFSRAW / SESPARSE, the file holding it, the sector offset inside a FLAT file |
 * | `ddb.key = "value"` | disk database: adapterType, geometry.*, virtualHWVersion, uuid, ... |
 *
 * We parse strictly (a line that is neither is malformed) and we also compute what qemu sees:
 * qemu finds `createType` and `parentFileNameHint` with strstr() anywhere in the text (even
 * inside a comment), so a descriptor whose first occurrence disagrees with its key line means two
 * different things to two readers — we call that malformed.
 *
 * Limits (ours): at most MAX_EXTENT_LINES extent lines; file names up to 511 bytes (qemu's buffer).
 */

export const EXTENT_TYPES = ['FLAT', 'SPARSE', 'ZERO', 'VMFS', 'VMFSSPARSE', 'VMFSRDM', 'VMFSRAW', 'SESPARSE'] as const;
export const EXTENT_ACCESS = ['RW', 'RDONLY', 'NOACCESS'] as const;
/** Extent lines we accept in one descriptor (a monolithic disk has 1; twoGbMaxExtent* of 2 TiB has 1024). */
export const MAX_EXTENT_LINES = 1024;
/** qemu reads file names into a 512-byte buffer (`%511[^\n\r"]`). */
const MAX_FILE_NAME = 511;

export interface VmdkExtent {
  access: string;
  sectors: number;
  type: string;
  file?: string;
  /** sector offset inside a FLAT extent file */
  offset?: number;
}

export interface ParsedDescriptor {
  /** header keys other than ddb.*, values unquoted */
  keys: Record<string, string>;
  extents: VmdkExtent[];
  /** extent lines seen (can exceed MAX_EXTENT_LINES; `extents` keeps the first ones) */
  extentLines: number;
  /** ddb.* keys without the prefix */
  ddb: Record<string, string>;
  /** lines that are neither a comment, a key nor a well-formed extent line (first 200 chars each, at most 16) */
  malformed: string[];
  /** what qemu's strstr() finds for createType / parentFileNameHint, when present */
  qemuCreateType?: string;
  qemuParentFileNameHint?: string;
}

const EXTENT_LINE = /^(\S+)\s+(\d+)\s+(\S+)(?:\s+"([^"\r\n]*)"(?:\s+(\d+))?)?$/;
const KEY_LINE = /^([A-Za-z][A-Za-z0-9_.]*)\s*=\s*(.*)$/;

function unquote(v: string): string {
  const t = v.trim();
  return t.length >= 2 && t.startsWith('"') && t.endsWith('"') ? t.slice(1, -1) : t;
}

/** The value qemu reads for `name`: first occurrence anywhere, skip `="`, up to the next quote. */
export function qemuValue(text: string, name: string): string | undefined {
  const at = text.indexOf(name);
  if (at < 0) return undefined;
  const from = at + name.length + 2;
  const end = text.indexOf('"', from);
  if (from > text.length || end < 0) return undefined;
  return text.slice(from, end);
}

export function parseDescriptor(text: string): ParsedDescriptor {
  const out: ParsedDescriptor = { keys: {}, extents: [], extentLines: 0, ddb: {}, malformed: [] };
  const bad = (line: string) => {
    if (out.malformed.length < 16) out.malformed.push(line.slice(0, 200));
  };
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '').trim();
    if (line === '' || line.startsWith('#')) continue;
    const first = /^\S+/.exec(line)![0];
    // qemu takes any line whose first word is an access mode as an extent (sscanf, trailing text
    // ignored): so do we, and a line that is not exactly `ACCESS SECTORS TYPE ["FILE" [OFFSET]]`
    // is malformed — but its file name is still recorded so the extent rules judge it.
    if ((EXTENT_ACCESS as readonly string[]).includes(first)) {
      out.extentLines++;
      const m = EXTENT_LINE.exec(line);
      const e: VmdkExtent = m ? { access: m[1]!, sectors: Number(m[2]), type: m[3]! } : { access: first, sectors: 0, type: line.split(/\s+/)[2] ?? '' };
      const file = m ? m[4] : /"([^"\r\n]*)"/.exec(line)?.[1];
      if (file !== undefined) e.file = file;
      if (m?.[5] !== undefined) e.offset = Number(m[5]);
      const wellFormed =
        m !== null &&
        (EXTENT_TYPES as readonly string[]).includes(e.type) &&
        Number.isSafeInteger(e.sectors) &&
        (e.offset === undefined || Number.isSafeInteger(e.offset)) &&
        (e.file === undefined || e.file.length <= MAX_FILE_NAME) &&
        // ZERO extents read no file; every other type names one
        (e.type === 'ZERO') === (e.file === undefined) &&
        // only FLAT (and VMFS raw-ish types) carry an offset
        (e.offset === undefined || e.type === 'FLAT');
      if (!wellFormed) bad(line);
      if (out.extents.length < MAX_EXTENT_LINES) out.extents.push(e);
      continue;
    }
    const kv = KEY_LINE.exec(line);
    if (!kv) {
      bad(line);
      continue;
    }
    const key = kv[1]!;
    const value = unquote(kv[2]!);
    const table = key.startsWith('ddb.') ? out.ddb : out.keys;
    const name = key.startsWith('ddb.') ? key.slice(4) : key;
    // a key given twice means two readers may take two different values
    if (Object.hasOwn(table, name)) bad(line);
    table[name] = value;
  }
  const ct = qemuValue(text, 'createType');
  if (ct !== undefined) out.qemuCreateType = ct;
  const hint = qemuValue(text, 'parentFileNameHint');
  if (hint !== undefined) out.qemuParentFileNameHint = hint;
  return out;
}

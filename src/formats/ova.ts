/**
 * OVA — an OVF package in one tar archive (DMTF DSP0243 "Open Virtualization Format" 2.1 §5):
 * the .ovf descriptor first, then the files it references (disks), an optional .mf manifest
 * (`SHA256(file)= hex`, also SHA1/SHA512) and .cert.
 *
 * What is read: every tar header (tar.ts), the .ovf (References/File href+size,
 * DiskSection/Disk capacity+units+fileRef+format), the .mf; every manifest digest is checked
 * against the member's bytes (digestRange: hashed as they stream by, or read in chunks), and each
 * referenced disk member is inspected by its own format's rules through a window onto the archive
 * (a hostile VMDK inside an OVA refuses the OVA).
 *
 * Why: a tar member named `../x`, `/etc/x`, or a link can write or read outside the directory it
 * is unpacked into; a manifest that does not match means the package was altered.
 */
import { digestRange, readExact, type ByteSource, type DigestAlgorithm } from './byte-source.js';
import { finding, type Finding } from './findings.js';
import { describeFormat, type InspectContext, type SafetyRule } from './format.js';
import { BLOCK, isUstarHeader, readTarMembers, type TarMember } from './tar.js';
import { vmdkFormat } from './vmdk.js';

export interface OvfDisk {
  diskId?: string;
  fileRef?: string;
  file?: string;
  capacityBytes?: number;
  format?: string;
  inner?: { format: string; subformat?: string; virtualSize?: number; verdict: 'safe' | 'refused' };
}

export interface OvaDetails {
  members: { name: string; type: string; size: number }[];
  ovf?: string;
  manifest?: string;
  references: { id: string; href: string; size?: number; present: boolean }[];
  disks: OvfDisk[];
  manifestEntries: { algorithm: string; file: string; ok?: boolean }[];
  unsafeMembers: { name: string; why: string }[];
}

const ALGORITHMS: Record<string, DigestAlgorithm> = { SHA1: 'sha1', SHA256: 'sha256', SHA512: 'sha512' };
const UNITS: Record<string, bigint> = { byte: 1n, 'byte * 2^10': 1024n, 'byte * 2^20': 1024n ** 2n, 'byte * 2^30': 1024n ** 3n, 'byte * 2^40': 1024n ** 4n };

/** A window [offset, offset + length) of another source, seen as a whole image. */
class SliceSource implements ByteSource {
  constructor(
    private readonly inner: ByteSource,
    private readonly offset: number,
    readonly size: number,
  ) {}
  async read(offset: number, length: number): Promise<Uint8Array> {
    if (offset >= this.size) return new Uint8Array(0);
    return this.inner.read(this.offset + offset, Math.min(length, this.size - offset));
  }
  digest(offset: number, length: number, algorithm: DigestAlgorithm): Promise<string> {
    return digestRange(this.inner, this.offset + offset, length, algorithm);
  }
}

function attr(tag: string, name: string): string | undefined {
  const m = new RegExp(`(?:\\w+:)?${name}\\s*=\\s*"([^"]*)"`).exec(tag);
  return m?.[1];
}

function unsafeWhy(m: TarMember): string | undefined {
  if (m.name.startsWith('/') || /^[A-Za-z]:[\\/]/.test(m.name)) return 'absolute path';
  if (m.name.split(/[\\/]/).includes('..')) return 'path with ".."';
  if (m.type === 'symlink' || m.type === 'hardlink') return `${m.type} to ${JSON.stringify(m.linkName ?? '')}`;
  if (m.type === 'chardev' || m.type === 'blockdev' || m.type === 'fifo') return `${m.type} member`;
  return undefined;
}

async function inspect(src: ByteSource, ctx: InspectContext) {
  const findings: Finding[] = [];
  // A source that hashes as bytes stream by (the stream inspector) cannot go back for a member once
  // it has passed, and the manifest usually comes last: ask for the digests manifests use (SHA256,
  // SHA1) of each member as its header is met. A random-access source hashes only what the manifest names.
  const eager = src.digest !== undefined;
  const { members, truncated } = await readTarMembers(src, ctx.limits.maxOvaMembers, 64 * 1024, async (m) => {
    if (!eager || m.type !== 'file' || m.name.toLowerCase().endsWith('.mf')) return;
    await digestRange(src, m.dataOffset, m.size, 'sha256');
    await digestRange(src, m.dataOffset, m.size, 'sha1');
  });
  if (truncated) findings.push(finding('OVER_LIMIT', `the OVA has more than ${ctx.limits.maxOvaMembers} members; OVF packages hold a handful`));
  const details: OvaDetails = {
    members: members.map((m) => ({ name: m.name, type: m.type, size: m.size })),
    references: [],
    disks: [],
    manifestEntries: [],
    unsafeMembers: [],
  };
  for (const m of members) {
    const why = unsafeWhy(m);
    if (why) details.unsafeMembers.push({ name: m.name, why });
  }
  const byName = new Map(members.filter((m) => m.type === 'file').map((m) => [m.name.replace(/^\.\//, ''), m]));
  const ovf = members.find((m) => m.type === 'file' && m.name.toLowerCase().endsWith('.ovf'));
  if (!ovf) {
    findings.push(finding('OVA_MALFORMED', 'the OVA has no .ovf descriptor; an OVA is a tar whose first member is the OVF descriptor'));
    return { virtualSize: undefined, details, findings };
  }
  details.ovf = ovf.name;
  if (members[0] !== ovf) findings.push(finding('OVA_MALFORMED', `the .ovf descriptor must be the first member of the OVA (DSP0243 §5.3), found ${JSON.stringify(members[0]!.name)}`));
  if (ovf.size > ctx.limits.maxDescriptorBytes) {
    findings.push(finding('OVER_LIMIT', `OVF descriptor of ${ovf.size} bytes is over the ${ctx.limits.maxDescriptorBytes}-byte limit`));
    return { virtualSize: undefined, details, findings };
  }
  const xml = new TextDecoder().decode(await readExact(src, ovf.dataOffset, ovf.size, 'OVF descriptor'));
  for (const tag of xml.match(/<(?:\w+:)?File\b[^>]*>/g) ?? []) {
    const id = attr(tag, 'id') ?? '';
    const href = attr(tag, 'href') ?? '';
    const size = attr(tag, 'size');
    details.references.push({ id, href, size: size === undefined ? undefined : Number(size), present: byName.has(href) });
  }
  for (const tag of xml.match(/<(?:\w+:)?Disk\b[^>]*>/g) ?? []) {
    const d: OvfDisk = {};
    const diskId = attr(tag, 'diskId');
    const fileRef = attr(tag, 'fileRef');
    const format = attr(tag, 'format');
    if (diskId) d.diskId = diskId;
    if (fileRef) d.fileRef = fileRef;
    if (format) d.format = format;
    const capacity = attr(tag, 'capacity');
    const units = (attr(tag, 'capacityAllocationUnits') ?? 'byte').replace(/\s+/g, ' ').trim();
    if (capacity && /^\d+$/.test(capacity)) d.capacityBytes = Number(BigInt(capacity) * (UNITS[units] ?? 1n));
    const ref = details.references.find((r) => r.id === fileRef);
    if (ref) d.file = ref.href;
    details.disks.push(d);
  }
  for (const r of details.references) {
    if (!r.present) findings.push(finding('OVA_MALFORMED', `the OVF references ${JSON.stringify(r.href)}, which is not in the OVA; repackage it with every referenced file`));
  }
  // manifest: digests checked against the members' bytes
  const mf = members.find((m) => m.type === 'file' && m.name.toLowerCase().endsWith('.mf'));
  if (mf) {
    details.manifest = mf.name;
    if (mf.size > ctx.limits.maxDescriptorBytes) findings.push(finding('OVER_LIMIT', `manifest of ${mf.size} bytes is over the limit`));
    else {
      const text = new TextDecoder().decode(await readExact(src, mf.dataOffset, mf.size, 'OVA manifest'));
      for (const line of text.split(/\r?\n/)) {
        const m = /^\s*(SHA1|SHA256|SHA512)\s*\(([^)]+)\)\s*=\s*([0-9a-fA-F]+)\s*$/.exec(line);
        if (!m) continue;
        const member = byName.get(m[2]!);
        const entry: OvaDetails['manifestEntries'][number] = { algorithm: m[1]!, file: m[2]! };
        if (!member) {
          findings.push(finding('OVA_MALFORMED', `the manifest lists ${JSON.stringify(m[2])}, which is not in the OVA`));
        } else {
          const got = await digestRange(src, member.dataOffset, member.size, ALGORITHMS[m[1]!]!);
          entry.ok = got === m[3]!.toLowerCase();
          if (!entry.ok) {
            findings.push(finding('OVA_DIGEST_MISMATCH', `${m[1]} of ${JSON.stringify(m[2])} in the OVA is ${got}, the manifest says ${m[3]!.toLowerCase()}; the package was altered or damaged — download it again`));
          }
        }
        details.manifestEntries.push(entry);
      }
    }
  }
  // each referenced disk is inspected under its own format's rules
  let virtualSize = 0n;
  let sized = false;
  for (const d of details.disks) {
    const member = d.file ? byName.get(d.file) : undefined;
    if (member && (await vmdkFormat.probe(new SliceSource(src, member.dataOffset, member.size)))) {
      const slice = new SliceSource(src, member.dataOffset, member.size);
      try {
        const ins = await vmdkFormat.inspect(slice, ctx);
        const inner = [...ins.findings];
        for (const rule of vmdkFormat.checks) inner.push(...rule.run(ins, ctx));
        for (const f of inner) findings.push({ ...f, message: `${d.file}: ${f.message}` });
        d.inner = { format: 'vmdk', verdict: inner.some((f) => f.severity === 'error') ? 'refused' : 'safe' };
        if (ins.subformat) d.inner.subformat = ins.subformat;
        if (ins.virtualSize !== undefined) d.inner.virtualSize = Number(ins.virtualSize);
        if (d.capacityBytes === undefined && ins.virtualSize !== undefined) d.capacityBytes = Number(ins.virtualSize);
      } catch (e) {
        findings.push(finding('OVA_MALFORMED', `${d.file}: the disk could not be read (${(e as Error).message})`));
      }
    }
    if (d.capacityBytes !== undefined) {
      virtualSize += BigInt(d.capacityBytes);
      sized = true;
    }
  }
  return { subformat: 'ovf', virtualSize: sized ? virtualSize : undefined, details, findings };
}

const checks: SafetyRule<OvaDetails>[] = [
  {
    code: 'OVA_UNSAFE_MEMBER',
    description: 'members that unpack outside their directory or are links/devices',
    run: ({ details: d }) =>
      d.unsafeMembers.map((m) =>
        finding('OVA_UNSAFE_MEMBER', `OVA member ${JSON.stringify(m.name)} is unsafe (${m.why}); an OVA holds only plain files with relative names — repackage it`),
      ),
  },
];

export const ovaFormat = describeFormat<OvaDetails>({
  name: 'ova',
  description: 'OVA: OVF descriptor + disks + manifest in a tar archive',
  async probe(src) {
    const h = await src.read(0, BLOCK);
    if (!isUstarHeader(h)) return false;
    const name = new TextDecoder().decode(h.subarray(0, 100)).replace(/\0.*$/s, '');
    if (name.toLowerCase().endsWith('.ovf')) return true;
    // a GNU long-name or pax record first: accept when the archive's first real member is an .ovf
    try {
      const { members } = await readTarMembers(src, 1, 64 * 1024);
      return members[0]?.name.toLowerCase().endsWith('.ovf') ?? false;
    } catch {
      return false;
    }
  },
  inspect,
  checks,
});

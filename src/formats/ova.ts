/**
 * OVA — an OVF package in one file: a POSIX (ustar) tar whose first member is the OVF descriptor,
 * followed by the files it references (disks, usually streamOptimized VMDK), an optional manifest
 * (.mf) and an optional certificate (.cert).
 *
 * Spec: DMTF DSP0243 "Open Virtualization Format Specification" 2.x, §5.3 (OVA: tar, descriptor
 * first, manifest and certificate next, then the files in References order), §5.1 (manifest lines
 * `SHA256(file)= hex`, also SHA1 and SHA512), §7 (References/File ovf:id, ovf:href, ovf:size),
 * §9.1 (DiskSection/Disk ovf:diskId, ovf:fileRef, ovf:capacity, ovf:capacityAllocationUnits
 * "byte * 2^N", ovf:format URI). Tar headers: see tar.ts.
 *
 * What we read, in ascending offset order in one walk (a stream passes each member once):
 * | where | what |
 * |-------|------|
 * | each tar header (512 bytes) | name, type, size (tar.ts) |
 * | member 0 data | the OVF descriptor (≤ limits.maxDescriptorBytes), scanned for File and Disk elements |
 * | `*.mf` data | manifest lines (≤ limits.maxDescriptorBytes) |
 * | each member referenced as a disk | its header, descriptor and tail, through the VMDK inspector on a window (SliceSource) |
 * | every member's bytes | a digest, only when a manifest asks for it (hashed as the bytes pass when streamed) |
 *
 * Digests: a random-access source is hashed after the walk, only for what the manifest lists. A
 * source that hashes as bytes pass (the stream inspector, `src.digest`) cannot go back: when the
 * manifest came first we ask for exactly its algorithms, else (the usual order puts it last) we ask
 * for SHA256 and SHA1 of every non-empty member as its header is met. A SHA512 manifest after its
 * members, streamed, is therefore not verifiable: that is reported (INSPECTION_INCOMPLETE), never
 * passed.
 *
 * Invariants: the OVF is member 0; members are plain files (or directories) with relative names
 * without `..`; every referenced file is in the archive; every manifest digest matches; every disk
 * is a VMDK that passes the VMDK rules (a hostile VMDK inside refuses the OVA). virtualSize is the
 * sum of the disks' OVF capacities (the disk's own size when the OVF gives none). qemu-img sees an
 * OVA as raw; there is no oracle for it but the OVF itself.
 *
 * Limits (ours): limits.maxOvaMembers members; pax / GNU long-name records ≤ 64 KiB; OVF and
 * manifest ≤ limits.maxDescriptorBytes.
 */
import { FormatError, NeedBytes, NeedDigest, checkRange, digestRange, readExact, type ByteSource, type DigestAlgorithm } from './byte-source.js';
import { finding, isFindingCode, type Finding } from './findings.js';
import { describeFormat, type InspectContext, type SafetyRule } from './format.js';
import { BLOCK, isUstarHeader, readTarMembers, type TarMember } from './tar.js';
import { vmdkFormat } from './vmdk.js';

const MAX_RECORD_BYTES = 64 * 1024;
const ALGORITHMS: Record<string, DigestAlgorithm> = { SHA1: 'sha1', SHA256: 'sha256', SHA512: 'sha512' };
/** what we hash eagerly when streaming and the manifest has not been seen yet */
const EAGER_ALGORITHMS = ['SHA256', 'SHA1'] as const;

export interface OvaDisk {
  diskId?: string;
  fileRef?: string;
  /** the member holding the disk (the File's href) */
  file?: string;
  capacityBytes?: number;
  format?: string;
  /** what the disk inside is, by our own inspection */
  inner?: { format: string; subformat?: string; virtualSize?: number; verdict: 'safe' | 'refused' };
}

export interface OvaDetails {
  members: { name: string; type: string; size: number }[];
  ovf?: string;
  manifest?: string;
  certificate?: string;
  references: { id: string; href: string; size?: number; compression?: string; present: boolean }[];
  disks: OvaDisk[];
  manifestEntries: { algorithm: string; file: string; ok?: boolean }[];
  unsafeMembers: { name: string; why: string }[];
}

/** A window [offset, offset + size) of another source, seen as a whole image (a member of the tar). */
export class SliceSource implements ByteSource {
  constructor(
    private readonly inner: ByteSource,
    private readonly offset: number,
    readonly size: number,
  ) {}
  async read(offset: number, length: number): Promise<Uint8Array> {
    checkRange(offset, length);
    if (offset >= this.size) return new Uint8Array(0);
    return this.inner.read(this.offset + offset, Math.min(length, this.size - offset));
  }
  digest(offset: number, length: number, algorithm: DigestAlgorithm): Promise<string> {
    return digestRange(this.inner, this.offset + offset, length, algorithm);
  }
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

/** An attribute of one XML start tag, any namespace prefix, entities decoded. */
function attr(tag: string, name: string): string | undefined {
  const m = new RegExp(`\\s(?:[\\w.-]+:)?${name}\\s*=\\s*(?:"([^"]*)"|'([^']*)')`).exec(tag);
  const v = m?.[1] ?? m?.[2];
  return v?.replace(/&(amp|lt|gt|quot|apos);/g, (_, e: string) => ENTITIES[e]!);
}

/** ovf:capacityAllocationUnits: "byte", "byte * 2^30", "byte * 1024" (DSP0004 programmatic units). */
function unitFactor(units: string): bigint | undefined {
  const m = /^byte(?:\s*\*\s*(\d+)(?:\s*\^\s*(\d+))?)?$/.exec(units.trim());
  if (!m) return undefined;
  if (m[1] === undefined) return 1n;
  const exp = m[2] === undefined ? 1n : BigInt(m[2]);
  return exp > 64n ? undefined : BigInt(m[1]) ** exp;
}

function normalName(name: string): string {
  return name.replace(/^(\.\/)+/, '');
}

function unsafeWhy(m: TarMember): string | undefined {
  const n = m.name;
  if (n.startsWith('/') || n.startsWith('\\') || /^[A-Za-z]:/.test(n)) return 'absolute path';
  if (n.split(/[\\/]/).includes('..')) return 'path with ".."';
  if (m.type === 'symlink' || m.type === 'hardlink') return `${m.type} to ${JSON.stringify(m.linkName ?? '')}`;
  if (m.type === 'chardev' || m.type === 'blockdev' || m.type === 'fifo') return `${m.type} member`;
  if (m.type === 'other') return `tar entry of type ${JSON.stringify(m.typeflag)}`;
  return undefined;
}

interface Ovf {
  references: OvaDetails['references'];
  disks: OvaDisk[];
  findings: Finding[];
}

function parseOvf(xml: string): Ovf {
  const references: OvaDetails['references'] = [];
  const disks: OvaDisk[] = [];
  const findings: Finding[] = [];
  for (const tag of xml.match(/<(?:[\w.-]+:)?File\b[^>]*>/g) ?? []) {
    const size = attr(tag, 'size');
    const r: OvaDetails['references'][number] = { id: attr(tag, 'id') ?? '', href: attr(tag, 'href') ?? '', present: false };
    if (size !== undefined && /^\d+$/.test(size)) r.size = Number(size);
    const compression = attr(tag, 'compression');
    if (compression) r.compression = compression;
    references.push(r);
  }
  for (const tag of xml.match(/<(?:[\w.-]+:)?Disk\b[^>]*>/g) ?? []) {
    const d: OvaDisk = {};
    const diskId = attr(tag, 'diskId');
    const fileRef = attr(tag, 'fileRef');
    const format = attr(tag, 'format');
    if (diskId) d.diskId = diskId;
    if (fileRef) d.fileRef = fileRef;
    if (format) d.format = format;
    const capacity = attr(tag, 'capacity');
    const units = attr(tag, 'capacityAllocationUnits') ?? 'byte';
    const factor = unitFactor(units);
    if (capacity !== undefined && /^\d+$/.test(capacity) && factor !== undefined) {
      const bytes = BigInt(capacity) * factor;
      if (bytes > 0n && bytes <= BigInt(Number.MAX_SAFE_INTEGER)) d.capacityBytes = Number(bytes);
    } else if (capacity !== undefined) {
      findings.push(
        finding(
          'OVA_MALFORMED',
          `OVF disk ${JSON.stringify(diskId ?? '')} has capacity ${JSON.stringify(capacity)} in units ${JSON.stringify(units)}, which we cannot read; its size is taken from the disk itself`,
          'warning',
        ),
      );
    }
    const ref = references.find((r) => r.id === fileRef);
    if (ref) d.file = normalName(ref.href);
    disks.push(d);
  }
  return { references, disks, findings };
}

/** Findings from an inner failure, keeping the stream inspector's signals intact. */
function failure(e: unknown, what: string): Finding {
  if (e instanceof NeedBytes || e instanceof NeedDigest) throw e;
  if (e instanceof FormatError && isFindingCode(e.code)) return finding(e.code, `${what}: ${e.message}`);
  throw e;
}

async function inspect(src: ByteSource, ctx: InspectContext) {
  const findings: Finding[] = [];
  const details: OvaDetails = { members: [], references: [], disks: [], manifestEntries: [], unsafeMembers: [] };
  const eager = src.digest !== undefined;
  let manifest: { algorithm: string; file: string; hex: string }[] | undefined;
  /** digests learned as members passed: "ALG\0name" → hex */
  const digests = new Map<string, string>();
  const inspected = new Set<OvaDisk>();

  const inspectDisk = async (d: OvaDisk, m: TarMember) => {
    inspected.add(d);
    const slice = new SliceSource(src, m.dataOffset, m.size);
    const label = `OVA disk ${JSON.stringify(m.name)}`;
    try {
      if (!(await vmdkFormat.probe(slice))) {
        findings.push(
          finding(
            'OVA_MALFORMED',
            `${label} is not a VMDK${d.format ? ` (the OVF says ${d.format})` : ''}; we accept OVAs whose disks are streamOptimized VMDK — convert the disk and repackage`,
          ),
        );
        return;
      }
      const ins = await vmdkFormat.inspect(slice, ctx);
      const inner = [...ins.findings];
      for (const rule of vmdkFormat.checks) inner.push(...rule.run(ins, ctx));
      for (const f of inner) findings.push({ ...f, message: `${label}: ${f.message}` });
      d.inner = { format: 'vmdk', verdict: inner.some((f) => f.severity === 'error') ? 'refused' : 'safe' };
      if (ins.subformat !== undefined) d.inner.subformat = ins.subformat;
      if (ins.virtualSize !== undefined) d.inner.virtualSize = Number(ins.virtualSize);
    } catch (e) {
      findings.push(failure(e, label));
      d.inner = { format: 'vmdk', verdict: 'refused' };
    }
  };

  const hashMember = async (m: TarMember, algorithms: readonly string[]) => {
    for (const alg of algorithms) {
      const key = `${alg}\0${normalName(m.name)}`;
      if (digests.has(key)) continue;
      try {
        digests.set(key, await digestRange(src, m.dataOffset, m.size, ALGORITHMS[alg]!));
      } catch (e) {
        findings.push(failure(e, `${alg} of OVA member ${JSON.stringify(m.name)}`));
      }
    }
  };

  const onMember = async (m: TarMember, index: number) => {
    if (m.type !== 'file') return;
    const name = normalName(m.name).toLowerCase();
    const isManifest = name.endsWith('.mf') && details.manifest === undefined;
    if (eager && m.size > 0 && !isManifest) {
      // streamed: hash now or never (see the header comment for which algorithms)
      const listed = manifest?.filter((e) => e.file === normalName(m.name)).map((e) => e.algorithm);
      await hashMember(m, listed ?? EAGER_ALGORITHMS);
    }
    if (index === 0 && name.endsWith('.ovf')) {
      details.ovf = m.name;
      if (m.size > ctx.limits.maxDescriptorBytes) {
        findings.push(finding('OVER_LIMIT', `OVF descriptor of ${m.size} bytes is over the ${ctx.limits.maxDescriptorBytes}-byte limit; an OVF is a few KiB`));
        return;
      }
      const ovf = parseOvf(new TextDecoder().decode(await readExact(src, m.dataOffset, m.size, 'OVF descriptor')));
      details.references = ovf.references;
      details.disks = ovf.disks;
      findings.push(...ovf.findings);
      return;
    }
    if (isManifest) {
      details.manifest = m.name;
      if (m.size > ctx.limits.maxDescriptorBytes) {
        findings.push(finding('OVER_LIMIT', `OVA manifest of ${m.size} bytes is over the ${ctx.limits.maxDescriptorBytes}-byte limit`));
        return;
      }
      manifest = [];
      for (const line of new TextDecoder().decode(await readExact(src, m.dataOffset, m.size, 'OVA manifest')).split('\n')) {
        const t = line.replace(/\r$/, '').trim();
        if (t === '') continue;
        const e = /^(SHA1|SHA256|SHA512)\s*\((.+)\)\s*=\s*([0-9a-fA-F]+)$/.exec(t);
        if (!e) {
          findings.push(finding('OVA_MALFORMED', `OVA manifest line ${JSON.stringify(t.slice(0, 120))} is not "SHA256(file)= hex"; regenerate the manifest`));
          continue;
        }
        manifest.push({ algorithm: e[1]!, file: normalName(e[2]!), hex: e[3]!.toLowerCase() });
      }
      return;
    }
    if (name.endsWith('.cert')) {
      details.certificate ??= m.name;
      return;
    }
    for (const d of details.disks) if (d.file === normalName(m.name) && !inspected.has(d)) await inspectDisk(d, m);
  };

  let members: TarMember[] = [];
  try {
    const walk = await readTarMembers(src, ctx.limits.maxOvaMembers, MAX_RECORD_BYTES, onMember);
    members = walk.members;
    if (walk.truncated)
      findings.push(finding('OVER_LIMIT', `the OVA has more than ${ctx.limits.maxOvaMembers} members; an OVF package holds a handful — repackage it`));
  } catch (e) {
    // a damaged tail still leaves facts about what came before: report both
    findings.push(failure(e, 'OVA'));
  }
  details.members = members.map((m) => ({ name: m.name, type: m.type, size: m.size }));
  for (const m of members) {
    const why = unsafeWhy(m);
    if (why) details.unsafeMembers.push({ name: m.name, why });
  }
  const files = new Map(members.filter((m) => m.type === 'file').map((m) => [normalName(m.name), m]));

  if (details.ovf === undefined) {
    const ovf = members.find((m) => normalName(m.name).toLowerCase().endsWith('.ovf'));
    findings.push(
      ovf
        ? finding(
            'OVA_MALFORMED',
            `the OVF descriptor ${JSON.stringify(ovf.name)} must be the first member of the OVA (DSP0243 §5.3), found ${JSON.stringify(members[0]?.name)}; repackage it with the .ovf first`,
          )
        : finding('OVA_MALFORMED', 'the OVA has no .ovf descriptor; an OVA is a tar whose first member is the OVF descriptor — repackage it'),
    );
  }
  for (const r of details.references) {
    const href = normalName(r.href);
    r.present = files.has(href);
    if (!r.present) {
      findings.push(
        finding(
          'OVA_MALFORMED',
          `the OVF references ${JSON.stringify(r.href)}, which is not a file in the OVA (files outside the package are not allowed); repackage it with every referenced file`,
        ),
      );
    } else if (r.size !== undefined && files.get(href)!.size !== r.size) {
      findings.push(
        finding(
          'OVA_MALFORMED',
          `the OVF says ${JSON.stringify(r.href)} is ${r.size} bytes but the OVA member is ${files.get(href)!.size}; the package was altered or damaged`,
        ),
      );
    }
  }
  // disks whose member came before the OVF could be parsed (an OVF not first): random access still reaches them
  for (const d of details.disks) {
    const m = d.file === undefined ? undefined : files.get(d.file);
    if (m && !inspected.has(d)) await inspectDisk(d, m);
  }

  if (manifest) {
    for (const e of manifest) {
      const entry: OvaDetails['manifestEntries'][number] = { algorithm: e.algorithm, file: e.file };
      details.manifestEntries.push(entry);
      const m = files.get(e.file);
      if (!m) {
        findings.push(finding('OVA_MALFORMED', `the manifest lists ${JSON.stringify(e.file)}, which is not in the OVA; the package is incomplete`));
        continue;
      }
      let got = digests.get(`${e.algorithm}\0${e.file}`);
      if (got === undefined) {
        // random access: hash now; streamed: only bytes still held (the head, the tail) can be
        try {
          got = await digestRange(src, m.dataOffset, m.size, ALGORITHMS[e.algorithm]!);
        } catch (err) {
          if (eager && err instanceof FormatError && err.code === 'INSPECTION_INCOMPLETE') {
            findings.push(
              finding(
                'INSPECTION_INCOMPLETE',
                `the manifest's ${e.algorithm} of ${JSON.stringify(e.file)} comes after the file in the stream and we hash only SHA256 and SHA1 as bytes pass; upload the OVA where it can be read at random, or use a SHA256 manifest`,
              ),
            );
          } else findings.push(failure(err, `${e.algorithm} of OVA member ${JSON.stringify(e.file)}`));
          continue;
        }
      }
      entry.ok = got === e.hex;
      if (!entry.ok) {
        findings.push(
          finding(
            'OVA_DIGEST_MISMATCH',
            `${e.algorithm} of ${JSON.stringify(e.file)} in the OVA is ${got}, the manifest says ${e.hex}; the package was altered or damaged — download it again`,
          ),
        );
      }
    }
    const listed = new Set(manifest.map((e) => e.file));
    for (const [name] of files) {
      if (name === normalName(details.manifest!) || name.toLowerCase().endsWith('.cert') || listed.has(name)) continue;
      findings.push(finding('OVA_MALFORMED', `OVA member ${JSON.stringify(name)} is not listed in the manifest, so nothing vouches for it`, 'warning'));
    }
  }

  let virtualSize = 0n;
  for (const d of details.disks) {
    const inner = d.inner?.virtualSize;
    if (d.capacityBytes !== undefined && inner !== undefined && inner !== d.capacityBytes) {
      findings.push(
        finding('OVA_MALFORMED', `OVF capacity of disk ${JSON.stringify(d.file)} is ${d.capacityBytes} bytes but the disk itself is ${inner} bytes`, 'warning'),
      );
    }
    const size = d.capacityBytes ?? inner;
    if (size !== undefined) virtualSize += BigInt(size);
  }
  return { subformat: 'ovf', virtualSize: virtualSize > 0n ? virtualSize : undefined, details, findings };
}

const checks: SafetyRule<OvaDetails>[] = [
  {
    code: 'OVA_UNSAFE_MEMBER',
    description: 'members that unpack outside their directory, or links and devices',
    run: ({ details: d }) =>
      d.unsafeMembers.map((m) =>
        finding(
          'OVA_UNSAFE_MEMBER',
          `OVA member ${JSON.stringify(m.name)} is unsafe (${m.why}); an OVA holds only plain files with relative names — repackage it`,
        ),
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
    if (normalName(name).toLowerCase().endsWith('.ovf')) return true;
    if (!'xLg'.includes(String.fromCharCode(h[156]!))) return false;
    // a pax or GNU long-name record first: the archive's first real member must be the .ovf
    try {
      const { members } = await readTarMembers(src, 1, MAX_RECORD_BYTES);
      return members[0] !== undefined && normalName(members[0].name).toLowerCase().endsWith('.ovf');
    } catch (e) {
      if (e instanceof FormatError) return false;
      throw e;
    }
  },
  inspect,
  checks,
});

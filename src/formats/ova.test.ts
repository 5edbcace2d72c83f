/**
 * OVA: packages built at test time with GNU tar (--format=ustar) from an OVF we write, a
 * streamOptimized VMDK made by qemu-img and a manifest with real digests; hostile ones with
 * members named `../evil` and `/etc/x`, a symlink, a wrong digest, no OVF, a hostile VMDK inside.
 *
 * There is no qemu oracle for OVA: qemu-img sees the tar as raw (virtual size = file size), which
 * one test shows; our virtual size is compared with the capacity the OVF declares instead.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { cached, fixturePath, patternedRaw, qemuConvert, qemuCreate, qemuInfo } from '../../test/support/qemu.js';
import { CHUNK_SIZES, inspectInChunks } from '../../test/support/stream.js';
import { BufferSource } from './byte-source.js';
import { inspectSource, type InspectionReport, type InspectOptions } from './inspect-source.js';
import { limitsWith } from './limits.js';
import type { OvaDetails } from './ova.js';
import { errorCodes, refusalCases, type RefusalCase } from './format-cases.js';

const codes = (r: InspectionReport) => [...new Set(r.findings.map((f) => f.code))].sort();
const inspectBytes = (b: Uint8Array, opts: InspectOptions = {}) => inspectSource(new BufferSource(b), opts);

/**
 * A small head (still covering every probe's reads, as the engine assumes) and tail, so the disk's
 * end, the headers after it and the manifest must be captured as they pass.
 */
const TIGHT: InspectOptions = { limits: { headBytes: 64 * 1024, tailBytes: 4096 } };

async function assertStreams(b: Uint8Array, opts: InspectOptions = {}): Promise<void> {
  for (const o of [opts, { ...opts, limits: { ...TIGHT.limits, ...opts.limits } }]) {
    const want = await inspectBytes(b, o);
    const limits = limitsWith(o.limits);
    for (const n of CHUNK_SIZES) {
      const got = await inspectInChunks(b, n, o, n === 1 ? 8 * 1024 : Infinity);
      const what = `chunk size ${n}, head ${limits.headBytes}`;
      assert.equal(got.format, want.format, what);
      assert.equal(got.subformat, want.subformat, what);
      assert.equal(got.virtualSize, want.virtualSize, what);
      assert.deepEqual(codes(got), codes(want), `${what}: ${JSON.stringify(got.findings)}`);
      assert.ok(got.peakHeld <= limits.headBytes + limits.tailBytes + limits.maxCaptureBytes, `${what}: held ${got.peakHeld}`);
    }
  }
}

const DISK_FORMAT = 'http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized';

function ovf(disks: { file: string; capacityMiB: number }[]): string {
  const refs = disks.map((d, i) => `    <File ovf:id="file${i + 1}" ovf:href="${d.file}"/>`).join('\n');
  const ds = disks
    .map(
      (d, i) =>
        `    <Disk ovf:diskId="vmdisk${i + 1}" ovf:fileRef="file${i + 1}" ovf:capacity="${d.capacityMiB}" ovf:capacityAllocationUnits="byte * 2^20" ovf:format="${DISK_FORMAT}"/>`,
    )
    .join('\n');
  return (
    `<?xml version="1.0" encoding="UTF-8"?>\n<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/2" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/2">\n` +
    `  <References>\n${refs}\n  </References>\n  <DiskSection>\n    <Info>Virtual disks</Info>\n${ds}\n  </DiskSection>\n` +
    `  <VirtualSystem ovf:id="vm"><Info>A VM</Info></VirtualSystem>\n</Envelope>\n`
  );
}

const streamDisk = async () => qemuConvert('ova-disk-4m.vmdk', await patternedRaw('ova-src-4m.raw', 4 << 20), 'vmdk', ['subformat=streamOptimized']);
const streamDisk2 = async () => qemuCreate('ova-disk2-64m.vmdk', 'vmdk', '64M', ['subformat=streamOptimized']);

interface Pkg {
  /** digests in the manifest (none: no manifest) */
  manifest?: 'SHA256' | 'SHA1' | 'SHA512';
  /** put the manifest right after the OVF (before the disks) */
  manifestFirst?: boolean;
  /** corrupt the manifest's digest of disk1.vmdk */
  wrongDigest?: boolean;
  /** leave the OVF out */
  noOvf?: boolean;
  /** replace disk1.vmdk with these bytes */
  disk1?: () => Promise<Uint8Array>;
  /** a second disk */
  twoDisks?: boolean;
  /** the OVF references a file the tar lacks */
  missingRef?: boolean;
  /** extra members: (dir) => tar arguments appended after the others */
  extra?: (dir: string) => string[];
}

function pkg(name: string, p: Pkg = {}) {
  return cached(name, async (tmp) => {
    const dir = fixturePath(`${name}-dir`);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir);
    writeFileSync(join(dir, 'disk1.vmdk'), p.disk1 ? await p.disk1() : readFileSync(await streamDisk()));
    const disks = [{ file: 'disk1.vmdk', capacityMiB: 4 }];
    if (p.twoDisks) {
      writeFileSync(join(dir, 'disk2.vmdk'), readFileSync(await streamDisk2()));
      disks.push({ file: 'disk2.vmdk', capacityMiB: 64 });
    }
    if (p.missingRef) disks.push({ file: 'gone.vmdk', capacityMiB: 1 });
    writeFileSync(join(dir, 'vm.ovf'), ovf(disks));
    const payload = [...(p.noOvf ? [] : ['vm.ovf']), ...disks.map((d) => d.file).filter((f) => f !== 'gone.vmdk')];
    const members = [...payload];
    if (p.manifest) {
      const alg = p.manifest.toLowerCase();
      let mf =
        payload
          .map(
            (f) =>
              `${p.manifest}(${f})= ${createHash(alg)
                .update(readFileSync(join(dir, f)))
                .digest('hex')}`,
          )
          .join('\n') + '\n';
      if (p.wrongDigest) mf = mf.replace(/(\(disk1\.vmdk\)= )(.)/, (_, a: string, c: string) => a + (c === '0' ? '1' : '0'));
      writeFileSync(join(dir, 'vm.mf'), mf);
      if (p.manifestFirst) members.splice(1, 0, 'vm.mf');
      else members.push('vm.mf');
    }
    const extra = p.extra?.(dir) ?? [];
    execFileSync('tar', ['--format=ustar', '-cf', tmp, '-C', dir, ...members, ...extra]);
  });
}

const good = () => pkg('ova-good.ova', { manifest: 'SHA256' });

test('a clean OVA (manifest last, SHA256): members, OVF disks, verified digests, vmdk inside; streams alike', async () => {
  const file = await good();
  const bytes = readFileSync(file);
  const r = await inspectBytes(bytes);
  assert.equal(r.format, 'ova');
  assert.equal(r.subformat, 'ovf');
  assert.equal(r.virtualSize, 4n << 20n, 'the OVF capacity');
  assert.deepEqual(r.findings, [], JSON.stringify(r.findings));
  assert.equal(r.verdict, 'safe');
  const d = r.details as unknown as OvaDetails;
  assert.deepEqual(
    d.members.map((m) => m.name),
    ['vm.ovf', 'disk1.vmdk', 'vm.mf'],
  );
  assert.equal(d.ovf, 'vm.ovf');
  assert.equal(d.manifest, 'vm.mf');
  assert.deepEqual(d.references, [{ id: 'file1', href: 'disk1.vmdk', present: true }]);
  assert.equal(d.disks[0]!.file, 'disk1.vmdk');
  assert.equal(d.disks[0]!.format, DISK_FORMAT);
  assert.deepEqual(d.disks[0]!.inner, { format: 'vmdk', subformat: 'streamOptimized', virtualSize: 4 << 20, verdict: 'safe' });
  assert.deepEqual(
    d.manifestEntries.map((e) => [e.file, e.ok]),
    [
      ['vm.ovf', true],
      ['disk1.vmdk', true],
    ],
  );
  // qemu-img has no OVA driver: it reads the tar as raw, virtual size = file size
  const info = await qemuInfo(file);
  assert.equal(info.format, 'raw');
  assert.equal(info['virtual-size'], bytes.length);
  await assertStreams(bytes);
});

for (const v of [
  { name: 'ova-sha1.ova', p: { manifest: 'SHA1' } as Pkg, what: 'SHA1 manifest last' },
  { name: 'ova-mf-first.ova', p: { manifest: 'SHA256', manifestFirst: true } as Pkg, what: 'manifest before the disks' },
  { name: 'ova-two-disks.ova', p: { manifest: 'SHA256', twoDisks: true } as Pkg, what: 'two disks', size: (68n << 20n) as bigint },
  { name: 'ova-no-mf.ova', p: {} as Pkg, what: 'no manifest' },
]) {
  test(`a clean OVA, ${v.what}: safe, virtual size from the OVF, streams alike`, async () => {
    const bytes = readFileSync(await pkg(v.name, v.p));
    const r = await inspectBytes(bytes);
    assert.equal(r.format, 'ova');
    assert.equal(r.virtualSize, v.size ?? 4n << 20n);
    assert.deepEqual(r.findings, [], JSON.stringify(r.findings));
    const d = r.details as unknown as OvaDetails;
    assert.ok(d.manifestEntries.every((e) => e.ok === true));
    await assertStreams(bytes);
  });
}

test('SHA512 manifest after the disks: verified at random access; streamed past the head it cannot be (INSPECTION_INCOMPLETE, never a pass)', async () => {
  const bytes = readFileSync(await pkg('ova-sha512.ova', { manifest: 'SHA512' }));
  const r = await inspectBytes(bytes);
  assert.deepEqual(r.findings, []);
  // a whole small OVA fits in the stream's head and verifies from memory; past the head it cannot
  assert.deepEqual((await inspectInChunks(bytes, 65536)).findings, []);
  const s = await inspectInChunks(bytes, 65536, TIGHT);
  assert.deepEqual(errorCodes(s), ['INSPECTION_INCOMPLETE']);
  assert.ok(s.findings[0]!.message.includes('disk1.vmdk'));
  // manifest first: the stream hashes exactly what it lists, and passes
  const first = readFileSync(await pkg('ova-sha512-first.ova', { manifest: 'SHA512', manifestFirst: true }));
  await assertStreams(first);
  assert.deepEqual((await inspectInChunks(first, 512)).findings, []);
});

interface Hostile extends Omit<RefusalCase, 'bytes'> {
  /** builds the OVA file */
  make: () => Promise<string>;
}

const HOSTILE: Hostile[] = [
  {
    name: 'member named ../evil',
    make: () => pkg('ova-dotdot.ova', { extra: (dir) => (writeFileSync(join(dir, 'evil'), 'x'), ['-P', '--transform=s,^evil,../evil,', 'evil']) }),
    errors: ['OVA_UNSAFE_MEMBER'],
    mentions: '../evil',
  },
  {
    name: 'member with an absolute path /etc/x',
    make: () => pkg('ova-abs.ova', { extra: (dir) => (writeFileSync(join(dir, 'x'), 'x'), ['-P', '--transform=s,^x,/etc/x,', 'x']) }),
    errors: ['OVA_UNSAFE_MEMBER'],
    mentions: '/etc/x',
  },
  {
    name: 'symlink member',
    make: () => pkg('ova-symlink.ova', { extra: (dir) => (symlinkSync('/etc/shadow', join(dir, 'link')), ['link']) }),
    errors: ['OVA_UNSAFE_MEMBER'],
    mentions: '/etc/shadow',
  },
  {
    name: 'wrong SHA256 digest of the disk',
    make: () => pkg('ova-bad-sha256.ova', { manifest: 'SHA256', wrongDigest: true }),
    errors: ['OVA_DIGEST_MISMATCH'],
    mentions: 'disk1.vmdk',
  },
  { name: 'wrong SHA1 digest of the disk', make: () => pkg('ova-bad-sha1.ova', { manifest: 'SHA1', wrongDigest: true }), errors: ['OVA_DIGEST_MISMATCH'] },
  {
    name: 'wrong digest, manifest first',
    make: () => pkg('ova-bad-first.ova', { manifest: 'SHA256', wrongDigest: true, manifestFirst: true }),
    errors: ['OVA_DIGEST_MISMATCH'],
  },
  {
    name: 'OVF references a file the tar lacks',
    make: () => pkg('ova-missing-ref.ova', { manifest: 'SHA256', missingRef: true }),
    errors: ['OVA_MALFORMED'],
    mentions: 'gone.vmdk',
  },
  {
    name: 'a hostile VMDK inside (extent /etc/passwd)',
    make: () =>
      pkg('ova-evil-vmdk.ova', {
        manifest: 'SHA256',
        disk1: async () => {
          const b = Buffer.from(readFileSync(await qemuCreate('ova-sparse-4m.vmdk', 'vmdk', '4M')));
          const at = b.indexOf('RW 8192 SPARSE "');
          const end = b.indexOf('\n', at);
          b.fill(0x20, at, end);
          b.write('RW 8192 FLAT "/etc/passwd" 0', at, 'latin1');
          return b;
        },
      }),
    errors: ['VMDK_EXTENT_OUTSIDE'],
    mentions: '/etc/passwd',
  },
  {
    name: 'a disk that is not a VMDK',
    make: () =>
      pkg('ova-raw-disk.ova', { manifest: 'SHA256', disk1: async () => readFileSync(await patternedRaw('ova-src-4m.raw', 4 << 20)).subarray(0, 65536) }),
    errors: ['OVA_MALFORMED'],
    mentions: 'not a VMDK',
  },
  { name: 'more members than maxOvaMembers', make: good, opts: { limits: { maxOvaMembers: 2 } }, errors: ['OVER_LIMIT'] },
  { name: 'OVF over maxDescriptorBytes', make: good, opts: { limits: { maxDescriptorBytes: 256 } }, errors: ['OVER_LIMIT'] },
  {
    name: "a tar header with a bad checksum (the manifest's)",
    make: () =>
      cached('ova-badsum.ova', async (tmp) => {
        const b = Buffer.from(readFileSync(await good()));
        const at = b.indexOf('vm.mf\0');
        assert.ok(at > 0 && at % 512 === 0);
        b[at + 100] = 0x37; // mode digit: the stored checksum no longer matches
        writeFileSync(tmp, b);
      }),
    errors: ['OVA_MALFORMED'],
    mentions: 'checksum',
  },
];

refusalCases(
  'ova',
  'OVA',
  HOSTILE.map((h) => ({ ...h, bytes: async () => readFileSync(await h.make()) })),
  assertStreams,
);

test('a tar without the OVF first is not an OVA (raw, as qemu sees it); claimed as ova it is refused', async () => {
  const bytes = readFileSync(await pkg('ova-no-ovf.ova', { manifest: 'SHA256', noOvf: true }));
  const r = await inspectBytes(bytes);
  assert.equal(r.format, 'raw');
  const claimed = await inspectBytes(bytes, { claimedFormat: 'ova' });
  assert.deepEqual(errorCodes(claimed), ['FORMAT_MISMATCH']);
});

test('OVF not first behind a GNU long-name record still probes by the real first member', async () => {
  const long = `${'d'.repeat(120)}.ovf`;
  const file = await cached('ova-longname.ova', async (tmp) => {
    const dir = fixturePath('ova-longname.ova-dir');
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir);
    writeFileSync(join(dir, long), ovf([{ file: 'disk1.vmdk', capacityMiB: 4 }]));
    writeFileSync(join(dir, 'disk1.vmdk'), readFileSync(await streamDisk()));
    execFileSync('tar', ['--format=gnu', '-cf', tmp, '-C', dir, long, 'disk1.vmdk']);
  });
  const bytes = readFileSync(file);
  const r = await inspectBytes(bytes);
  assert.equal(r.format, 'ova');
  assert.equal((r.details as unknown as OvaDetails).ovf, long);
  assert.deepEqual(r.findings, []);
  await assertStreams(bytes);
});

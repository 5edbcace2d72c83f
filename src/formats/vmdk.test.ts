/**
 * VMDK: every subformat qemu-img creates (compared with `qemu-img info`), the descriptors it writes
 * next to split and flat disks, and hostile images crafted from them byte by byte (built here, in
 * the test: extents naming host files, `..`, two extents, a header that wraps a descriptor, huge
 * descriptor sizes, truncation, tables past the end, unknown versions and flags). Every image is
 * also fed to the stream inspector at chunk sizes 1, 17, 512 and 65536.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { cached, fixturePath, patternedRaw, qemuConvert, qemuCreate, qemuInfo, sh } from '../../test/support/qemu.js';
import { CHUNK_SIZES, inspectInChunks } from '../../test/support/stream.js';
import { BufferSource } from './byte-source.js';
import type { FindingCode } from './findings.js';
import { inspectSource, type InspectionReport, type InspectOptions } from './inspect-source.js';
import { DEFAULT_LIMITS, limitsWith } from './limits.js';
import { parseDescriptor } from './vmdk-descriptor.js';
import { errorCodes, refusalCases, type RefusalCase } from './format-cases.js';

const codes = (r: InspectionReport) => [...new Set(r.findings.map((f) => f.code))].sort();

async function inspectBytes(b: Uint8Array, opts: InspectOptions = {}): Promise<InspectionReport> {
  return inspectSource(new BufferSource(b), opts);
}

/** The streamed result equals the random-access one, holding bounded memory. */
async function assertStreams(b: Uint8Array, opts: InspectOptions = {}): Promise<void> {
  const want = await inspectBytes(b, opts);
  const limits = limitsWith(opts.limits);
  for (const n of CHUNK_SIZES) {
    const got = await inspectInChunks(b, n, opts, n === 1 ? 16 * 1024 : Infinity);
    const what = `chunk size ${n}`;
    assert.equal(got.format, want.format, what);
    assert.equal(got.subformat, want.subformat, what);
    assert.equal(got.virtualSize, want.virtualSize, what);
    assert.deepEqual(codes(got), codes(want), what);
    assert.ok(got.peakHeld <= limits.headBytes + limits.tailBytes + limits.maxCaptureBytes, `${what}: held ${got.peakHeld}`);
  }
}

// ---- qemu-img fixtures -------------------------------------------------------------------------

interface QemuCase {
  name: string;
  size: string;
  options?: string[];
  subformat: string;
  fromData?: boolean;
}

const CLEAN: QemuCase[] = [
  { name: 'vmdk-sparse-64m.vmdk', size: '64M', subformat: 'monolithicSparse' },
  { name: 'vmdk-sparse-1t.vmdk', size: '1T', subformat: 'monolithicSparse' },
  { name: 'vmdk-stream-1g.vmdk', size: '1G', subformat: 'streamOptimized', options: ['subformat=streamOptimized'] },
  { name: 'vmdk-stream-data.vmdk', size: '8M', subformat: 'streamOptimized', options: ['subformat=streamOptimized'], fromData: true },
  { name: 'vmdk-sparse-data.vmdk', size: '8M', subformat: 'monolithicSparse', fromData: true },
  { name: 'vmdk-hw6.vmdk', size: '64M', subformat: 'monolithicSparse', options: ['hwversion=6'] },
  { name: 'vmdk-compat6.vmdk', size: '64M', subformat: 'monolithicSparse', options: ['compat6=on'] },
  { name: 'vmdk-lsilogic.vmdk', size: '64M', subformat: 'monolithicSparse', options: ['adapter_type=lsilogic'] },
  { name: 'vmdk-buslogic.vmdk', size: '64M', subformat: 'streamOptimized', options: ['adapter_type=buslogic', 'subformat=streamOptimized'] },
  { name: 'vmdk-legacyesx.vmdk', size: '64M', subformat: 'monolithicSparse', options: ['adapter_type=legacyESX'] },
  { name: 'vmdk-zeroed-grain.vmdk', size: '64M', subformat: 'monolithicSparse', options: ['zeroed_grain=on'] },
];

async function makeClean(c: QemuCase): Promise<string> {
  if (c.fromData) return qemuConvert(c.name, await patternedRaw('vmdk-src-8m.raw', 8 << 20), 'vmdk', c.options ?? []);
  return qemuCreate(c.name, 'vmdk', c.size, c.options ?? []);
}

for (const c of CLEAN) {
  test(`qemu-img ${c.name}: vmdk ${c.subformat}, virtual size as qemu-img info, safe, streams alike`, async () => {
    const file = await makeClean(c);
    const bytes = readFileSync(file);
    const info = await qemuInfo(file);
    const r = await inspectBytes(bytes);
    assert.equal(info.format, 'vmdk');
    assert.equal(r.format, info.format);
    assert.equal(r.virtualSize, BigInt(info['virtual-size']));
    assert.equal(r.subformat, c.subformat);
    assert.deepEqual(r.findings, [], JSON.stringify(r.findings));
    assert.equal(r.verdict, 'safe');
    await assertStreams(bytes);
  });
}

test('adapter type, geometry and hardware version come from the descriptor database', async () => {
  const r = await inspectBytes(readFileSync(await qemuCreate('vmdk-lsilogic.vmdk', 'vmdk', '64M', ['adapter_type=lsilogic'])));
  const d = r.details as {
    ddb: Record<string, string>;
    cid: string;
    parentCid: string;
    extents: { access: string; sectors: number; type: string }[];
    grainSizeSectors: number;
  };
  assert.equal(d.ddb.adapterType, 'lsilogic');
  assert.equal(d.ddb['geometry.heads'], '255');
  assert.equal(d.parentCid, 'ffffffff');
  assert.match(d.cid, /^[0-9a-f]{1,8}$/); // qemu writes CID=%x: not zero-padded
  assert.equal(d.extents.length, 1);
  assert.deepEqual({ ...d.extents[0], file: undefined }, { access: 'RW', sectors: 131072, type: 'SPARSE', file: undefined });
  assert.equal(d.grainSizeSectors, 128);
  const hw6 = (await inspectBytes(readFileSync(await qemuCreate('vmdk-hw6.vmdk', 'vmdk', '64M', ['hwversion=6'])))).details as typeof d;
  assert.equal(hw6.ddb.virtualHWVersion, '6');
});

test('streamOptimized (VMware layout): the footer header is read from the tail (grain directory at the end)', async () => {
  const bytes = await vmwareStream();
  const file = fixturePath('vmdk-vmware-stream.vmdk');
  writeFileSync(file, bytes);
  const info = await qemuInfo(file);
  const r = await inspectBytes(bytes);
  assert.equal(r.format, info.format);
  assert.equal(r.virtualSize, BigInt(info['virtual-size']));
  assert.deepEqual(r.findings, []);
  await assertStreams(bytes);
  const d = r.details as { footer?: boolean; compressAlgorithm: string; flags: string[]; grainDirectoryOffset: number };
  assert.equal(d.footer, true);
  assert.equal(d.compressAlgorithm, 'deflate');
  assert.ok(d.flags.includes('compressedGrains') && d.flags.includes('markers'));
  assert.ok(d.grainDirectoryOffset > 0);
});

/** A qemu-img disk made of a descriptor plus extent files; we inspect the descriptor alone. */
function descriptorDisk(name: string, subformat: string, size: string, extra: string[] = []) {
  return cached(name, async (tmp) => {
    const dir = fixturePath(`${name}-dir`);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir);
    await sh('qemu-img', ['create', '-q', '-f', 'vmdk', '-o', `subformat=${subformat}`, ...extra, join(dir, 'disk.vmdk'), size]);
    writeFileSync(tmp, readFileSync(join(dir, 'disk.vmdk')));
  });
}

for (const [subformat, size] of [
  ['monolithicFlat', '16M'],
  ['twoGbMaxExtentSparse', '5G'],
  ['twoGbMaxExtentFlat', '3G'],
] as const) {
  test(`qemu-img ${subformat}: the stand-alone descriptor is vmdk with qemu's size, and refused (its data lives in other files)`, async () => {
    const file = await descriptorDisk(`vmdk-${subformat}.vmdk`, subformat, size);
    // qemu-img reads it with its extents beside it (in the -dir the fixture was made in)
    const info = await qemuInfo(join(`${file}-dir`, 'disk.vmdk'));
    const bytes = readFileSync(file);
    const r = await inspectBytes(bytes);
    assert.equal(r.format, info.format);
    assert.equal(r.virtualSize, BigInt(info['virtual-size']));
    assert.equal(r.subformat, subformat);
    assert.deepEqual(errorCodes(r), ['VMDK_CREATE_TYPE', 'VMDK_EXTENT_OUTSIDE']);
    assert.ok(
      r.findings.some((f) => f.code === 'VMDK_EXTENT_OUTSIDE' && f.message.includes('"disk-')),
      'the message names the extent file',
    );
    assert.equal(r.verdict, 'refused');
    await assertStreams(bytes);
  });
}

test('qemu-img backing file: BACKING_FILE naming the parent, size as qemu-img info', async () => {
  const base = await qemuCreate('vmdk-base.vmdk', 'vmdk', '64M');
  const file = await cached('vmdk-overlay.vmdk', async (tmp) => {
    await sh('qemu-img', ['create', '-q', '-f', 'vmdk', '-b', base, '-F', 'vmdk', tmp]);
  });
  const info = await qemuInfo(file);
  const bytes = readFileSync(file);
  const r = await inspectBytes(bytes);
  assert.equal(r.format, 'vmdk');
  assert.equal(r.virtualSize, BigInt(info['virtual-size']));
  assert.deepEqual(errorCodes(r), ['BACKING_FILE']);
  assert.ok(r.findings[0]!.message.includes('vmdk-base.vmdk'));
  await assertStreams(bytes);
});

// ---- crafted images ----------------------------------------------------------------------------

const small = () => qemuCreate('vmdk-sparse-64m.vmdk', 'vmdk', '64M');

/**
 * qemu-img writes streamOptimized with the grain directory offset in the header and no footer;
 * VMware (ovftool) writes gdOffset = GD_AT_END and a footer. This builds the VMware layout from
 * qemu's file: header gdOffset all ones, then at the end a footer marker (val 1, size 0, type 3),
 * the header copy with the real gdOffset, and the end-of-stream marker (all zero).
 */
async function vmwareStream(): Promise<Buffer> {
  const q = readFileSync(await makeClean(CLEAN[3]!));
  const body = Buffer.from(q.subarray(0, q.length - 512)); // drop qemu's end-of-stream marker
  const footerHeader = Buffer.from(q.subarray(0, 512));
  const marker = Buffer.alloc(512);
  marker.writeBigUInt64LE(1n, 0);
  marker.writeUInt32LE(0, 8);
  marker.writeUInt32LE(3, 12);
  body.writeBigUInt64LE(0xffffffffffffffffn, 56);
  return Buffer.concat([body, marker, footerHeader, Buffer.alloc(512)]);
}

/** The sparse fixture with its embedded descriptor (sector 1, 20 sectors) replaced by `text`. */
async function withDescriptor(text: string, base = small): Promise<Buffer> {
  const b = Buffer.from(readFileSync(await base()));
  const at = Number(b.readBigUInt64LE(28)) * 512;
  const size = Number(b.readBigUInt64LE(36)) * 512;
  assert.ok(text.length <= size);
  b.fill(0, at, at + size);
  b.write(text, at, 'latin1');
  return b;
}

const DESC = (extents: string, extra = '') =>
  `# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType="monolithicSparse"\n${extra}\n# Extent description\n${extents}\n\n# The Disk Data Base\n#DDB\nddb.adapterType = "ide"\n`;

const le64 = (b: Buffer, at: number, v: bigint) => (b.writeBigUInt64LE(v, at), b);
const le32 = (b: Buffer, at: number, v: number) => (b.writeUInt32LE(v, at), b);

/** Embedded descriptors whose extent lines point outside the image: [name, extent lines, text the finding mentions]. */
const EXTENT_OUTSIDE: [string, string, string?][] = [
  ['embedded descriptor whose extent is FLAT /etc/passwd (CVE-2022-47951)', 'RW 131072 FLAT "/etc/passwd" 0', '/etc/passwd'],
  ['embedded extent with a ../ path', 'RW 131072 SPARSE "../../var/lib/images/x.vmdk"', '..'],
  ['embedded extent in another directory', 'RW 131072 SPARSE "sub/x.vmdk"', 'sub/x.vmdk'],
  ['two extents in a monolithicSparse', 'RW 65536 SPARSE "a.vmdk"\nRW 65536 SPARSE "b.vmdk"', 'b.vmdk'],
  ['a ZERO extent where the SPARSE one should be', 'RW 131072 ZERO'],
];

/** The small monolithicSparse image with one header field set: [name, field width, offset, value, error codes]. */
const HEADER_FIELD: [string, 32 | 64, number, bigint, FindingCode[]][] = [
  ['descriptorSize of 2^40 sectors', 64, 36, 1n << 40n, ['OVER_LIMIT', 'VMDK_CREATE_TYPE']],
  ['descriptor past the end of the file', 64, 28, 1n << 30n, ['OFFSET_PAST_END', 'VMDK_CREATE_TYPE']],
  ['grain directory past the end', 64, 56, 1n << 30n, ['OFFSET_PAST_END']],
  ['overHead beyond the end (truncated image)', 64, 64, 1n << 30n, ['TRUNCATED']],
  ['header version 4 (qemu: unsupported)', 32, 4, 4n, ['UNKNOWN_FEATURES']],
  ['capacity of 2^62 sectors', 64, 12, 1n << 62n, ['FIELD_OUT_OF_RANGE']],
  ['numGTEsPerGT over 512 (qemu: L2 table size too big)', 32, 44, 4096n, ['MALFORMED_HEADER']],
];

const HOSTILE: RefusalCase[] = [
  ...EXTENT_OUTSIDE.map(([name, extents, mentions]): RefusalCase => ({
    name,
    bytes: () => withDescriptor(DESC(extents)),
    errors: ['VMDK_EXTENT_OUTSIDE'],
    ...(mentions ? { mentions } : {}),
  })),
  ...HEADER_FIELD.map(([name, width, at, value, errors]): RefusalCase => ({
    name,
    bytes: async () => {
      const b = Buffer.from(readFileSync(await small()));
      return width === 64 ? le64(b, at, value) : le32(b, at, Number(value));
    },
    errors,
  })),
  {
    name: 'stand-alone descriptor whose extent is /etc/passwd',
    bytes: async () => Buffer.from(DESC('RW 8 FLAT "/etc/passwd" 0').replace('monolithicSparse', 'monolithicFlat')),
    errors: ['VMDK_CREATE_TYPE', 'VMDK_EXTENT_OUTSIDE'],
    mentions: '/etc/passwd',
  },
  {
    name: 'stand-alone descriptor that says monolithicSparse (no data of its own)',
    bytes: async () => Buffer.from(DESC('RW 8 SPARSE "other.vmdk"')),
    errors: ['VMDK_EXTENT_OUTSIDE'],
    mentions: 'other.vmdk',
  },
  {
    name: 'header with capacity 0 wrapping a monolithicFlat descriptor (qemu opens its extents)',
    bytes: async () => le64(await withDescriptor(DESC('RW 2048 FLAT "/dev/sda" 0').replace('monolithicSparse', 'monolithicFlat')), 12, 0n),
    errors: ['VMDK_CREATE_TYPE', 'VMDK_EXTENT_OUTSIDE'],
    mentions: '/dev/sda',
  },
  {
    name: 'parentFileNameHint hidden in a comment where qemu looks (sector 1)',
    bytes: () => withDescriptor(DESC('RW 131072 SPARSE "x.vmdk"', '# parentFileNameHint="/etc/shadow"')),
    errors: ['BACKING_FILE'],
    mentions: '/etc/shadow',
  },
  {
    name: 'createType in a comment before the real one (qemu reads the comment)',
    bytes: () => withDescriptor(DESC('RW 131072 SPARSE "x.vmdk"').replace('# Disk DescriptorFile', '# createType="vmfs"')),
    errors: ['MALFORMED_HEADER'],
    mentions: 'ambiguous',
  },
  {
    name: 'unknown extent type',
    bytes: () => withDescriptor(DESC('RW 131072 NBD "x.vmdk"')),
    errors: ['MALFORMED_HEADER', 'VMDK_EXTENT_OUTSIDE'],
  },
  {
    name: 'extent line with trailing text (qemu would still take it)',
    bytes: () => withDescriptor(DESC('RW 131072 SPARSE "x.vmdk" junk')),
    errors: ['MALFORMED_HEADER'],
  },
  {
    name: 'truncated header (the first 300 bytes)',
    bytes: async () => readFileSync(await small()).subarray(0, 300),
    errors: ['OFFSET_PAST_END'],
  },
  {
    name: 'streamOptimized cut before its footer',
    bytes: async () => {
      const b = await vmwareStream();
      return b.subarray(0, b.length - 1024);
    },
    errors: ['TRUNCATED'],
  },
  {
    name: 'grain directory over maxTableEntries',
    bytes: async () => Buffer.from(readFileSync(await small())),
    opts: { limits: { maxTableEntries: 1 } },
    errors: ['OVER_LIMIT'],
  },
  {
    name: 'stand-alone descriptor over maxDescriptorBytes',
    bytes: async () => Buffer.from(DESC('RW 8 FLAT "x-flat.vmdk" 0') + '#'.repeat(4096)),
    opts: { limits: { maxDescriptorBytes: 1024 } },
    errors: ['OVER_LIMIT'],
  },
  {
    name: 'stand-alone descriptor with 1025 extent lines',
    bytes: async () =>
      Buffer.from(DESC(Array.from({ length: 1025 }, (_, i) => `RW 8 FLAT "x${i}-flat.vmdk" 0`).join('\n')).replace('monolithicSparse', 'monolithicFlat')),
    errors: ['OVER_LIMIT', 'VMDK_CREATE_TYPE', 'VMDK_EXTENT_OUTSIDE'],
  },
];

refusalCases('vmdk', 'vmdk', HOSTILE, assertStreams);

test('unknown header flag bits: UNKNOWN_FEATURES as a warning (qemu ignores them), still safe', async () => {
  const b = le32(Buffer.from(readFileSync(await small())), 8, 0x3 | (1 << 5));
  const r = await inspectBytes(b);
  assert.deepEqual(codes(r), ['UNKNOWN_FEATURES']);
  assert.equal(r.findings[0]!.severity, 'warning');
  assert.equal(r.verdict, 'safe');
  assert.equal((r.details as { unknownFlags: number }).unknownFlags, 1 << 5);
});

test('qemu agrees the crafted header is refused: version 4 and a wrapped /etc/passwd extent do not open as a plain disk', async () => {
  const dir = fixturePath('vmdk-qemu-view');
  mkdirSync(dir, { recursive: true });
  const v4 = join(dir, 'v4.vmdk');
  writeFileSync(v4, le32(Buffer.from(readFileSync(await small())), 4, 4));
  await assert.rejects(qemuInfo(v4, 'vmdk'), /version/i);
  // capacity 0 + descriptor: qemu reads the descriptor as a descriptor file and sums its extents
  const wrapped = join(dir, 'wrapped.vmdk');
  writeFileSync(wrapped, le64(await withDescriptor(DESC('RW 2048 FLAT "wrapped-flat.raw" 0').replace('monolithicSparse', 'monolithicFlat')), 12, 0n));
  writeFileSync(join(dir, 'wrapped-flat.raw'), Buffer.alloc(2048 * 512));
  const info = await qemuInfo(wrapped, 'vmdk');
  const r = await inspectBytes(readFileSync(wrapped));
  assert.equal(r.virtualSize, BigInt(info['virtual-size']));
  assert.equal(r.verdict, 'refused');
});

test('a clean image raises none of the codes the hostile ones do', async () => {
  for (const c of [CLEAN[0]!, CLEAN[3]!]) {
    const r = await inspectBytes(readFileSync(await makeClean(c)));
    assert.deepEqual(r.findings, []);
  }
  // the parser alone: a clean descriptor has no malformed lines and exactly one extent
  const p = parseDescriptor(DESC('RW 131072 SPARSE "x.vmdk"'));
  assert.deepEqual(p.malformed, []);
  assert.equal(p.extents.length, 1);
  assert.equal(p.qemuCreateType, 'monolithicSparse');
});

test('probe: qemu-style descriptors (version= first) are vmdk; text without the marks is not', async () => {
  const qemuStyle = Buffer.from('# comment\n   \nversion=1\ncreateType="monolithicFlat"\nRW 8 FLAT "x" 0\n');
  assert.equal((await inspectBytes(qemuStyle)).format, 'vmdk');
  const notVmdk = Buffer.from('hello\nversion=1\n');
  assert.equal((await inspectBytes(notVmdk)).format, 'raw');
  const notText = new Uint8Array(4096);
  assert.equal((await inspectBytes(notText)).format, 'raw');
});

test('limits: the default descriptor limit is the documented 1 MiB', () => {
  assert.equal(DEFAULT_LIMITS.maxDescriptorBytes, 1 << 20);
});

/**
 * Issue 18, item 2: inconsistent images are not `safe`. Oracle: qemu-img. A corpus made by
 * qemu-img (qcow2, vmdk monolithicSparse and streamOptimized, vhd dynamic, vhdx, vdi, all with
 * data) is truncated at fixed and seeded-random offsets and has random allocated table entries
 * pointed past the end (vdi: past the block map); whenever qemu-img
 * finds the result corrupt or unreadable (`qemu-img check` where qemu supports it, `qemu-img
 * convert -O raw` for vpc), Imago refuses it — through `inspectFile` (random access) and through
 * the stream inspector (the ingest path). Clean images stay clean.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { inspectSource } from '../src/formats/inspect-source.js';
import { BufferSource } from '../src/formats/byte-source.js';
import { StreamInspector } from '../src/formats/stream-inspector.js';
import { cached, fixturePath, patternedRaw, qemuConvert } from './support/qemu.js';
import { seededRandom } from './support/prng.js';

interface Kind {
  name: string;
  qemu: string;
  options: string[];
  /** qemu-img check supports it; otherwise convert -O raw is the oracle */
  check: boolean;
  /** byte positions of the allocated entries of the tables we corrupt (none: truncations only) */
  entries(b: Buffer): number[];
  /** points the entry at `at` to `sectors` 512-byte sectors past the end of the image */
  pointPastEnd(b: Buffer, at: number, sectors: number): void;
}

function allocated(b: Buffer, table: number, count: number, bytes: 4 | 8, le: boolean, free: (v: bigint) => boolean): number[] {
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    const at = table + i * bytes;
    const v = bytes === 8 ? (le ? b.readBigUInt64LE(at) : b.readBigUInt64BE(at)) : BigInt(le ? b.readUInt32LE(at) : b.readUInt32BE(at));
    if (!free(v)) out.push(at);
  }
  return out;
}

const endSectors = (b: Buffer, sectors: number) => Math.ceil(b.length / 512) + sectors;

const KINDS: Kind[] = [
  {
    name: 'qcow2',
    qemu: 'qcow2',
    options: [],
    check: true,
    entries(b) {
      const l1 = Number(b.readBigUInt64BE(40));
      const l2 = Number(b.readBigUInt64BE(l1) & 0x00fffffffffffe00n);
      return allocated(b, l2, 8192, 8, false, (v) => (v & 0x00fffffffffffe00n) === 0n);
    },
    pointPastEnd: (b, at, sectors) => b.writeBigUInt64BE(0x8000000000000000n | (BigInt(Math.ceil(endSectors(b, sectors) / 128)) * 65536n), at),
  },
  {
    name: 'vmdk monolithicSparse',
    qemu: 'vmdk',
    options: ['subformat=monolithicSparse'],
    check: true,
    entries(b) {
      const gd = Number(b.readBigUInt64LE(56)) * 512;
      const gt = b.readUInt32LE(gd) * 512;
      return allocated(b, gt, 512, 4, true, (v) => v < 2n);
    },
    pointPastEnd: (b, at, sectors) => b.writeUInt32LE(endSectors(b, sectors), at),
  },
  {
    name: 'vmdk streamOptimized',
    qemu: 'vmdk',
    options: ['subformat=streamOptimized'],
    check: true,
    entries: () => [],
    pointPastEnd: () => undefined,
  },
  {
    name: 'vhd dynamic',
    qemu: 'vpc',
    options: ['subformat=dynamic'],
    check: false,
    entries(b) {
      const bat = Number(b.readBigUInt64BE(512 + 16));
      return allocated(b, bat, b.readUInt32BE(512 + 28), 4, false, (v) => v === 0xffffffffn);
    },
    pointPastEnd: (b, at, sectors) => b.writeUInt32BE(endSectors(b, sectors), at),
  },
  {
    name: 'vhdx',
    qemu: 'vhdx',
    options: [],
    check: true,
    entries(b) {
      // qemu-img puts the BAT region at 2 MiB (checked: the scan finds allocated entries there)
      return allocated(b, 2 << 20, 64, 8, true, (v) => (v & 7n) !== 6n);
    },
    pointPastEnd: (b, at, sectors) => b.writeBigUInt64LE((BigInt(Math.ceil(endSectors(b, sectors) / 2048)) << 20n) | 6n, at),
  },
  {
    name: 'vdi',
    qemu: 'vdi',
    options: [],
    check: true,
    entries(b) {
      return allocated(b, b.readUInt32LE(340), b.readUInt32LE(384), 4, true, (v) => v >= 0xfffffffen);
    },
    // qemu-img check: "block index too large" (a block number past the map, not a byte offset)
    pointPastEnd: (b, at, sectors) => b.writeUInt32LE(b.readUInt32LE(384) + sectors, at),
  },
];

/** qemu-img's verdict: true when it finds the image corrupt or cannot read it. */
function qemuBroken(kind: Kind, file: string): boolean {
  if (kind.check) {
    const r = spawnSync('qemu-img', ['check', '-f', kind.qemu, file], { encoding: 'utf8' });
    // 0 clean, 3 leaked clusters only (not corruption); 1 and 2: cannot check / corrupt
    return r.status !== 0 && r.status !== 3;
  }
  const r = spawnSync('qemu-img', ['convert', '-f', kind.qemu, '-O', 'raw', file, fixturePath('table-oracle-out.raw')], { encoding: 'utf8' });
  return r.status !== 0;
}

async function streamed(b: Uint8Array, chunk: number) {
  const si = new StreamInspector();
  for (let i = 0; i < b.length; i += chunk) await si.write(b.subarray(i, Math.min(b.length, i + chunk)));
  return si.end();
}

/** Every case: qemu's verdict and ours, random access and streamed. */
async function compare(kind: Kind, label: string, bytes: Buffer): Promise<{ broken: boolean; problems: string[] }> {
  const file = fixturePath(`table-oracle-case.${kind.qemu}`);
  writeFileSync(file, bytes);
  const broken = qemuBroken(kind, file);
  const random = await inspectSource(new BufferSource(bytes));
  const stream = await streamed(bytes, 65536);
  const problems: string[] = [];
  if (broken && random.verdict !== 'refused') problems.push(`${label}: qemu-img finds it broken, inspectFile says safe`);
  if (broken && stream.verdict !== 'refused') problems.push(`${label}: qemu-img finds it broken, the stream inspector says safe`);
  return { broken, problems };
}

for (const kind of KINDS) {
  test(`${kind.name}: truncated or with table entries past the end, refused whenever qemu-img finds it broken`, async (t) => {
    const raw = await patternedRaw('table-oracle-src-6m.raw', 6 << 20);
    const image = await cached(`table-oracle-${kind.name.replace(/ /g, '-')}.img`, async (tmp) => {
      const made = await qemuConvert(`table-oracle-made-${kind.name.replace(/ /g, '-')}`, raw, kind.qemu, kind.options);
      writeFileSync(tmp, readFileSync(made));
    });
    const whole = readFileSync(image);
    // clean: no false positive
    const clean = await inspectSource(new BufferSource(whole));
    assert.equal(clean.verdict, 'safe', `${kind.name} clean: ${JSON.stringify(clean.findings)}`);
    assert.equal((await streamed(whole, 65536)).verdict, 'safe');
    assert.equal(qemuBroken(kind, image), false, 'qemu-img finds the clean image fine');
    const random = seededRandom(18);
    const cases: [string, Buffer][] = [];
    // truncations: fixed points from just after the header to just before the end, and random ones
    const cuts = [0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 0.97].map((f) => Math.floor(whole.length * f));
    cuts.push(whole.length - 512);
    for (let i = 0; i < 8; i++) cuts.push(4096 + Math.floor(random() * (whole.length - 4096)));
    for (const cut of cuts) cases.push([`cut at ${cut}`, Buffer.from(whole.subarray(0, cut))]);
    // allocated table entries pointed past the end, at random
    const entries = kind.entries(whole);
    if (kind.name !== 'vmdk streamOptimized') assert.ok(entries.length > 0, 'the corpus has allocated entries to corrupt');
    for (let i = 0; i < Math.min(6, entries.length); i++) {
      const at = entries[Math.floor(random() * entries.length)]!;
      const b = Buffer.from(whole);
      kind.pointPastEnd(b, at, 1 + Math.floor(random() * 4096));
      cases.push([`entry at ${at} past the end`, b]);
    }
    const problems: string[] = [];
    let qemuBrokenCases = 0;
    for (const [label, b] of cases) {
      const r = await compare(kind, label, b);
      if (r.broken) qemuBrokenCases++;
      problems.push(...r.problems);
      if (label.startsWith('entry')) {
        const ours = await inspectSource(new BufferSource(b));
        const table = ours.findings.find((f) => f.code === 'OFFSET_PAST_END' || f.code === 'TABLE_MALFORMED');
        assert.match(table?.message ?? '', /entry \d+: .*re-create it with "qemu-img convert"/, `${label}: ${JSON.stringify(ours.findings)}`);
      }
    }
    t.diagnostic(`${cases.length} cases (${entries.length} allocated entries to pick from), ${qemuBrokenCases} broken per qemu-img`);
    assert.ok(qemuBrokenCases > 0, 'the corpus has cases qemu-img finds broken');
    assert.deepEqual(problems, []);
  });
}

/**
 * VMware's streamOptimized layout (gdOffset = GD_AT_END): the grain directory sits right before the
 * footer, which alone says where it is. Built from qemu's file: its directory copied to the end
 * behind a GD marker, then a footer marker, the header copy naming that copy, and the end-of-stream
 * marker. Inside an OVA (the way vSphere exports) the stream inspector learns the member's end early
 * and scans the directory as it passes.
 */
async function vmwareLayoutOva(name: string, damage?: (disk: Buffer, gdAt: number) => void): Promise<Buffer> {
  // incompressible data, so that the disk runs well past the 1 MiB a stream keeps of its head
  const raw = await cached('table-oracle-noise-3m.raw', async (tmp) => writeFileSync(tmp, randomBytes(3 << 20)));
  const q = readFileSync(await qemuConvert('table-oracle-noise-stream.vmdk', raw, 'vmdk', ['subformat=streamOptimized']));
  const gdSector = Number(q.readBigUInt64LE(56));
  const capacity = q.readBigUInt64LE(12);
  const coverage = BigInt(q.readUInt32LE(44)) * q.readBigUInt64LE(20);
  const gdBytes = Number((capacity + coverage - 1n) / coverage) * 4;
  const gdSectors = Math.ceil(gdBytes / 512);
  const body = Buffer.from(q.subarray(0, q.length - 512)); // without qemu's end-of-stream marker
  const gdMarker = Buffer.alloc(512);
  gdMarker.writeBigUInt64LE(BigInt(gdSectors), 0);
  gdMarker.writeUInt32LE(2, 12);
  const gd = Buffer.alloc(gdSectors * 512);
  q.copy(gd, 0, gdSector * 512, gdSector * 512 + gdBytes);
  const gdAt = body.length + 512;
  const footerMarker = Buffer.alloc(512);
  footerMarker.writeBigUInt64LE(1n, 0);
  footerMarker.writeUInt32LE(3, 12);
  const footer = Buffer.from(q.subarray(0, 512));
  footer.writeBigUInt64LE(BigInt(gdAt / 512), 56);
  body.writeBigUInt64LE(0xffffffffffffffffn, 56);
  const disk = Buffer.concat([body, gdMarker, gd, footerMarker, footer, Buffer.alloc(512)]);
  damage?.(disk, gdAt);
  const dir = fixturePath(`${name}-dir`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'disk1.vmdk'), disk);
  writeFileSync(
    join(dir, 'vm.ovf'),
    `<?xml version="1.0"?>\n<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">\n` +
      `<References><File ovf:id="file1" ovf:href="disk1.vmdk"/></References>\n` +
      `<DiskSection><Info>disks</Info><Disk ovf:diskId="d1" ovf:fileRef="file1" ovf:capacity="${capacity * 512n}" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/></DiskSection>\n</Envelope>\n`,
  );
  // a member after the disk, larger than the 64 KiB a stream keeps of its end: the directory is
  // neither in the stream's head nor in its tail
  writeFileSync(join(dir, 'vm.cert'), Buffer.alloc(256 << 10, 0x41));
  const ova = fixturePath(`${name}.ova`);
  execFileSync('tar', ['--format=ustar', '-cf', ova, '-C', dir, 'vm.ovf', 'disk1.vmdk', 'vm.cert']);
  return readFileSync(ova);
}

test('VMware-layout streamOptimized in an OVA: its grain directory is checked when streamed, clean stays clean', async () => {
  const clean = await vmwareLayoutOva('table-oracle-vmware');
  assert.ok(clean.length > 2 << 20, 'the directory lies past the stream head');
  const random = await inspectSource(new BufferSource(clean));
  assert.equal(random.verdict, 'safe', JSON.stringify(random.findings));
  for (const chunk of [512, 65536]) {
    const s = await streamed(clean, chunk);
    assert.equal(s.verdict, 'safe', `chunk ${chunk}: ${JSON.stringify(s.findings)}`);
  }
  const damaged = await vmwareLayoutOva('table-oracle-vmware-bad', (disk, gdAt) => disk.writeUInt32LE(Math.ceil(disk.length / 512) + 100, gdAt));
  // qemu reads a grain table past the end of the file as zeros (its check passes); Imago refuses
  // it, as the issue asks: every table points inside the file, or no reader of ours can read it
  for (const r of [await inspectSource(new BufferSource(damaged)), await streamed(damaged, 65536)]) {
    assert.equal(r.verdict, 'refused');
    assert.ok(
      r.findings.some((f) => f.code === 'OFFSET_PAST_END' && /grain directory/.test(f.message)),
      JSON.stringify(r.findings),
    );
  }
});

test('table limits: more table bytes than maxTableScanBytes, or more scans than a stream may hold, is OVER_LIMIT', async () => {
  // 64 KiB written every 512 MiB of an 8 GiB disk: 16 L2 tables of 64 KiB in a 2 MiB file
  const image = await cached('table-oracle-16-l2.qcow2', async (tmp) => {
    spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', tmp, '8G']);
    const writes = Array.from({ length: 16 }, (_, i) => ['-c', `write -P ${i + 1} ${i * 512}M 64k`]).flat();
    const r = spawnSync('qemu-io', ['-f', 'qcow2', ...writes, tmp], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
  });
  const bytes = readFileSync(image);
  const clean = await inspectSource(new BufferSource(bytes));
  assert.equal(clean.verdict, 'safe', JSON.stringify(clean.findings));
  const limits = { maxTableScanBytes: 512 << 10 };
  const random = await inspectSource(new BufferSource(bytes), { limits });
  assert.ok(
    random.findings.some((f) => f.code === 'OVER_LIMIT' && /maxTableScanBytes/.test(f.message)),
    JSON.stringify(random.findings),
  );
  const si = new StreamInspector({ limits });
  for (let i = 0; i < bytes.length; i += 65536) await si.write(bytes.subarray(i, i + 65536));
  assert.equal((await si.end()).verdict, 'refused');
  // 17 scans (refcount table, 16 L2 tables) of 256 bytes of state each do not fit in 4 KiB
  const small = new StreamInspector({ limits: { maxCaptureBytes: 4096, headBytes: 64 << 10 } });
  for (let i = 0; i < bytes.length; i += 65536) await small.write(bytes.subarray(i, i + 65536));
  const r = await small.end();
  assert.ok(
    r.findings.some((f) => f.code === 'OVER_LIMIT' && /capture limit/.test(f.message)),
    JSON.stringify(r.findings),
  );
  assert.ok(small.heldBytes <= (64 << 10) + (64 << 10) + 4096);
});

test('a resized qcow2 (L1 table moved past its L2 tables) is checked when streamed: clean is safe, a bad L2 entry is refused', async () => {
  const image = await cached('table-oracle-resized.qcow2', async (tmp) => {
    spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', tmp, '2G']);
    const r = spawnSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 0 4M', '-c', 'write -P 2 1G 4M', tmp], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    spawnSync('qemu-img', ['resize', '-q', tmp, '1T']);
  });
  const bytes = readFileSync(image);
  const l1 = Number(bytes.readBigUInt64BE(40));
  const l2 = Number(bytes.readBigUInt64BE(l1 + 16) & 0x00fffffffffffe00n); // the table of the data at 1 GiB (512 MiB per L2 table)
  assert.ok(l2 > 1 << 20 && l2 < l1, `the L2 table (${l2}) lies past the stream head and before the L1 table (${l1})`);
  assert.equal(qemuBroken(KINDS[0]!, image), false);
  for (const chunk of [4096, 65536]) {
    const r = await streamed(bytes, chunk);
    assert.equal(r.verdict, 'safe', `chunk ${chunk}: ${JSON.stringify(r.findings)}`);
  }
  const bad = Buffer.from(bytes);
  bad.writeBigUInt64BE(0x8000000000000000n | (100n << 20n), l2);
  const file = fixturePath('table-oracle-resized-bad.qcow2');
  writeFileSync(file, bad);
  assert.equal(qemuBroken(KINDS[0]!, file), true);
  for (const r of [await inspectSource(new BufferSource(bad)), await streamed(bad, 65536)]) {
    assert.ok(
      r.findings.some((f) => f.code === 'OFFSET_PAST_END' && f.message.startsWith(`qcow2 L2 table at ${l2}, entry 0:`)),
      JSON.stringify(r.findings),
    );
  }
});

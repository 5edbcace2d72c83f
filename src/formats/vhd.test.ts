/**
 * VHD: qemu-img fixtures (compared with `qemu-img info`), hostile images crafted from them byte
 * by byte, and every case fed to the stream inspector at every chunk size.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { test } from 'node:test';
import { cached, qemuCreate, qemuInfo } from '../../test/support/qemu.js';
import { assertStreamMatches, inspectBytes } from '../../test/support/stream.js';
import type { FindingCode } from './findings.js';
import { type InspectionReport } from './inspect-source.js';
import { hostileCases, type HostileCase } from './format-cases.js';

const CASES = { format: 'vhd', byteWiseUntil: 256 << 10 } as const;

const codes = (r: InspectionReport) => r.findings.map((f) => f.code);

/** footer / dynamic header checksum: one's complement of the byte sum with the field zeroed */
function fixChecksum(b: Buffer, at: number, len: number, field: number): void {
  b.writeUInt32BE(0, at + field);
  let sum = 0;
  for (let i = at; i < at + len; i++) sum = (sum + b[i]!) >>> 0;
  b.writeUInt32BE(~sum >>> 0, at + field);
}

/** Patches every footer copy (0 when present, and the end), then fixes their checksums. */
function patchFooters(b: Buffer, patch: (b: Buffer, at: number) => void): Buffer {
  const ats = [b.length - 512];
  if (b.subarray(0, 8).toString('latin1') === 'conectix') ats.unshift(0);
  for (const at of ats) {
    patch(b, at);
    fixChecksum(b, at, 512, 64);
  }
  return b;
}

/** Patches the dynamic header (at the footer's data offset), then fixes its checksum. */
function patchDynamic(b: Buffer, patch: (b: Buffer, at: number) => void): Buffer {
  const at = Number(b.readBigUInt64BE(16));
  patch(b, at);
  fixChecksum(b, at, 1024, 36);
  return b;
}

// ---- qemu-img fixtures: every subformat and option qemu-img can create ----
const QEMU: { name: string; size: string; options?: string[]; subformat: string }[] = [
  { name: 'vhd-dyn-1g.vhd', size: '1G', subformat: 'dynamic' },
  { name: 'vhd-dyn-10g.vhd', size: '10G', subformat: 'dynamic' },
  { name: 'vhd-dyn-127m.vhd', size: '127M', subformat: 'dynamic' },
  { name: 'vhd-dyn-127m-force.vhd', size: '127M', options: ['force_size=on'], subformat: 'dynamic' },
  { name: 'vhd-dyn-1t.vhd', size: '1T', subformat: 'dynamic' },
  { name: 'vhd-fixed-5m.vhd', size: '5M', options: ['subformat=fixed'], subformat: 'fixed' },
  { name: 'vhd-fixed-17m-force.vhd', size: '17M', options: ['subformat=fixed,force_size=on'], subformat: 'fixed' },
];

for (const q of QEMU) {
  test(`qemu-img ${q.name}: format, subformat and virtual size as qemu-img info -f vpc`, async () => {
    const file = await qemuCreate(q.name, 'vpc', q.size, q.options);
    const bytes = readFileSync(file);
    const r = await inspectBytes(bytes);
    // qemu's autodetection only sees the footer copy at 0, so a fixed VHD is "raw" to it: force vpc
    const info = await qemuInfo(file, 'vpc');
    assert.equal(info.format, 'vpc');
    assert.equal(r.format, 'vhd');
    assert.equal(r.subformat, q.subformat);
    assert.equal(r.virtualSize, BigInt(info['virtual-size']));
    assert.equal(r.verdict, 'safe', JSON.stringify(r.findings));
    assert.deepEqual(r.findings, []);
    if (q.subformat === 'dynamic') assert.equal((await qemuInfo(file)).format, 'vpc', 'qemu autodetects dynamic VHD');
    await streamMatchesHere(bytes, r);
  });
}

test('details: footer, dynamic header, the qemu sizing rule', async () => {
  const r = await inspectBytes(readFileSync(await qemuCreate('vhd-dyn-127m.vhd', 'vpc', '127M')));
  const d = r.details;
  assert.equal(d.footerAt, 'start+end');
  assert.equal(d.creatorApplication, 'qemu');
  assert.equal(d.sizeFrom, 'geometry');
  assert.equal(d.currentSize, 133171200n, 'qemu writes the CHS size as current size');
  assert.deepEqual(d.geometry, { cylinders: 1020, heads: 15, sectorsPerTrack: 17 });
  assert.equal(d.blockSize, 2 * 1024 * 1024);
  assert.equal(d.tableOffset, 1536n);
  assert.equal(d.formatVersion, '1.0');
  const forced = await inspectBytes(readFileSync(await qemuCreate('vhd-dyn-127m-force.vhd', 'vpc', '127M', ['force_size=on'])));
  assert.equal(forced.details.creatorApplication, 'qem2');
  assert.equal(forced.details.sizeFrom, 'current size');
  const fixed = await inspectBytes(readFileSync(await qemuCreate('vhd-fixed-5m.vhd', 'vpc', '5M', ['subformat=fixed'])));
  assert.equal(fixed.details.footerAt, 'end');
  assert.equal(fixed.details.dataOffset, undefined);
});

// ---- crafted images that qemu still reads: the sizing rules ----
const dyn127 = () => qemuCreate('vhd-dyn-127m.vhd', 'vpc', '127M');
const fixed5 = () => qemuCreate('vhd-fixed-5m.vhd', 'vpc', '5M', ['subformat=fixed']);
const crafted = (name: string, base: () => Promise<string>, patch: (b: Buffer) => Buffer) =>
  cached(name, async (tmp) => writeFileSync(tmp, patch(readFileSync(await base()))));

const SIZING: { name: string; make: () => Promise<string>; sizeFrom: string }[] = [
  // Hyper-V ('win ') writes the real size in current size; CHS would truncate the disk
  {
    name: 'creator win',
    make: () => crafted('vhd-win.vhd', dyn127, (b) => patchFooters(b, (x, at) => void x.write('win ', at + 28, 'latin1'))),
    sizeFrom: 'current size',
  },
  {
    name: 'creator tap\\0 (XenServer)',
    make: () => crafted('vhd-tap.vhd', dyn127, (b) => patchFooters(b, (x, at) => void x.write('tap\0', at + 28, 'latin1'))),
    sizeFrom: 'current size',
  },
  {
    name: 'creator vpc',
    make: () => crafted('vhd-vpc.vhd', dyn127, (b) => patchFooters(b, (x, at) => void x.write('vpc ', at + 28, 'latin1'))),
    sizeFrom: 'geometry',
  },
  {
    name: 'maximum geometry 65535×16×255',
    make: () => crafted('vhd-maxchs.vhd', dyn127, (b) => patchFooters(b, (x, at) => void x.writeUInt32BE(((65535 << 16) | (16 << 8) | 255) >>> 0, at + 56))),
    sizeFrom: 'current size',
  },
  {
    name: 'fixed, creator d2v',
    make: () => crafted('vhd-d2v-fixed.vhd', fixed5, (b) => patchFooters(b, (x, at) => void x.write('d2v ', at + 28, 'latin1'))),
    sizeFrom: 'current size',
  },
];

for (const c of SIZING) {
  test(`sizing as qemu: ${c.name}`, async () => {
    const file = await c.make();
    const r = await inspectBytes(readFileSync(file));
    assert.equal(r.details.sizeFrom, c.sizeFrom);
    assert.equal(r.virtualSize, BigInt((await qemuInfo(file, 'vpc'))['virtual-size']));
    assert.equal(r.verdict, 'safe', JSON.stringify(r.findings));
  });
}

test('the 511-byte footer of early Virtual PC is found at the end', async () => {
  const b = readFileSync(await fixed5());
  const short = b.subarray(0, b.length - 1); // the last footer byte is reserved padding
  const r = await inspectBytes(short);
  assert.equal(r.format, 'vhd');
  assert.equal(r.details.footerBytes, 511);
  assert.equal(r.virtualSize, (await inspectBytes(b)).virtualSize);
  assert.equal(r.verdict, 'safe', JSON.stringify(r.findings));
  await streamMatchesHere(short, r);
});

// ---- hostile and damaged images ----

const copy = async (f: () => Promise<string>) => Buffer.from(readFileSync(await f()));

const HOSTILE: HostileCase[] = [
  {
    name: 'differencing disk with a parent name and a W2ru locator',
    code: 'DIFFERENCING_DISK',
    bytes: async () => {
      const b = patchFooters(await copy(dyn127), (x, at) => void x.writeUInt32BE(4, at + 60));
      return patchDynamic(b, (x, at) => {
        Buffer.from('parent.vhd', 'utf16le')
          .swap16()
          .copy(x, at + 64); // UTF-16BE
        x.write('W2ru', at + 576, 'latin1');
        x.writeUInt32BE(512, at + 580);
        x.writeUInt32BE(24, at + 584);
        x.writeBigUInt64BE(1536n, at + 592);
      });
    },
  },
  { name: 'footer checksum wrong', code: 'CHECKSUM_MISMATCH', bytes: async () => flip(await copy(fixed5), -512 + 30) },
  { name: 'dynamic header checksum wrong', code: 'CHECKSUM_MISMATCH', bytes: async () => flip(await copy(dyn127), 512 + 32 + 3) },
  {
    name: 'BAT past the end',
    code: 'OFFSET_PAST_END',
    bytes: async () => patchDynamic(await copy(dyn127), (x, at) => void x.writeBigUInt64BE(1n << 40n, at + 16)),
  },
  {
    name: 'dynamic header past the end',
    code: 'OFFSET_PAST_END',
    bytes: async () => patchFooters(await copy(dyn127), (x, at) => void x.writeBigUInt64BE(1n << 40n, at + 16)),
  },
  {
    name: 'BAT of 2^31 entries',
    code: 'OVER_LIMIT',
    bytes: async () => patchDynamic(await copy(dyn127), (x, at) => void x.writeUInt32BE(0x80000000, at + 28)),
  },
  { name: 'BAT over a lowered table limit', code: 'OVER_LIMIT', bytes: () => copy(dyn127), opts: { limits: { maxTableEntries: 10 } } },
  { name: 'unknown disk type 5', code: 'MALFORMED_HEADER', bytes: async () => patchFooters(await copy(dyn127), (x, at) => void x.writeUInt32BE(5, at + 60)) },
  { name: 'block size 3000', code: 'MALFORMED_HEADER', bytes: async () => patchDynamic(await copy(dyn127), (x, at) => void x.writeUInt32BE(3000, at + 32)) },
  {
    name: 'BAT too small for the disk',
    code: 'MALFORMED_HEADER',
    bytes: async () => patchDynamic(await copy(dyn127), (x, at) => void x.writeUInt32BE(2, at + 28)),
  },
  {
    name: 'footer copies that disagree on the disk type',
    code: 'MALFORMED_HEADER',
    bytes: async () => {
      const b = await copy(dyn127);
      b.writeUInt32BE(2, b.length - 512 + 60);
      fixChecksum(b, b.length - 512, 512, 64);
      return b;
    },
  },
  {
    name: 'over the 2040 GiB VHD maximum',
    code: 'MALFORMED_HEADER',
    bytes: async () =>
      patchFooters(await copy(dyn127), (x, at) => {
        x.write('win ', at + 28, 'latin1');
        x.writeBigUInt64BE(4n << 40n, at + 48);
      }),
  },
  { name: 'dynamic disk without its end footer', code: 'TRUNCATED', bytes: async () => (await copy(dyn127)).subarray(0, 2048) },
  {
    name: 'fixed disk cut short (footer kept)',
    code: 'TRUNCATED',
    bytes: async () => {
      const b = await copy(fixed5);
      return Buffer.concat([b.subarray(0, 1 << 20), b.subarray(b.length - 512)]);
    },
  },
];

function flip(b: Buffer, at: number): Buffer {
  const i = at < 0 ? b.length + at : at;
  b[i] = b[i]! ^ 0xff;
  return b;
}

hostileCases(CASES, HOSTILE);

test('the differencing disk names its parent in the finding and the details', async () => {
  const r = await inspectBytes(await HOSTILE[0]!.bytes());
  assert.equal(r.subformat, 'differencing');
  assert.equal(r.details.parentName, 'parent.vhd');
  assert.match(r.findings.find((f) => f.code === 'DIFFERENCING_DISK')!.message, /differencing VHD with parent "parent\.vhd"; merge it/);
  assert.deepEqual(r.details.parentLocators, [{ platform: 'W2ru (Windows relative path, UTF-16LE)', dataSpace: 512, dataLength: 24, dataOffset: 1536n }]);
});

test('clean images raise none of the codes VHD can raise', async () => {
  const all: FindingCode[] = ['DIFFERENCING_DISK', 'CHECKSUM_MISMATCH', 'OFFSET_PAST_END', 'OVER_LIMIT', 'MALFORMED_HEADER', 'TRUNCATED'];
  for (const q of QEMU) {
    const r = await inspectBytes(readFileSync(await qemuCreate(q.name, 'vpc', q.size, q.options)));
    assert.deepEqual(
      codes(r).filter((c) => all.includes(c)),
      [],
      q.name,
    );
  }
});

test('probe: a trailing "conectix" needs a 1.x version; garbage and short inputs are not VHD', async () => {
  const b = Buffer.alloc(4096);
  b.write('conectix', 4096 - 512, 'latin1');
  assert.equal((await inspectBytes(b)).format, 'raw');
  b.writeUInt32BE(0x00010000, 4096 - 512 + 12);
  assert.equal((await inspectBytes(b)).format, 'vhd');
  assert.equal((await inspectBytes(Buffer.from('conecti'))).format, 'raw');
  const r = await inspectBytes(Buffer.from('conectix'));
  assert.equal(r.format, 'vhd');
  assert.equal(r.verdict, 'refused');
});

function streamMatchesHere(
  bytes: Uint8Array,
  ref: Parameters<typeof assertStreamMatches>[1],
  opts: Parameters<typeof assertStreamMatches>[2] = {},
): Promise<void> {
  return assertStreamMatches(bytes, ref, opts, 256 << 10);
}

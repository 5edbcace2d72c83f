/**
 * VDI: qemu-img fixtures (compared with `qemu-img info`), hostile images crafted from them byte
 * by byte, and every case fed to the stream inspector at every chunk size.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { test } from 'node:test';
import { cached, qemuCreate, qemuInfo } from '../../test/support/qemu.js';
import { inspectBytes } from '../../test/support/stream.js';
import type { FindingCode } from './findings.js';
import { hostileCases, qemuCases, type HostileCase, type QemuCase } from './format-cases.js';

const CASES = { format: 'vdi', byteWiseUntil: 64 << 10 } as const;

const QEMU: QemuCase[] = [
  { name: 'vdi-dyn-1g.vdi', size: '1G', subformat: 'dynamic' },
  { name: 'vdi-dyn-127m.vdi', size: '127M', subformat: 'dynamic' },
  { name: 'vdi-dyn-odd.vdi', size: '1000001K', subformat: 'dynamic' },
  { name: 'vdi-static-16m.vdi', size: '16M', options: ['static=on'], subformat: 'static' },
  { name: 'vdi-static-3m.vdi', size: '3M', options: ['static=on'], subformat: 'static' },
  { name: 'vdi-dyn-1t.vdi', size: '1T', subformat: 'dynamic' },
];

qemuCases(CASES, QEMU);

test('details: header fields', async () => {
  const r = await inspectBytes(readFileSync(await qemuCreate('vdi-static-16m.vdi', 'vdi', '16M', ['static=on'])));
  const d = r.details as Record<string, unknown>;
  assert.equal(d.text, '<<< QEMU VM Virtual Disk Image >>>');
  assert.equal(d.version, '1.1');
  assert.equal(d.imageType, 'static');
  assert.equal(d.blockMapOffset, 512);
  assert.equal(d.blockSize, 1 << 20);
  assert.equal(d.blocksInImage, 16);
  assert.equal(d.blocksAllocated, 16);
  assert.match(String(d.uuid), /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  assert.equal(d.parentUuid, undefined);
});

const dyn = async () => Buffer.from(readFileSync(await qemuCreate('vdi-dyn-127m.vdi', 'vdi', '127M')));
const stat = async () => Buffer.from(readFileSync(await qemuCreate('vdi-static-3m.vdi', 'vdi', '3M', ['static=on'])));

test('an odd disk size (VBoxManage convertfromraw makes them) is rounded up to whole sectors, as qemu does', async () => {
  const file = await cached('vdi-odd-size.vdi', async (tmp) => {
    const b = await dyn();
    b.writeBigUInt64LE(127n * 1024n * 1024n - 100n, 368);
    writeFileSync(tmp, b);
  });
  const r = await inspectBytes(readFileSync(file));
  assert.equal(r.virtualSize, BigInt((await qemuInfo(file))['virtual-size']));
  assert.equal(r.virtualSize, 127n * 1024n * 1024n);
});

const HOSTILE: HostileCase[] = [
  {
    name: 'diff image with a parent UUID',
    code: 'DIFFERENCING_DISK',
    bytes: async () => {
      const b = await dyn();
      b.writeUInt32LE(4, 76);
      b.fill(0x42, 440, 456);
      return b;
    },
  },
  { name: 'normal image with a link UUID', code: 'DIFFERENCING_DISK', bytes: async () => ((b) => (b.fill(0x17, 424, 440), b))(await dyn()) },
  { name: 'undo image', code: 'DIFFERENCING_DISK', bytes: async () => ((b) => (b.writeUInt32LE(3, 76), b))(await dyn()) },
  { name: 'version 1.2', code: 'MALFORMED_HEADER', bytes: async () => ((b) => (b.writeUInt32LE(0x00010002, 68), b))(await dyn()) },
  { name: 'sector size 4096', code: 'MALFORMED_HEADER', bytes: async () => ((b) => (b.writeUInt32LE(4096, 360), b))(await dyn()) },
  { name: 'block size 2 MiB', code: 'MALFORMED_HEADER', bytes: async () => ((b) => (b.writeUInt32LE(2 << 20, 376), b))(await dyn()) },
  { name: 'image type 9', code: 'MALFORMED_HEADER', bytes: async () => ((b) => (b.writeUInt32LE(9, 76), b))(await dyn()) },
  { name: 'disk size larger than its blocks', code: 'MALFORMED_HEADER', bytes: async () => ((b) => (b.writeBigUInt64LE(1n << 40n, 368), b))(await dyn()) },
  { name: 'unaligned block map offset', code: 'MALFORMED_HEADER', bytes: async () => ((b) => (b.writeUInt32LE(513, 340), b))(await dyn()) },
  { name: 'block map offset past the end', code: 'OFFSET_PAST_END', bytes: async () => ((b) => (b.writeUInt32LE(0x7ffffe00, 340), b))(await dyn()) },
  { name: 'data offset past the end', code: 'OFFSET_PAST_END', bytes: async () => ((b) => (b.writeUInt32LE(0x7ffffe00, 344), b))(await dyn()) },
  {
    name: 'block map of 2^30 entries running into the data',
    code: 'OFFSET_PAST_END',
    bytes: async () => ((b) => (b.writeUInt32LE(1 << 30, 384), b))(await dyn()),
  },
  { name: 'block map of 2^30 entries', code: 'OVER_LIMIT', bytes: async () => ((b) => (b.writeUInt32LE(1 << 30, 384), b))(await dyn()) },
  { name: 'block map over a lowered table limit', code: 'OVER_LIMIT', bytes: dyn, opts: { limits: { maxTableEntries: 10 } } },
  { name: 'static image cut short', code: 'TRUNCATED', bytes: async () => (await stat()).subarray(0, 2 << 20) },
];

hostileCases(CASES, HOSTILE);

test('the differencing VDI names its parent UUID', async () => {
  const r = await inspectBytes(await HOSTILE[0]!.bytes());
  assert.equal(r.subformat, 'diff');
  assert.match(r.findings.find((f) => f.code === 'DIFFERENCING_DISK')!.message, /linked to parent 42424242-4242-4242-4242-424242424242/);
});

test('clean images raise none of the codes VDI can raise', async () => {
  const all: FindingCode[] = ['DIFFERENCING_DISK', 'OFFSET_PAST_END', 'OVER_LIMIT', 'MALFORMED_HEADER', 'TRUNCATED'];
  for (const q of QEMU) {
    const r = await inspectBytes(readFileSync(await qemuCreate(q.name, 'vdi', q.size, q.options)));
    assert.deepEqual(
      r.findings.map((f) => f.code).filter((c) => all.includes(c)),
      [],
      q.name,
    );
  }
});

test('probe: the signature at 64 is enough (as qemu); a truncated header is refused, never raw', async () => {
  const b = Buffer.alloc(100);
  b.writeUInt32LE(0xbeda107f, 64);
  const r = await inspectBytes(b);
  assert.equal(r.format, 'vdi');
  assert.equal(r.verdict, 'refused');
  assert.ok(r.findings.some((f) => f.code === 'OFFSET_PAST_END'));
  assert.equal((await inspectBytes(Buffer.alloc(100))).format, 'raw');
});

/**
 * VHDX: qemu-img fixtures (compared with `qemu-img info`), hostile images crafted from them byte
 * by byte (checksums recomputed so only the intended fault remains), and every case fed to the
 * stream inspector at every chunk size.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { qemuCreate } from '../../test/support/qemu.js';
import { inspectBytes } from '../../test/support/stream.js';
import { crc32c } from './crc32c.js';
import type { FindingCode } from './findings.js';
import { hostileCases, qemuCases, type HostileCase, type QemuCase } from './format-cases.js';

const CASES = { format: 'vhdx', byteWiseUntil: 320 << 10 } as const;

const KiB = 1024;

// ---- qemu-img fixtures ----
const QEMU: QemuCase[] = [
  { name: 'vhdx-dyn-1g.vhdx', size: '1G', subformat: 'dynamic' },
  { name: 'vhdx-dyn-127m.vhdx', size: '127M', subformat: 'dynamic' },
  { name: 'vhdx-fixed-16m.vhdx', size: '16M', options: ['subformat=fixed'], subformat: 'fixed' },
  { name: 'vhdx-bs1m-log1m-1g.vhdx', size: '1G', options: ['block_size=1M,log_size=1M'], subformat: 'dynamic' },
  { name: 'vhdx-bs256m-1g.vhdx', size: '1G', options: ['block_size=256M'], subformat: 'dynamic' },
  { name: 'vhdx-zero-off-64m.vhdx', size: '64M', options: ['block_size=1M,log_size=1M,block_state_zero=off'], subformat: 'dynamic' },
  { name: 'vhdx-1t.vhdx', size: '1T', subformat: 'dynamic' },
];

qemuCases(CASES, QEMU);

/** the image the details test reads and every hostile case starts from */
const base = async () => Buffer.from(readFileSync(await qemuCreate('vhdx-bs1m-log1m-1g.vhdx', 'vhdx', '1G', ['block_size=1M,log_size=1M'])));

test('details: headers, regions, metadata items', async () => {
  const r = await inspectBytes(await base());
  const d = r.details as Record<string, unknown>;
  assert.match(String(d.creator), /^QEMU/);
  assert.equal(d.version, 1);
  assert.equal(d.blockSize, 1 << 20);
  assert.equal(d.logicalSectorSize, 512);
  assert.equal(d.physicalSectorSize, 512);
  assert.equal(d.hasParent, false);
  assert.equal(d.leaveBlocksAllocated, false);
  assert.equal(d.logLength, 1 << 20);
  assert.equal(d.logDirty, false);
  assert.equal(d.batEntries, 1024);
  assert.deepEqual((d.regions as { name: string }[]).map((x) => x.name).sort(), ['BAT', 'metadata']);
  assert.equal((d.metadataItems as unknown[]).length, 5);
});

// ---- crafting helpers ----
const RT = 192 * KiB;

function fixRegionTable(b: Buffer): void {
  b.writeUInt32LE(crc32c(b.subarray(RT, RT + 64 * KiB), 4, 4), RT + 4);
}

/** the header with the higher sequence number (qemu-img writes both valid) */
function currentHeader(b: Buffer): number {
  return b.readBigUInt64LE(64 * KiB + 8) > b.readBigUInt64LE(128 * KiB + 8) ? 64 * KiB : 128 * KiB;
}

function fixHeader(b: Buffer, at: number): void {
  b.writeUInt32LE(crc32c(b.subarray(at, at + 4 * KiB), 4, 4), at + 4);
}

function regionEntry(b: Buffer, firstGuidWord: number): number {
  const n = b.readUInt32LE(RT + 8);
  for (let i = 0; i < n; i++) if (b.readUInt32LE(RT + 16 + i * 32) === firstGuidWord) return RT + 16 + i * 32;
  throw new Error('region not found');
}

const metaOffset = (b: Buffer) => Number(b.readBigUInt64LE(regionEntry(b, 0x8b7ca206) + 16));

function metadataItem(b: Buffer, firstGuidWord: number): { entry: number; data: number } {
  const meta = metaOffset(b);
  const n = b.readUInt16LE(meta + 10);
  for (let i = 0; i < n; i++) {
    const e = meta + 32 + i * 32;
    if (b.readUInt32LE(e) === firstGuidWord) return { entry: e, data: meta + b.readUInt32LE(e + 16) };
  }
  throw new Error('item not found');
}

/** Appends a metadata table entry (GUID bytes, offset, length, flags) and its data at `dataAt` in the region. */
function addMetadataItem(b: Buffer, guidBytes: Buffer, dataAt: number, data: Buffer, flags: number): void {
  const meta = metaOffset(b);
  const n = b.readUInt16LE(meta + 10);
  const e = meta + 32 + n * 32;
  guidBytes.copy(b, e);
  b.writeUInt32LE(dataAt, e + 16);
  b.writeUInt32LE(data.length, e + 20);
  b.writeUInt32LE(flags, e + 24);
  b.writeUInt16LE(n + 1, meta + 10);
  data.copy(b, meta + dataAt);
}

/** GUID string → the mixed-endian bytes VHDX stores */
function guidBytes(g: string): Buffer {
  const h = Buffer.from(g.replace(/-/g, ''), 'hex');
  const out = Buffer.from(h);
  out.writeUInt32LE(h.readUInt32BE(0), 0);
  out.writeUInt16LE(h.readUInt16BE(4), 4);
  out.writeUInt16LE(h.readUInt16BE(6), 6);
  return out;
}

/** A VHDX parent locator item with key/value pairs (UTF-16LE). */
function parentLocator(pairs: [string, string][]): Buffer {
  const head = Buffer.alloc(20 + pairs.length * 12);
  guidBytes('b04aefb7-d19e-4a81-b789-25b8e9445913').copy(head, 0);
  head.writeUInt16LE(pairs.length, 18);
  const strings: Buffer[] = [];
  let at = head.length;
  pairs.forEach(([k, v], i) => {
    const kb = Buffer.from(k, 'utf16le');
    const vb = Buffer.from(v, 'utf16le');
    head.writeUInt32LE(at, 20 + i * 12);
    head.writeUInt32LE(at + kb.length, 20 + i * 12 + 4);
    head.writeUInt16LE(kb.length, 20 + i * 12 + 8);
    head.writeUInt16LE(vb.length, 20 + i * 12 + 10);
    strings.push(kb, vb);
    at += kb.length + vb.length;
  });
  return Buffer.concat([head, ...strings]);
}

function flip(b: Buffer, at: number): void {
  b[at] = b[at]! ^ 0xff;
}

const PARENT_LOCATOR_ITEM = guidBytes('a8d35f2d-b30b-454d-abf7-d3d84834ab0c');
const REQUIRED = 4;

function differencing(b: Buffer): Buffer {
  const fp = metadataItem(b, 0xcaa16737);
  b.writeUInt32LE(b.readUInt32LE(fp.data + 4) | 2, fp.data + 4); // HasParent
  addMetadataItem(
    b,
    PARENT_LOCATOR_ITEM,
    64 * KiB + 4 * KiB,
    parentLocator([
      ['parent_linkage', '{83ef6ae5-bbd6-4a4d-9a43-3b37f2b5e1a1}'],
      ['relative_path', '..\\base\\parent.vhdx'],
      ['absolute_win32_path', 'C:\\images\\parent.vhdx'],
    ]),
    REQUIRED,
  );
  return b;
}

/** A hostile case's bytes: the qemu-img image (`base`) with `change` applied. */
const patched = (change: (b: Buffer) => void) => async () => {
  const b = await base();
  change(b);
  return b;
};

const HOSTILE: HostileCase[] = [
  { name: 'HasParent with a parent locator', code: 'DIFFERENCING_DISK', bytes: async () => differencing(await base()) },
  {
    name: 'HasParent alone',
    code: 'DIFFERENCING_DISK',
    bytes: patched((b) => {
      const fp = metadataItem(b, 0xcaa16737);
      b.writeUInt32LE(2, fp.data + 4);
    }),
  },
  {
    name: 'current header with a bad CRC-32C (the other one is used)',
    code: 'CHECKSUM_MISMATCH',
    severity: 'warning',
    bytes: patched((b) => {
      flip(b, currentHeader(b) + 100);
    }),
  },
  {
    name: 'both headers with a bad CRC-32C',
    code: 'CHECKSUM_MISMATCH',
    bytes: patched((b) => {
      flip(b, 64 * KiB + 100);
      flip(b, 128 * KiB + 100);
    }),
  },
  {
    name: 'region table with a bad CRC-32C',
    code: 'CHECKSUM_MISMATCH',
    bytes: patched((b) => {
      flip(b, RT + 1000);
    }),
  },
  {
    name: 'BAT region past the end',
    code: 'OFFSET_PAST_END',
    bytes: patched((b) => {
      b.writeBigUInt64LE(1n << 40n, regionEntry(b, 0x2dc27766) + 16);
      fixRegionTable(b);
    }),
  },
  {
    name: 'metadata item outside its region',
    code: 'OFFSET_PAST_END',
    bytes: patched((b) => {
      b.writeUInt32LE(0x7fff0000, metadataItem(b, 0x8141bf1d).entry + 16);
    }),
  },
  {
    name: 'region table of 3000 entries',
    code: 'OVER_LIMIT',
    bytes: patched((b) => {
      b.writeUInt32LE(3000, RT + 8);
      fixRegionTable(b);
    }),
  },
  { name: 'BAT over a lowered table limit', code: 'OVER_LIMIT', bytes: base, opts: { limits: { maxTableEntries: 100 } } },
  {
    name: 'unknown required region',
    code: 'UNKNOWN_FEATURES',
    bytes: async () => {
      const b = await base();
      const n = b.readUInt32LE(RT + 8);
      const e = RT + 16 + n * 32;
      guidBytes('11111111-2222-3333-4444-555555555555').copy(b, e);
      b.writeBigUInt64LE(BigInt(6 << 20), e + 16);
      b.writeUInt32LE(1 << 20, e + 24);
      b.writeUInt32LE(1, e + 28);
      b.writeUInt32LE(n + 1, RT + 8);
      fixRegionTable(b);
      return Buffer.concat([b, Buffer.alloc(8 << 20)]);
    },
  },
  {
    name: 'unknown required metadata item',
    code: 'UNKNOWN_FEATURES',
    bytes: patched((b) => {
      addMetadataItem(b, guidBytes('66666666-7777-8888-9999-aaaaaaaaaaaa'), 64 * KiB + 8 * KiB, Buffer.alloc(8, 1), REQUIRED);
    }),
  },
  {
    name: 'block size 3 MiB',
    code: 'MALFORMED_HEADER',
    bytes: patched((b) => {
      b.writeUInt32LE(3 << 20, metadataItem(b, 0xcaa16737).data);
    }),
  },
  {
    name: 'logical sector size 1000',
    code: 'MALFORMED_HEADER',
    bytes: patched((b) => {
      b.writeUInt32LE(1000, metadataItem(b, 0x8141bf1d).data);
    }),
  },
  {
    name: 'BAT region overlapping the metadata region',
    code: 'MALFORMED_HEADER',
    bytes: patched((b) => {
      b.writeBigUInt64LE(BigInt(metaOffset(b)), regionEntry(b, 0x2dc27766) + 16);
      fixRegionTable(b);
    }),
  },
  {
    name: 'log holding entries to replay (log GUID set)',
    code: 'CORRUPT_IMAGE',
    severity: 'warning',
    bytes: patched((b) => {
      const at = currentHeader(b);
      b.fill(0x5a, at + 48, at + 64);
      fixHeader(b, at);
    }),
  },
];

hostileCases(CASES, HOSTILE);

test('the differencing disk names its parent', async () => {
  const r = await inspectBytes(differencing(await base()));
  assert.equal(r.subformat, 'differencing');
  const d = r.details as { parentLocator?: { type: string; entries: Record<string, string> } };
  assert.equal(d.parentLocator?.type, 'vhdx');
  assert.equal(d.parentLocator?.entries.relative_path, '..\\base\\parent.vhdx');
  assert.match(r.findings.find((f) => f.code === 'DIFFERENCING_DISK')!.message, /parent "\.\.\\\\base\\\\parent\.vhdx"; merge it/);
});

test('clean images raise none of the codes VHDX can raise', async () => {
  const all: FindingCode[] = [
    'DIFFERENCING_DISK',
    'CHECKSUM_MISMATCH',
    'OFFSET_PAST_END',
    'OVER_LIMIT',
    'MALFORMED_HEADER',
    'UNKNOWN_FEATURES',
    'CORRUPT_IMAGE',
  ];
  for (const q of QEMU) {
    const r = await inspectBytes(readFileSync(await qemuCreate(q.name, 'vhdx', q.size, q.options)));
    assert.deepEqual(
      r.findings.map((f) => f.code).filter((c) => all.includes(c)),
      [],
      q.name,
    );
  }
});

test('truncated: a VHDX cut inside its headers is refused, never raw', async () => {
  const b = (await base()).subarray(0, 100 * KiB);
  const r = await inspectBytes(b);
  assert.equal(r.format, 'vhdx');
  assert.equal(r.verdict, 'refused');
  assert.ok(
    r.findings.some((f) => f.code === 'OFFSET_PAST_END'),
    JSON.stringify(r.findings),
  );
});

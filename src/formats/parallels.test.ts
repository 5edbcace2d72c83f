/**
 * Parallels / ploop: qemu-img fixtures (compared with `qemu-img info`), hostile images crafted
 * from them byte by byte, and every case fed to the stream inspector at every chunk size.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { test } from 'node:test';
import { cached, qemuCreate, qemuInfo } from '../../test/support/qemu.js';
import { assertStreamMatches, inspectBytes } from '../../test/support/stream.js';
import type { FindingCode } from './findings.js';
import { hostileCases, qemuCases, type HostileCase, type QemuCase } from './format-cases.js';

const CASES = { format: 'parallels', byteWiseUntil: 64 << 10 } as const;

const QEMU: QemuCase[] = [
  { name: 'parallels-1g.hdd', size: '1G' },
  { name: 'parallels-127m.hdd', size: '127M' },
  { name: 'parallels-c64k-256m.hdd', size: '256M', options: ['cluster_size=64K'] },
  { name: 'parallels-1t.hdd', size: '1T' },
];

qemuCases(CASES, QEMU);

const base = async () => Buffer.from(readFileSync(await qemuCreate('parallels-127m.hdd', 'parallels', '127M')));

test('details: header fields', async () => {
  const r = await inspectBytes(await base());
  const d = r.details as Record<string, unknown>;
  assert.equal(d.magic, 'WithouFreSpacExt');
  assert.equal(d.version, 2);
  assert.equal(d.clusterSize, 1 << 20);
  assert.equal(d.batEntries, 127);
  assert.equal(d.nbSectors, 127n * 2048n);
  assert.equal(d.inUse, false);
  assert.equal(d.extensionOffset, undefined);
});

test('legacy "WithoutFreeSpace" magic: only the low 32 bits of nb_sectors count, as qemu', async () => {
  const file = await cached('parallels-legacy.hdd', async (tmp) => {
    const b = await base();
    b.write('WithoutFreeSpace', 0, 'latin1');
    b.writeBigUInt64LE((1n << 32n) + 127n * 2048n, 36);
    writeFileSync(tmp, b);
  });
  const bytes = readFileSync(file);
  const r = await inspectBytes(bytes);
  assert.equal(r.format, 'parallels');
  assert.equal(r.virtualSize, BigInt((await qemuInfo(file))['virtual-size']));
  assert.equal(r.virtualSize, 127n << 20n);
  assert.equal(r.verdict, 'safe', JSON.stringify(r.findings));
  await streamMatchesHere(bytes, r);
});

const set32 = (at: number, v: number) => async () => ((b: Buffer) => (b.writeUInt32LE(v >>> 0, at), b))(await base());

const HOSTILE: HostileCase[] = [
  { name: 'BAT of 2^30 entries', code: 'OVER_LIMIT', bytes: set32(32, 1 << 30) },
  { name: 'BAT over a lowered table limit', code: 'OVER_LIMIT', bytes: base, opts: { limits: { maxTableEntries: 10 } } },
  { name: 'BAT of 2^22 entries past the end', code: 'OFFSET_PAST_END', bytes: set32(32, 1 << 22) },
  { name: 'data offset past the end', code: 'OFFSET_PAST_END', bytes: set32(48, 0x10000000) },
  { name: 'format extension past the end', code: 'OFFSET_PAST_END', bytes: async () => ((b) => (b.writeBigUInt64LE(1n << 40n, 56), b))(await base()) },
  { name: 'zero sectors per cluster', code: 'MALFORMED_HEADER', bytes: set32(28, 0) },
  { name: 'cluster too big', code: 'MALFORMED_HEADER', bytes: set32(28, 1 << 23) },
  { name: 'BAT too small for the disk size', code: 'MALFORMED_HEADER', bytes: set32(32, 3) },
  { name: 'data offset inside the BAT', code: 'MALFORMED_HEADER', bytes: set32(48, 1) },
  { name: 'copied while in use', code: 'CORRUPT_IMAGE', severity: 'warning', bytes: set32(44, 0x746f6e59) },
];

hostileCases(CASES, HOSTILE);

test('clean images raise none of the codes parallels can raise', async () => {
  const all: FindingCode[] = ['OFFSET_PAST_END', 'OVER_LIMIT', 'MALFORMED_HEADER', 'CORRUPT_IMAGE'];
  for (const q of QEMU) {
    const r = await inspectBytes(readFileSync(await qemuCreate(q.name, 'parallels', q.size, q.options)));
    assert.deepEqual(
      r.findings.map((f) => f.code).filter((c) => all.includes(c)),
      [],
      q.name,
    );
  }
});

test('probe: magic and version 2, exactly as qemu', async () => {
  const b = Buffer.alloc(4096);
  b.write('WithouFreSpacExt', 0, 'latin1');
  assert.equal((await inspectBytes(b)).format, 'raw', 'version 0');
  b.writeUInt32LE(2, 16);
  const r = await inspectBytes(b);
  assert.equal(r.format, 'parallels');
  assert.equal(r.verdict, 'refused', 'zero sectors per cluster');
  assert.equal((await inspectBytes(b.subarray(0, 19))).format, 'raw');
});

function streamMatchesHere(
  bytes: Uint8Array,
  ref: Parameters<typeof assertStreamMatches>[1],
  opts: Parameters<typeof assertStreamMatches>[2] = {},
): Promise<void> {
  return assertStreamMatches(bytes, ref, opts, 64 << 10);
}

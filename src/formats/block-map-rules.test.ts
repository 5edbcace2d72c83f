import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  checkTables,
  entryError,
  qcow2L1Rule,
  qcow2L2Rule,
  scanTable,
  TableScanner,
  vdiMapRule,
  vhdxBatRule,
  vhdxWholeBlock,
  vmdkGdRule,
} from './block-map-rules.js';
import { BufferSource, view } from './byte-source.js';

const g = { clusterSize: 65536, extendedL2: false, l1Offset: 196608, l1Bytes: 8 };

function be64(values: bigint[]): Uint8Array {
  const b = new Uint8Array(values.length * 8);
  values.forEach((v, i) => view(b).setBigUint64(i * 8, v));
  return b;
}

test('a scan fed in pieces of any size (1, 3, 17 bytes, whole) gives the same result', () => {
  const map = new Uint8Array(4 * 300);
  for (let i = 0; i < 300; i++) view(map).setUint32(i * 4, i % 7 === 0 ? 0xffffffff : (i * 13) % 290, true);
  view(map).setUint32(4 * 123, 5000, true); // past the 300 blocks: a problem
  const rule = vdiMapRule({ dataOffset: 1 << 20, blockSize: 1 << 20, blocks: 300 });
  const whole = new TableScanner(rule);
  whole.update(map);
  for (const size of [1, 3, 17]) {
    const s = new TableScanner(rule);
    for (let i = 0; i < map.length; i += size) s.update(map.subarray(i, i + size));
    assert.deepEqual(s.result, whole.result, `pieces of ${size}`);
  }
  assert.equal(whole.result.entries, 300);
  assert.equal(whole.result.maxNeed, (1 << 20) + 289 * (1 << 20) + 1);
  assert.deepEqual(whole.result.problem, { index: 123, message: 'maps to data block 5000, past the 300 blocks of the image' });
});

/** The scan as `check` says entry by entry, with no shortcut: what TableScanner must agree with. */
function referenceScan(rule: Parameters<typeof scanTable>[3], bytes: Uint8Array) {
  let maxNeed = 0;
  let worst: { index: number; offset: number; what: string } | undefined;
  let problem: { index: number; message: string } | undefined;
  const entries = Math.floor(bytes.length / rule.entryBytes);
  for (let i = 0; i < entries; i++) {
    const c = rule.check(view(bytes), i * rule.entryBytes, i, true);
    if (typeof c === 'string') problem ??= { index: i, message: c };
    else if (c > maxNeed) {
      maxNeed = c;
      worst = { index: i, offset: c - rule.span, what: rule.what };
    }
  }
  return { entries, maxNeed, ...(worst ? { worst } : {}), ...(problem ? { problem } : {}) };
}

test('runs of zero entries are counted at once, at any alignment, and agree with checking each entry', () => {
  // mostly zeros, as in a young image, with mapped entries and a bad one in between
  const l1 = new Uint8Array(8 * 5000);
  view(l1).setBigUint64(8 * 7, 0x80000000_00040000n); // an L2 table at 262144
  view(l1).setBigUint64(8 * 4095, 0x80000000_00060000n); // the largest need
  view(l1).setBigUint64(8 * 4096, 0x00000000_00041000n); // not cluster-aligned: a problem
  const gd = new Uint8Array(4 * 3001);
  view(gd).setUint32(4 * 3000, 1000, true); // the very last entry
  // a zero entry is a problem or a need here: no shortcut may apply
  const vdi = new Uint8Array(4 * 64);
  const cases = [
    { rule: qcow2L1Rule({ ...g, l1Bytes: l1.length }), bytes: l1 },
    { rule: vmdkGdRule(512, 0), bytes: gd },
    { rule: vdiMapRule({ dataOffset: 1 << 20, blockSize: 1 << 20, blocks: 8 }), bytes: vdi },
  ];
  for (const { rule, bytes } of cases) {
    const expected = referenceScan(rule, bytes);
    for (const shift of [0, 1, 2, 3, 4]) {
      // the same bytes at every byte alignment of the underlying buffer
      const shifted = new Uint8Array(bytes.length + shift).subarray(shift);
      shifted.set(bytes);
      for (const size of [1, 3, 8, 17, 4096, bytes.length]) {
        const s = new TableScanner(rule);
        for (let i = 0; i < shifted.length; i += size) s.update(shifted.subarray(i, i + size));
        assert.deepEqual(s.result, expected, `${rule.table}, shift ${shift}, pieces of ${size}`);
      }
    }
  }
  assert.equal(referenceScan(cases[0]!.rule, l1).entries, 5000);
  assert.equal(referenceScan(cases[0]!.rule, l1).problem?.index, 4096);
  assert.equal(referenceScan(cases[0]!.rule, l1).maxNeed, 0x60000 + 65536);
  assert.equal(referenceScan(cases[1]!.rule, gd).maxNeed, 1000 * 512 + 512 * 4);
  assert.equal(referenceScan(cases[2]!.rule, vdi).maxNeed, (1 << 20) + 1); // block 0
});

test('qcow2 L2 entries: data and compressed clusters need their first byte; bad ones are problems', () => {
  const rule = qcow2L2Rule(g, 262144);
  const check = (e: bigint) => rule.check(view(be64([e])), 0, 0);
  assert.equal(check(0n), 0);
  assert.equal(check(1n), 0); // reads as zero, no host cluster
  assert.equal(check((1n << 63n) | 327680n), 327681);
  assert.match(String(check((1n << 63n) | 328192n)), /not aligned/);
  assert.match(String(check((1n << 63n) | 196608n)), /overlaps the L1 table/);
  assert.match(String(check((1n << 63n) | 262144n)), /its own L2 table/);
  assert.match(String(check((1n << 62n) | 100n)), /compressed cluster .* header cluster/);
  assert.equal(check((1n << 62n) | 400000n), 400001);
  const l1 = qcow2L1Rule(g);
  assert.equal(l1.check(view(be64([(1n << 63n) | 262144n])), 0, 0), 262144 + 65536);
});

test('the reader side: entryError says which structure lies past the end', () => {
  const rule = qcow2L2Rule(g, 262144);
  const c = rule.check(view(be64([(1n << 63n) | 9961472n])), 0, 0);
  assert.match(entryError(c, rule, 300000)!, /data cluster at offset 9961472 lies past the end of the 300000-byte file/);
  assert.equal(entryError(c, rule, 20_000_000), undefined);
  // a VHDX block must fit whole (qemu: "BAT entry offset points after end of file")
  const bat = vhdxBatRule(2 << 20, 1 << 20);
  const e = new Uint8Array(8);
  view(e).setBigUint64(0, (8n << 20n) | 6n, true);
  const whole = vhdxWholeBlock(bat.check(view(e), 0, 0), 8 << 20);
  assert.equal(whole, 16 << 20);
  assert.match(entryError(whole, bat, 12 << 20, 8 << 20)!, /block at offset 8388608 lies past the end/);
  view(e).setBigUint64(0, (8n << 20n) | 4n, true);
  assert.match(String(bat.check(view(e), 0, 0)), /invalid state 4/);
});

test('checkTables: findings name the table and the entry; over maxTableScanBytes is OVER_LIMIT', async () => {
  const image = new Uint8Array(8192);
  view(image).setUint32(512, 40, true); // grain table at sector 40 (byte 20480): past the 8192-byte image
  const src = new BufferSource(image);
  const rule = vmdkGdRule(512, 512);
  const f = await checkTables(src, [{ offset: 512, length: 8, rule }], 1 << 20, 'VMDK');
  assert.equal(f.length, 1);
  assert.equal(f[0]!.code, 'OFFSET_PAST_END');
  assert.match(f[0]!.message, /^VMDK grain directory at 512, entry 0: grain table at offset 20480 lies past the end of the 8192-byte image/);
  assert.match(f[0]!.message, /qemu-img convert/);
  const over = await checkTables(src, [{ offset: 512, length: 8, rule }], 4, 'VMDK');
  assert.equal(over[0]!.code, 'OVER_LIMIT');
  // a table cut short by the end scans what there is
  assert.equal((await scanTable(src, 8188, 64, rule)).entries, 1);
});

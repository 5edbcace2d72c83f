/**
 * Issue 18, item 2: inconsistent images are not `safe`. Oracle: qemu-img. A corpus made by
 * qemu-img (qcow2, vmdk monolithicSparse and streamOptimized, vhd dynamic, vhdx, vdi, all with
 * data) is truncated at many offsets and has table entries pointed past the end (or past the
 * block map); whenever qemu-img
 * finds the result corrupt or unreadable (`qemu-img check` where qemu supports it, `qemu-img
 * convert -O raw` for vpc), Imago refuses it — through `inspectFile` (random access) and through
 * the stream inspector (the ingest path). Clean images stay clean.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { test } from 'node:test';
import { inspectSource } from '../src/formats/inspect-source.js';
import { BufferSource } from '../src/formats/byte-source.js';
import { StreamInspector } from '../src/formats/stream-inspector.js';
import { cached, fixturePath, patternedRaw, qemuConvert } from './support/qemu.js';

interface Kind {
  name: string;
  qemu: string;
  options: string[];
  /** qemu-img check supports it; otherwise convert -O raw is the oracle */
  check: boolean;
  /** offset of a table entry to point past the end, and the entry it writes */
  corrupt(b: Buffer): { at: number; write(b: Buffer, size: number): void } | undefined;
}

const KINDS: Kind[] = [
  {
    name: 'qcow2',
    qemu: 'qcow2',
    options: [],
    check: true,
    corrupt(b) {
      const l1 = Number(b.readBigUInt64BE(40));
      const l2 = Number(b.readBigUInt64BE(l1) & 0x00fffffffffffe00n);
      return { at: l2 + 8, write: (x, size) => x.writeBigUInt64BE(0x8000000000000000n | BigInt(Math.ceil(size / 65536) * 65536 + 65536 * 4), l2 + 8) };
    },
  },
  {
    name: 'vmdk monolithicSparse',
    qemu: 'vmdk',
    options: ['subformat=monolithicSparse'],
    check: true,
    corrupt(b) {
      const gd = Number(b.readBigUInt64LE(56)) * 512;
      const gt = b.readUInt32LE(gd) * 512;
      return { at: gt + 4, write: (x, size) => x.writeUInt32LE(Math.ceil(size / 512) + 64, gt + 4) };
    },
  },
  {
    name: 'vmdk streamOptimized',
    qemu: 'vmdk',
    options: ['subformat=streamOptimized'],
    check: true,
    corrupt: () => undefined,
  },
  {
    name: 'vhd dynamic',
    qemu: 'vpc',
    options: ['subformat=dynamic'],
    check: false,
    corrupt(b) {
      const bat = Number(b.readBigUInt64BE(512 + 16));
      return { at: bat, write: (x, size) => x.writeUInt32BE(Math.ceil(size / 512) + 64, bat) };
    },
  },
  {
    name: 'vhdx',
    qemu: 'vhdx',
    options: [],
    check: true,
    corrupt: () => undefined,
  },
  {
    name: 'vdi',
    qemu: 'vdi',
    options: [],
    check: true,
    corrupt(b) {
      const map = b.readUInt32LE(340);
      const blocks = b.readUInt32LE(384);
      // qemu-img check: "block index too large"
      return { at: map, write: (x) => x.writeUInt32LE(blocks, map) };
    },
  },
];

/** qemu-img's verdict: true when it finds the image corrupt or cannot read it. */
function qemuBroken(kind: Kind, file: string): boolean {
  if (kind.check) {
    const r = spawnSync('qemu-img', ['check', '-f', kind.qemu, file], { encoding: 'utf8' });
    // 0 clean, 3 leaked clusters only (not corruption); 1 and 2: cannot check / corrupt
    return r.status !== 0 && r.status !== 3;
  }
  const r = spawnSync('qemu-img', ['convert', '-f', kind.qemu, '-O', 'raw', file, fixturePath('oracle-out.raw')], { encoding: 'utf8' });
  return r.status !== 0;
}

async function streamed(b: Uint8Array, chunk: number) {
  const si = new StreamInspector();
  for (let i = 0; i < b.length; i += chunk) await si.write(b.subarray(i, Math.min(b.length, i + chunk)));
  return si.end();
}

/** Every case: qemu's verdict and ours, random access and streamed. */
async function compare(kind: Kind, label: string, bytes: Buffer): Promise<string[]> {
  const file = fixturePath(`oracle-case.${kind.qemu}`);
  writeFileSync(file, bytes);
  const broken = qemuBroken(kind, file);
  const random = await inspectSource(new BufferSource(bytes));
  const stream = await streamed(bytes, 65536);
  const problems: string[] = [];
  if (broken && random.verdict !== 'refused') problems.push(`${label}: qemu-img finds it broken, inspectFile says safe`);
  if (broken && stream.verdict !== 'refused') problems.push(`${label}: qemu-img finds it broken, the stream inspector says safe`);
  return problems;
}

for (const kind of KINDS) {
  test(`${kind.name}: truncated or with table entries past the end, refused whenever qemu-img finds it broken`, async () => {
    const raw = await patternedRaw('oracle-src-6m.raw', 6 << 20);
    const image = await cached(`oracle-${kind.name.replace(/ /g, '-')}.img`, async (tmp) => {
      const made = await qemuConvert(`oracle-made-${kind.name.replace(/ /g, '-')}`, raw, kind.qemu, kind.options);
      writeFileSync(tmp, readFileSync(made));
    });
    const whole = readFileSync(image);
    // clean: no false positive
    const clean = await inspectSource(new BufferSource(whole));
    assert.equal(clean.verdict, 'safe', `${kind.name} clean: ${JSON.stringify(clean.findings)}`);
    assert.equal((await streamed(whole, 65536)).verdict, 'safe');
    const problems: string[] = [];
    let qemuBrokenCases = 0;
    // truncations from just after the header to just before the end
    const cuts = [0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 0.97].map((f) => Math.floor(whole.length * f));
    cuts.push(whole.length - 512);
    for (const cut of cuts) {
      const b = whole.subarray(0, cut);
      const file = fixturePath(`oracle-case.${kind.qemu}`);
      writeFileSync(file, b);
      if (qemuBroken(kind, file)) qemuBrokenCases++;
      problems.push(...(await compare(kind, `cut at ${cut}`, Buffer.from(b))));
    }
    const c = kind.corrupt(whole);
    if (c) {
      const b = Buffer.from(whole);
      c.write(b, b.length);
      const file = fixturePath(`oracle-case.${kind.qemu}`);
      writeFileSync(file, b);
      if (qemuBroken(kind, file)) qemuBrokenCases++;
      problems.push(...(await compare(kind, `entry at ${c.at} past the end`, b)));
      const r = await inspectSource(new BufferSource(b));
      const table = r.findings.find((f) => f.code === 'OFFSET_PAST_END' || f.code === 'TABLE_MALFORMED');
      assert.match(table?.message ?? '', /entry \d+: .*re-create it with "qemu-img convert"/, JSON.stringify(r.findings));
    }
    assert.ok(qemuBrokenCases > 0, 'the corpus has cases qemu-img finds broken');
    assert.deepEqual(problems, []);
  });
}

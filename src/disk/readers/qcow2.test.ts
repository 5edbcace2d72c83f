import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cached, sh } from '../../../test/support/qemu.js';
import { DiskError } from '../disk.js';
import { FileSource } from '../../io/file-source.js';
import { allExtents, assertMatchesQemu, patternImage } from '../../../test/support/disk-oracle.js';
import { openQcow2 } from './qcow2.js';

async function open(path: string, snapshot?: string) {
  return openQcow2(await FileSource.open(path), snapshot === undefined ? {} : { snapshot });
}

const cases: [string, string[], string[]][] = [
  ['qcow2 v3 64K', ['compat=1.1'], []],
  ['qcow2 v2 64K', ['compat=0.10'], []],
  ['qcow2 v3 4K clusters', ['cluster_size=4096'], []],
  ['qcow2 v3 2M clusters', ['cluster_size=2097152'], []],
  ['qcow2 zlib compressed', [], ['-c']],
  ['qcow2 zstd compressed', ['compression_type=zstd'], ['-c']],
  ['qcow2 extended L2', ['extended_l2=on', 'cluster_size=131072'], []],
  ['qcow2 extended L2 compressed', ['extended_l2=on'], ['-c']],
];

for (const [name, opts, extra] of cases) {
  test(`${name}: reads and maps as qemu does`, async () => {
    const file = await patternImage(`disk-${name.replaceAll(' ', '-')}-v1.qcow2`, 'qcow2', opts, extra);
    const r = await open(file);
    try {
      await assertMatchesQemu(r, file, 'qcow2');
    } finally {
      await r.close();
    }
  });
}

test('qcow2 zero clusters and zeroed subclusters read zero and map as zero', async () => {
  for (const [label, opts] of [
    ['plain', ['compat=1.1']],
    ['extended', ['extended_l2=on']],
  ] as const) {
    const file = await cached(`disk-qcow2-zero-${label}-v1.qcow2`, async (tmp) => {
      await sh('qemu-img', ['create', '-q', '-f', 'qcow2', ...opts.flatMap((o) => ['-o', o]), tmp, '4M']);
      await sh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xab 0 2M', '-c', 'write -z 64k 128k', '-c', 'write -z 1M 4k', '-c', 'write -P 0xcd 3M 4k', tmp]);
    });
    const r = await open(file);
    try {
      await assertMatchesQemu(r, file, 'qcow2');
      const ext = await allExtents(r);
      assert.ok(
        ext.some((e) => e.kind === 'zero' && e.offset <= 64 * 1024 && e.offset + e.length >= 192 * 1024),
        `${label}: zero extent over 64k..192k`,
      );
    } finally {
      await r.close();
    }
  }
});

test('qcow2 internal snapshot: reads the snapshot L1, by name and by id', async () => {
  const file = await cached('disk-qcow2-snapshot-v1.qcow2', async (tmp) => {
    await sh('qemu-img', ['create', '-q', '-f', 'qcow2', tmp, '2M']);
    await sh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 64k', tmp]);
    await sh('qemu-img', ['snapshot', '-c', 'before', tmp]);
    await sh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x22 0 64k', '-c', 'write -P 0x33 1M 64k', tmp]);
  });
  for (const which of ['before', '1']) {
    const r = await open(file, which);
    try {
      const b = await r.read(0, 64 * 1024);
      assert.ok(
        b.every((x) => x === 0x11),
        `snapshot ${which} holds the old data`,
      );
      assert.ok(
        (await r.read(1024 * 1024, 64 * 1024)).every((x) => x === 0),
        'written after the snapshot: not in it',
      );
    } finally {
      await r.close();
    }
  }
  const cur = await open(file);
  assert.equal((await cur.read(0, 1))[0], 0x22);
  await cur.close();
  await assert.rejects(open(file, 'nope'), (e) => e instanceof DiskError && /no snapshot "nope".*before/.test(e.message));
});

test('qcow2 64 GiB sparse image with ~10 MiB of data: extents skip the holes quickly', async () => {
  const file = await cached('disk-qcow2-64g-sparse-v2.qcow2', async (tmp) => {
    await sh('qemu-img', ['create', '-q', '-f', 'qcow2', tmp, '64G']);
    await sh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 4M', '-c', 'write -P 0x5b 20G 4M', '-c', 'write -P 0x5c 65534M 2M', tmp]);
  });
  const r = await open(file);
  try {
    const t0 = performance.now();
    const ext = await allExtents(r);
    const ms = performance.now() - t0;
    const data = ext.filter((e) => e.kind === 'data').reduce((s, e) => s + e.length, 0);
    assert.equal(r.virtualSize, 64 * 1024 ** 3);
    assert.equal(data, 10 * 1024 * 1024);
    assert.ok(ms < 2000, `extents of a 64 GiB sparse image took ${ms.toFixed(0)} ms`);
    assert.ok((await r.read(20 * 1024 ** 3, 4096)).every((x) => x === 0x5b));
    assert.ok((await r.read(64 * 1024 ** 3 - 4096, 4096)).every((x) => x === 0x5c));
  } finally {
    await r.close();
  }
});

test('qcow2 reader refuses a backing file and reads outside the disk', async () => {
  const base = await cached('disk-qcow2-base-v1.qcow2', async (tmp) => sh('qemu-img', ['create', '-q', '-f', 'qcow2', tmp, '1M']).then(() => undefined));
  const overlay = await cached('disk-qcow2-overlay-v1.qcow2', async (tmp) =>
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', base, tmp]).then(() => undefined),
  );
  await assert.rejects(open(overlay), (e) => e instanceof DiskError && e.code === 'UNSAFE_IMAGE' && /backing file/.test(e.message));
  const r = await open(base);
  await assert.rejects(r.read(1024 * 1024 - 1, 2), (e) => e instanceof DiskError && e.code === 'BAD_OPTION');
  await r.close();
});

/** An in-memory copy of a qcow2 file with `edit` applied to its bytes. */
async function hostile(edit: (img: Buffer, l1: number, l2: number, cluster: number) => void, opts: string[] = [], extra: string[] = []): Promise<DiskError> {
  const { readFileSync } = await import('node:fs');
  const file = await patternImage(`disk-qcow2-hostile-${[...opts, ...extra].join('_') || 'plain'}-v1.qcow2`, 'qcow2', opts, extra);
  const img = Buffer.from(readFileSync(file));
  const l1 = Number(img.readBigUInt64BE(40));
  const l2 = Number(img.readBigUInt64BE(l1) & 0x00fffffffffffe00n);
  const cluster = 1 << img.readUInt32BE(20);
  edit(img, l1, l2, cluster);
  const mem = { size: img.length, read: async (o: number, n: number) => img.subarray(o, Math.min(img.length, o + n)) };
  try {
    const r = await openQcow2(mem);
    for await (const e of r.extents()) if (e.kind === 'data') await r.read(e.offset, Math.min(e.length, 65536));
    await r.close();
  } catch (e) {
    assert.ok(e instanceof DiskError, `expected a DiskError, got ${String(e)}`);
    return e;
  }
  assert.fail('the hostile image was read without complaint');
}

test('qcow2 hostile tables give clear DiskErrors', async () => {
  assert.match((await hostile((img, l1) => img.writeBigUInt64BE(BigInt(img.length + 65536), l1))).message, /L2 table .*past the end/);
  assert.match((await hostile((img, l1) => img.writeBigUInt64BE(0n | 512n, l1))).message, /not aligned/);
  assert.match((await hostile((img, l1) => img.writeBigUInt64BE(BigInt(l1), l1))).message, /overlaps the L1 table/);
  assert.match((await hostile((img, l1, l2) => img.writeBigUInt64BE(BigInt(l1) | (1n << 63n), l2))).message, /data cluster 0 .*overlaps the L1 table/);
  assert.match((await hostile((img, _l1, l2) => img.writeBigUInt64BE(BigInt(img.length + 65536) | (1n << 63n), l2))).message, /data cluster 0 .*past the end/);
  assert.match((await hostile((img, _l1, l2) => img.writeBigUInt64BE(BigInt(l2), l2))).message, /own L2 table/);
  assert.match((await hostile((img) => img.writeUInt32BE(0, 36))).message, /L1 table has 0 entries/);
  assert.match((await hostile((img) => img.writeBigUInt64BE(1n << 50n, 24))).message, /over the limit|out of range|L1 table has/);
  // a compressed cluster whose bytes are garbage, or cut off by the end of the file
  assert.match(
    (
      await hostile(
        (img, _l1, l2) => {
          // cluster 16 (1 MiB, the 0xab run) compresses; cluster 0 (random bytes) is stored plain
          const e = img.readBigUInt64BE(l2 + 16 * 8);
          assert.ok(e & (1n << 62n), 'cluster 16 is compressed');
          const off = Number(e & ((1n << 54n) - 1n));
          img.fill(0xff, off, off + 64);
        },
        [],
        ['-c'],
      )
    ).message,
    /compressed cluster 16 .*(corrupt|decodes)/,
  );
  assert.match(
    (
      await hostile(
        (img, _l1, l2) => {
          const e = img.readBigUInt64BE(l2 + 16 * 8);
          img.writeBigUInt64BE((e & ~((1n << 54n) - 1n)) | BigInt(img.length - 100), l2 + 16 * 8);
        },
        [],
        ['-c'],
      )
    ).message,
    /compressed cluster 16/,
  );
});

/**
 * Every finding code: a fixture that triggers it, and clean images that do not. Fixtures are made
 * by the real tools (qemu-img, xorriso, sfdisk, tar, gzip) and crafted byte by byte from them.
 * Every fixture is also fed to the stream inspector at chunk sizes 1, 17, 512 and 65536: the
 * result must equal the random-access one, with bounded memory.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync, mkdirSync, rmSync, copyFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { FINDING_CODES, type FindingCode } from '../src/formats/findings.js';
import type { InspectOptions } from '../src/formats/inspect-source.js';
import { DEFAULT_LIMITS } from '../src/formats/limits.js';
import { inspectFile } from '../src/inspect/inspect-file.js';
import { cached, fixturePath, patternedRaw, qemuConvert, qemuCreate, sh } from './support/qemu.js';
import { CHUNK_SIZES, inspectInChunks } from './support/stream.js';

type Make = () => Promise<string>;

/** A copy of `src` with `patch` applied (cached under `name`). */
function patched(name: string, src: Make, patch: (b: Buffer) => Buffer | void): Make {
  return () =>
    cached(name, async (tmp) => {
      const b = readFileSync(await src());
      writeFileSync(tmp, patch(b) ?? b);
    });
}

const be32 = (b: Buffer, at: number, v: number) => b.writeUInt32BE(v >>> 0, at);
const be64 = (b: Buffer, at: number, v: bigint) => b.writeBigUInt64BE(v, at);

/** VHD footer checksum: one's complement of the byte sum with the field zeroed. */
function vhdChecksum(b: Buffer, at: number, len: number, field: number): void {
  b.writeUInt32BE(0, at + field);
  let sum = 0;
  for (let i = at; i < at + len; i++) sum = (sum + b[i]!) >>> 0;
  b.writeUInt32BE(~sum >>> 0, at + field);
}

/**
 * qemu-img's LUKS key setup times PBKDF2 against CPU time and, on a loaded machine, sometimes
 * fails with "Unable to get accurate CPU usage": a flake of the fixture tool, retried.
 */
async function retried<T>(fn: () => Promise<T>, attempts = 5): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (e) {
      if (i >= attempts || !/accurate CPU usage/.test(String((e as Error).message))) throw e;
    }
  }
}

// ---- base fixtures (real tools) ----
const qcow2: Make = () => qemuCreate('f-base.qcow2', 'qcow2', '1G');
const qcow2Data: Make = async () => qemuConvert('f-data.qcow2', await patternedRaw('f-src-4m.raw', 4 << 20), 'qcow2');
const overlay: Make = () =>
  cached('f-overlay.qcow2', async (tmp) => {
    await sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', await qcow2(), '-F', 'qcow2', tmp]);
  });
const dataFile: Make = () =>
  cached('f-datafile.qcow2', async (tmp) => {
    await sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `data_file=${tmp}.data`, tmp, '64M']);
  });
const encrypted: Make = () =>
  cached('f-luks.qcow2', async (tmp) => {
    await retried(() =>
      sh('qemu-img', [
        'create',
        '-q',
        '-f',
        'qcow2',
        '--object',
        'secret,id=s0,data=imago',
        '-o',
        'encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10',
        tmp,
        '64M',
      ]),
    );
  });
const snapshots: Make = () =>
  cached('f-snap.qcow2', async (tmp) => {
    await sh('qemu-img', ['create', '-q', '-f', 'qcow2', tmp, '64M']);
    await sh('qemu-img', ['snapshot', '-c', 'one', tmp]);
    await sh('qemu-img', ['snapshot', '-c', 'two', tmp]);
  });
const vmdkSparse: Make = () => qemuCreate('f-sparse.vmdk', 'vmdk', '1G');
const vmdkStream: Make = () => qemuCreate('f-stream.vmdk', 'vmdk', '1G', ['subformat=streamOptimized']);
const vmdkFlatDescriptor: Make = () =>
  cached('f-flat.vmdk', async (tmp) => {
    const dir = fixturePath('f-flat-dir');
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir);
    await sh('qemu-img', ['create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', join(dir, 'disk.vmdk'), '16M']);
    copyFileSync(join(dir, 'disk.vmdk'), tmp);
  });
const vhdDynamic: Make = () => qemuCreate('f-dyn.vhd', 'vpc', '1G');
const vhdFixed: Make = () => qemuCreate('f-fixed.vhd', 'vpc', '16M', ['subformat=fixed']);
const vhdx: Make = () => qemuCreate('f-dyn.vhdx', 'vhdx', '1G', ['log_size=1M,block_size=1M']);
const vdi: Make = () => qemuCreate('f-dyn.vdi', 'vdi', '1G');
const qed: Make = () => qemuCreate('f-base.qed', 'qed', '1G');
const qcowV1: Make = () => qemuCreate('f-base.qcow', 'qcow', '1G');
const parallels: Make = () => qemuCreate('f-base.parallels', 'parallels', '1G');
const luks: Make = () =>
  cached('f-base.luks', async (tmp) => {
    await retried(() => sh('qemu-img', ['create', '-q', '-f', 'luks', '--object', 'secret,id=s0,data=imago', '-o', 'key-secret=s0,iter-time=10', tmp, '4M']));
  });
const isoDir = () => {
  const dir = fixturePath('f-iso-tree');
  mkdirSync(join(dir, 'boot'), { recursive: true });
  writeFileSync(join(dir, 'readme.txt'), 'imago\n');
  writeFileSync(join(dir, 'boot', 'bios.img'), Buffer.alloc(2048, 1));
  writeFileSync(join(dir, 'boot', 'efi.img'), Buffer.alloc(64 * 1024, 2));
  return dir;
};
const iso: Make = () =>
  cached('f-plain.iso', async (tmp) => {
    await sh('xorriso', ['-as', 'mkisofs', '-quiet', '-J', '-R', '-o', tmp, isoDir()]);
  });
const isoBoot: Make = () =>
  cached('f-boot.iso', async (tmp) => {
    await sh('xorriso', [
      '-as',
      'mkisofs',
      '-quiet',
      '-o',
      tmp,
      '-b',
      'boot/bios.img',
      '-no-emul-boot',
      '-boot-load-size',
      '4',
      '-eltorito-alt-boot',
      '-e',
      'boot/efi.img',
      '-no-emul-boot',
      '-append_partition',
      '2',
      '0xef',
      join(isoDir(), 'boot', 'efi.img'),
      '-appended_part_as_gpt',
      isoDir(),
    ]);
  });
const isoUdf: Make = () =>
  cached('f-udf.iso', async (tmp) => {
    await sh('genisoimage', ['-quiet', '-udf', '-o', tmp, isoDir()]);
  });
const sfdisk =
  (name: string, script: string): Make =>
  () =>
    cached(name, async (tmp) => {
      execFileSync('truncate', ['-s', '16M', tmp]);
      execFileSync('sfdisk', ['-q', tmp], { input: script });
    });
const gptDisk = sfdisk('f-gpt16.raw', 'label: gpt\n,8M,L\n,,U\n');
const mbrDisk = sfdisk('f-mbr16.raw', 'label: dos\n,8M,83\n,,82\n');

/** An OVA made with tar from an OVF we write, a streamOptimized disk from qemu-img and a manifest. */
function ova(name: string, opts: { manifest?: 'good' | 'bad'; extra?: (dir: string) => string[]; missingDisk?: boolean } = {}): Make {
  return () =>
    cached(name, async (tmp) => {
      const dir = fixturePath(`${name}-dir`);
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir);
      copyFileSync(
        await qemuConvert('f-ova-disk.vmdk', await patternedRaw('f-src-4m.raw', 4 << 20), 'vmdk', ['subformat=streamOptimized']),
        join(dir, 'disk1.vmdk'),
      );
      writeFileSync(
        join(dir, 'vm.ovf'),
        `<?xml version="1.0"?>\n<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">\n` +
          `<References><File ovf:id="file1" ovf:href="disk1.vmdk"/></References>\n` +
          `<DiskSection><Info>disks</Info><Disk ovf:diskId="d1" ovf:fileRef="file1" ovf:capacity="4" ovf:capacityAllocationUnits="byte * 2^20" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/></DiskSection>\n</Envelope>\n`,
      );
      const members = ['vm.ovf', ...(opts.missingDisk ? [] : ['disk1.vmdk'])];
      members.push(...(opts.extra?.(dir) ?? []));
      if (opts.manifest) {
        const sha = (f: string) =>
          execFileSync('sha256sum', [join(dir, f)])
            .toString()
            .split(' ')[0]!;
        let mf = members.map((f) => `SHA256(${f})= ${sha(f)}`).join('\n') + '\n';
        // a wrong digest: its first hex digit changed (to 1 when it was 0, else to 0)
        if (opts.manifest === 'bad') mf = mf.replace(/(SHA256\(disk1\.vmdk\)= )(.)/, (_m, pre: string, d: string) => `${pre}${d === '0' ? '1' : '0'}`);
        writeFileSync(join(dir, 'vm.mf'), mf);
        members.push('vm.mf');
      }
      execFileSync('tar', ['--format=ustar', '-cf', tmp, '-C', dir, ...members]);
    });
}

async function compressed(name: string, src: Make, chain: string[]): Promise<string> {
  return cached(name, async (tmp) => {
    let data = readFileSync(await src());
    for (const c of chain) data = execFileSync(c, ['-c'], { input: data, maxBuffer: 1 << 30 });
    writeFileSync(tmp, data);
  });
}

interface Case {
  name: string;
  make: Make;
  opts?: InspectOptions;
  /** streaming comparison (false for compressed inputs, inspected through the wrapper path) */
  stream?: boolean;
}

interface Trigger extends Case {
  code: FindingCode;
}

const TRIGGERS: Trigger[] = [
  { code: 'BACKING_FILE', name: 'qcow2 overlay made by qemu-img -b', make: overlay },
  { code: 'DATA_FILE', name: 'qcow2 with an external data file', make: dataFile },
  {
    code: 'VMDK_EXTENT_OUTSIDE',
    name: 'monolithicSparse whose embedded descriptor points at /etc/passwd (CVE-2022-47951)',
    make: patched('f-evil-extent.vmdk', vmdkSparse, (b) => {
      const at = b.indexOf('RW 2097152 SPARSE "');
      assert.ok(at > 0);
      const line = Buffer.from('RW 2097152 FLAT "/etc/passwd" 0');
      const end = b.indexOf('\n', at);
      b.fill(0x20, at, end);
      line.copy(b, at);
    }),
  },
  { code: 'VMDK_CREATE_TYPE', name: 'monolithicFlat descriptor made by qemu-img', make: vmdkFlatDescriptor },
  {
    code: 'DIFFERENCING_DISK',
    name: 'VHD footer and header turned differencing with a parent name',
    make: patched('f-diff.vhd', vhdDynamic, (b) => {
      const end = b.length - 512;
      for (const at of [0, end]) {
        be32(b, at + 60, 4);
        vhdChecksum(b, at, 512, 64);
      }
      Buffer.from('\0p\0a\0r\0e\0n\0t\0.\0v\0h\0d', 'latin1').copy(b, 512 + 64);
      vhdChecksum(b, 512, 1024, 36);
    }),
  },
  {
    code: 'DIFFERENCING_DISK',
    name: 'VHDX with HasParent set in its file parameters',
    make: patched('f-parent.vhdx', vhdx, (b) => {
      // metadata region from the region table at 192 KiB; file parameters is the first item
      const n = b.readUInt32LE(192 * 1024 + 8);
      for (let i = 0; i < n; i++) {
        const e = 192 * 1024 + 16 + i * 32;
        if (b.readUInt32LE(e) === 0x8b7ca206) {
          const meta = Number(b.readBigUInt64LE(e + 16));
          const count = b.readUInt16LE(meta + 10);
          for (let k = 0; k < count; k++) {
            const it = meta + 32 + k * 32;
            if (b.readUInt32LE(it) === 0xcaa16737) b.writeUInt32LE(b.readUInt32LE(meta + b.readUInt32LE(it + 16) + 4) | 2, meta + b.readUInt32LE(it + 16) + 4);
          }
        }
      }
    }),
  },
  { code: 'UNKNOWN_FEATURES', name: 'qcow2 with incompatible feature bit 20', make: patched('f-unknown-bit.qcow2', qcow2, (b) => void be64(b, 72, 1n << 20n)) },
  { code: 'CORRUPT_IMAGE', name: 'qcow2 marked corrupt', make: patched('f-corrupt.qcow2', qcow2, (b) => void be64(b, 72, 2n)) },
  { code: 'MALFORMED_HEADER', name: 'qcow2 with cluster_bits 30', make: patched('f-bits.qcow2', qcow2, (b) => void be32(b, 20, 30)) },
  { code: 'OFFSET_PAST_END', name: 'qcow2 L1 table past the end', make: patched('f-l1-past.qcow2', qcow2, (b) => void be64(b, 40, 1n << 40n)) },
  { code: 'OFFSET_PAST_END', name: 'qcow2 with data cut off (head -c 300000)', make: patched('f-cut.qcow2', qcow2Data, (b) => b.subarray(0, 300000)) },
  {
    code: 'TABLE_MALFORMED',
    name: 'qcow2 L2 entry not cluster aligned',
    make: patched('f-l2-misaligned.qcow2', qcow2Data, (b) => {
      const l2 = Number(b.readBigUInt64BE(Number(b.readBigUInt64BE(40))) & 0x00fffffffffffe00n);
      be64(b, l2, 0x8000000000000000n | (b.readBigUInt64BE(l2) + 512n));
    }),
  },
  {
    code: 'FIELD_OUT_OF_RANGE',
    name: 'vmdk capacity of 2^62 sectors',
    make: patched('f-capacity.vmdk', vmdkSparse, (b) => void b.writeBigUInt64LE(1n << 62n, 12)),
  },
  { code: 'OVER_LIMIT', name: 'qcow2 with 100000 snapshots declared', make: patched('f-snaps.qcow2', snapshots, (b) => void be32(b, 60, 100_000)) },
  {
    code: 'CHECKSUM_MISMATCH',
    name: 'VHD footer with a flipped byte',
    make: patched('f-badsum.vhd', vhdFixed, (b) => {
      b[b.length - 512 + 30] = b[b.length - 512 + 30]! ^ 0xff;
    }),
  },
  { code: 'TRUNCATED', name: 'ISO cut in half', make: patched('f-half.iso', iso, (b) => b.subarray(0, Math.floor(b.length / 2 / 2048) * 2048)) },
  {
    code: 'POLYGLOT',
    name: 'qcow2 header written into an ISO system area',
    make: async () => {
      const q = readFileSync(await qcow2()).subarray(0, 512);
      return patched('f-polyglot.iso', iso, (b) => void q.copy(b, 0))();
    },
  },
  { code: 'FORMAT_MISMATCH', name: 'qcow2 declared as raw (CVE-2024-40767)', make: qcow2, opts: { claimedFormat: 'raw' } },
  { code: 'UNSUPPORTED_FORMAT', name: 'QED', make: qed },
  { code: 'MBR_MALFORMED', name: 'MBR entry with status byte 0x42', make: patched('f-status16.raw', mbrDisk, (b) => void (b[446] = 0x42)) },
  {
    code: 'HYBRID_MBR',
    name: 'GPT disk whose MBR also lists a FAT partition',
    make: patched('f-hybrid16.raw', gptDisk, (b) => {
      const e = 446 + 16;
      b[e + 4] = 0x0c;
      b.writeUInt32LE(2048, e + 8);
      b.writeUInt32LE(4096, e + 12);
    }),
  },
  {
    code: 'GPT_MALFORMED',
    name: 'GPT header with a bad CRC',
    make: patched('f-badcrc16.raw', gptDisk, (b) => {
      b[552] = b[552]! ^ 1;
    }),
  },
  {
    code: 'OVA_UNSAFE_MEMBER',
    name: 'OVA with a symlink member',
    make: ova('f-symlink.ova', {
      extra: (dir) => {
        rmSync(join(dir, 'link'), { force: true });
        symlinkSync('/etc/passwd', join(dir, 'link'));
        return ['link'];
      },
    }),
  },
  { code: 'OVA_DIGEST_MISMATCH', name: 'OVA whose manifest digest is wrong', make: ova('f-badmf.ova', { manifest: 'bad' }) },
  { code: 'OVA_MALFORMED', name: 'OVA whose OVF references a missing disk', make: ova('f-nodisk.ova', { missingDisk: true }) },
  {
    code: 'DECOMPRESSION_BOMB',
    name: 'gzip bomb over the size limit',
    make: () => compressed('f-zeros-64m.gz', () => patternedRaw('f-zeros-64m.raw', 64 << 20), ['gzip']),
    opts: { limits: { maxDecompressedBytes: 8 << 20 } },
    stream: false,
  },
  {
    code: 'WRAPPER_DEPTH',
    name: 'four nested gzip layers',
    make: () => compressed('f-raw.gz4', () => patternedRaw('f-src-4m.raw', 4 << 20), ['gzip', 'gzip', 'gzip', 'gzip']),
    stream: false,
  },
  {
    code: 'COMPRESSION_ERROR',
    name: 'truncated xz',
    make: patched(
      'f-trunc.xz',
      () => compressed('f-raw.xz', () => patternedRaw('f-src-4m.raw', 4 << 20), ['xz']),
      (b) => b.subarray(0, b.length >> 1),
    ),
    stream: false,
  },
  {
    code: 'VIRTUAL_SIZE_LIMIT',
    name: '16 TiB qcow2 over a 1 TiB limit',
    make: () => qemuCreate('f-16t.qcow2', 'qcow2', '16T'),
    opts: { limits: { maxVirtualSize: 1n << 40n } },
  },
  { code: 'ENCRYPTED', name: 'LUKS-encrypted qcow2', make: encrypted },
  { code: 'ENCRYPTED', name: 'LUKS volume', make: luks },
];

const CLEAN: Case[] = [
  { name: 'qcow2 (empty)', make: qcow2 },
  { name: 'qcow2 (data)', make: qcow2Data },
  { name: 'qcow2 with snapshots', make: snapshots },
  { name: 'vmdk monolithicSparse', make: vmdkSparse },
  { name: 'vmdk streamOptimized', make: vmdkStream },
  { name: 'vhd dynamic', make: vhdDynamic },
  { name: 'vhd fixed', make: vhdFixed },
  { name: 'vhdx', make: vhdx },
  { name: 'vdi', make: vdi },
  { name: 'qcow v1', make: qcowV1 },
  { name: 'parallels', make: parallels },
  { name: 'iso', make: iso },
  { name: 'iso El Torito + GPT hybrid', make: isoBoot },
  { name: 'iso + udf', make: isoUdf },
  { name: 'raw gpt', make: gptDisk },
  { name: 'raw mbr', make: mbrDisk },
  { name: 'ova with manifest', make: ova('f-good.ova', { manifest: 'good' }) },
  { name: 'gzip-wrapped qcow2', make: () => compressed('f-base.qcow2.gz', qcow2, ['gzip']), stream: false },
];

// codes that cannot come from a real file of ours: the engine's own fail-closed paths, tested in
// src/formats/inspect-source.test.ts (CHECK_FAILED) and src/formats/stream-inspector.test.ts (INSPECTION_INCOMPLETE)
const ENGINE_ONLY: FindingCode[] = ['CHECK_FAILED', 'INSPECTION_INCOMPLETE'];

test('every finding code has a trigger here or an engine test', () => {
  const covered = new Set<string>([...TRIGGERS.map((t) => t.code), ...ENGINE_ONLY]);
  assert.deepEqual(
    FINDING_CODES.filter((c) => !covered.has(c)),
    [],
  );
});

for (const t of TRIGGERS) {
  test(`${t.code}: ${t.name}`, async () => {
    const r = await inspectFile(await t.make(), t.opts);
    const f = r.findings.find((x) => x.code === t.code);
    assert.ok(f, `expected ${t.code}, got ${JSON.stringify(r.findings)}`);
    assert.ok(f.message.length > 20, 'the message explains');
    if (f.severity === 'error') assert.equal(r.verdict, 'refused');
  });
}

for (const c of CLEAN) {
  test(`clean: ${c.name} raises no error finding`, async () => {
    const r = await inspectFile(await c.make(), c.opts);
    assert.deepEqual(
      r.findings.filter((f) => f.severity !== 'info' && f.code !== 'HYBRID_MBR'),
      [],
    );
    assert.equal(r.verdict, 'safe');
  });
}

const HELD_BOUND = DEFAULT_LIMITS.headBytes + DEFAULT_LIMITS.tailBytes + DEFAULT_LIMITS.maxCaptureBytes;

for (const c of [...TRIGGERS, ...CLEAN].filter((x) => x.stream !== false)) {
  test(`stream = random access at chunk sizes ${CHUNK_SIZES.join(', ')}: ${c.name}`, async () => {
    const file = await c.make();
    const bytes = readFileSync(file);
    const ref = await inspectFile(file, c.opts);
    for (const n of CHUNK_SIZES) {
      const s = await inspectInChunks(bytes, n, c.opts, n === 1 ? 1 << 20 : n === 17 ? 4 << 20 : Infinity);
      assert.equal(s.format, ref.format, `chunk ${n}`);
      assert.equal(s.subformat, ref.subformat, `chunk ${n}`);
      assert.equal(s.virtualSize, ref.virtualSize, `chunk ${n}`);
      assert.deepEqual(s.findings.map((f) => f.code).sort(), ref.findings.map((f) => f.code).sort(), `chunk ${n}: ${JSON.stringify(s.findings)}`);
      assert.ok(s.peakHeld <= HELD_BOUND, `chunk ${n}: held ${s.peakHeld}`);
    }
  });
}

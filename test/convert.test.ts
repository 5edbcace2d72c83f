/**
 * `convertFile` and `imago convert` / `imago compare` against the real qemu-img.
 *
 * The matrix: every reader format (fixtures made by qemu-img from one patterned raw disk, plus an
 * OVA made with tar around qemu's streamOptimized VMDK) × every writer. For each pair the output
 * must be, by qemu-img: the same guest bytes as the pattern (`compare`), free of errors and leaks
 * (`check`, where qemu can check the format) and of the virtual size qemu itself gives a new image
 * of that format and size (`create` + `info`: qemu's rounding to sectors or to a CHS geometry);
 * and by us: `openDisk` reopens it and `compareDisks` says identical.
 *
 * Then: sparseness (64 GiB sources holding 10 MiB convert to outputs allocating about 10 MiB),
 * progress, abort, refusals, and the CLI spawned as a user runs it.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync, copyFileSync } from 'node:fs';
import { open, readFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { compareDisks } from '../src/disk/compare.js';
import { convertFile } from '../src/disk/convert.js';
import { DiskError } from '../src/disk/disk.js';
import { openDisk } from '../src/disk/open-disk.js';
import { copyEngine } from '../src/io/copy-range.js';
import { cached, qemuConvert, qemuInfo, sh } from './support/qemu.js';
import { patternBytes } from './support/disk-oracle.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const ROOT = join(import.meta.dirname, '..');
const BIN = join(ROOT, 'bin', 'imago.js');

/** Not a multiple of 512, nor of any cluster, grain or block size. */
const PATTERN_SIZE = 6 * MiB + 12345;

let work: string;
before(() => {
  work = mkdtempSync(join(tmpdir(), 'imago-convert-test-'));
});
after(() => {
  rmSync(work, { recursive: true, force: true });
});

/**
 * The pattern: random blocks at aligned and unaligned offsets, a compressible run, an explicit
 * (stored) zero run inside data and a stored all-zero MiB, holes between, and random bytes in the
 * very last 3000 bytes of the disk.
 */
const patternRaw = once('pattern', () =>
  cached('convert-v1-pattern.raw', async (tmp) => {
    const fh = await open(tmp, 'w');
    try {
      await fh.truncate(PATTERN_SIZE);
      const put = (b: Buffer, at: number) => fh.write(b, 0, b.length, at);
      await put(patternBytes(64 * KiB, 1), 0);
      await put(patternBytes(100 * KiB + 3, 2), MiB + 1000);
      await put(patternBytes(MiB, 3), 2 * MiB);
      await put(Buffer.alloc(128 * KiB), 2 * MiB + 256 * KiB);
      await put(Buffer.alloc(200 * KiB + 17, 0xab), 3 * MiB + 512 * KiB + 5);
      await put(Buffer.alloc(MiB), 4 * MiB);
      await put(patternBytes(3000, 4), PATTERN_SIZE - 3000);
    } finally {
      await fh.close();
    }
  }),
);

const OVF = (capacity: number) => `<?xml version="1.0"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
  <References><File ovf:id="file1" ovf:href="disk1.vmdk"/></References>
  <DiskSection><Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="${capacity}" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/></DiskSection>
</Envelope>
`;

interface Input {
  readonly name: string;
  path(): Promise<string>;
}

/** One promise per fixture: `cached` names its temp file by pid, so two concurrent makes would collide. */
const made = new Map<string, Promise<string>>();
function once(key: string, make: () => Promise<string>): () => Promise<string> {
  return () => {
    let p = made.get(key);
    if (!p) made.set(key, (p = make()));
    return p;
  };
}

const INPUTS: readonly Input[] = [
  { name: 'raw', path: patternRaw },
  { name: 'qcow2', path: once('qcow2', async () => qemuConvert('convert-v1.qcow2', await patternRaw(), 'qcow2')) },
  {
    name: 'vmdk monolithicSparse',
    path: once('vmdk monolithicSparse', async () => qemuConvert('convert-v1-mono.vmdk', await patternRaw(), 'vmdk', ['subformat=monolithicSparse'])),
  },
  {
    name: 'vmdk streamOptimized',
    path: once('vmdk streamOptimized', async () => qemuConvert('convert-v1-stream.vmdk', await patternRaw(), 'vmdk', ['subformat=streamOptimized'])),
  },
  { name: 'vdi', path: once('vdi', async () => qemuConvert('convert-v1.vdi', await patternRaw(), 'vdi')) },
  { name: 'vhd fixed', path: once('vhd fixed', async () => qemuConvert('convert-v1-fixed.vhd', await patternRaw(), 'vpc', ['subformat=fixed'])) },
  { name: 'vhd dynamic', path: once('vhd dynamic', async () => qemuConvert('convert-v1-dynamic.vhd', await patternRaw(), 'vpc', ['subformat=dynamic'])) },
  { name: 'vhdx', path: once('vhdx', async () => qemuConvert('convert-v1.vhdx', await patternRaw(), 'vhdx')) },
  { name: 'qed', path: once('qed', async () => qemuConvert('convert-v1.qed', await patternRaw(), 'qed')) },
  {
    name: 'ova',
    path: once('ova', async () => {
      const vmdk = await INPUTS[3]!.path();
      return cached('convert-v1.ova', async (tmp) => {
        const dir = `${tmp}.d`;
        mkdirSync(dir, { recursive: true });
        writeFileSync(join(dir, 'vm.ovf'), OVF(PATTERN_SIZE));
        copyFileSync(vmdk, join(dir, 'disk1.vmdk'));
        await sh('tar', ['--format=ustar', '-cf', tmp, '-C', dir, 'vm.ovf', 'disk1.vmdk']);
        rmSync(dir, { recursive: true, force: true });
      });
    }),
  },
];

interface Output {
  readonly name: string;
  readonly format: string;
  readonly options: Record<string, string>;
  readonly compress?: boolean;
  /** qemu's name of the format (for -f), and the options that make the same kind of image */
  readonly qemuFormat: string;
  readonly qemuOptions: string[];
  /** qemu-img check supports the format */
  readonly check: boolean;
}

const OUTPUTS: readonly Output[] = [
  { name: 'raw', format: 'raw', options: {}, qemuFormat: 'raw', qemuOptions: [], check: false },
  { name: 'qcow2', format: 'qcow2', options: {}, qemuFormat: 'qcow2', qemuOptions: [], check: true },
  { name: 'qcow2 -c', format: 'qcow2', options: {}, compress: true, qemuFormat: 'qcow2', qemuOptions: [], check: true },
  {
    name: 'vmdk streamOptimized',
    format: 'vmdk',
    options: { subformat: 'streamOptimized' },
    qemuFormat: 'vmdk',
    qemuOptions: ['subformat=streamOptimized'],
    check: true,
  },
  {
    name: 'vmdk monolithicSparse',
    format: 'vmdk',
    options: { subformat: 'monolithicSparse' },
    qemuFormat: 'vmdk',
    qemuOptions: ['subformat=monolithicSparse'],
    check: true,
  },
  { name: 'vhd dynamic', format: 'vhd', options: {}, qemuFormat: 'vpc', qemuOptions: ['subformat=dynamic'], check: false },
  { name: 'vhd fixed', format: 'vpc', options: { subformat: 'fixed' }, qemuFormat: 'vpc', qemuOptions: ['subformat=fixed'], check: false },
  { name: 'vhdx', format: 'vhdx', options: {}, qemuFormat: 'vhdx', qemuOptions: [], check: true },
  { name: 'vdi', format: 'vdi', options: {}, qemuFormat: 'vdi', qemuOptions: [], check: true },
  // checked through its VMDK member (qemu reads no OVA)
  { name: 'ova', format: 'ova', options: {}, qemuFormat: 'vmdk', qemuOptions: ['subformat=streamOptimized'], check: true },
];

/**
 * Known writer bugs: pair name → reason. A listed pair is skipped with the reason (the writers are
 * owned elsewhere; see the report of issue 5).
 */
const KNOWN_WRITER_BUGS: Readonly<Record<string, string>> = {};

/** Runs a command; resolves with its exit code and output whatever the code. */
function runCommand(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { maxBuffer: 64 * MiB }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') return reject(err);
      resolve({ code: err ? (err.code as number) : 0, stdout, stderr });
    });
  });
}

/** The virtual size qemu gives a new image of this kind and size (its documented rounding). */
const expectedSizes = new Map<string, Promise<number>>();
function qemuCreatedSize(fmt: string, options: string[], size: number): Promise<number> {
  const key = `${fmt}|${options.join(',')}|${size}`;
  let p = expectedSizes.get(key);
  if (!p) {
    p = (async () => {
      const file = join(work, `size-${expectedSizes.size}.${fmt}`);
      const args = ['create', '-q', '-f', fmt];
      for (const o of options) args.push('-o', o);
      await sh('qemu-img', [...args, file, String(size)]);
      const info = await qemuInfo(file, fmt);
      rmSync(file, { force: true });
      return info['virtual-size'];
    })();
    expectedSizes.set(key, p);
  }
  return p;
}

/** The file qemu can read: an OVA's VMDK member is extracted beside it. */
async function qemuView(out: Output, file: string): Promise<string> {
  if (out.format !== 'ova') return file;
  const dir = `${file}.x`;
  mkdirSync(dir);
  await sh('tar', ['-xf', file, '-C', dir]);
  const vmdk = readdirSync(dir).find((f) => f.endsWith('.vmdk'));
  assert.ok(vmdk, `no .vmdk member in ${readdirSync(dir).join(', ')}`);
  assert.ok(
    readdirSync(dir).some((f) => f.endsWith('.ovf')),
    'OVA has an .ovf descriptor',
  );
  return join(dir, vmdk);
}

async function assertIdenticalByUs(a: string, b: string): Promise<void> {
  const ra = await openDisk(a, { allowDeprecatedFormats: true });
  try {
    const rb = await openDisk(b, { allowDeprecatedFormats: true });
    try {
      const r = await compareDisks(ra, rb);
      assert.ok(r.identical, `compareDisks: ${a} and ${b} differ at ${r.firstDifference}`);
    } finally {
      await rb.close();
    }
  } finally {
    await ra.close();
  }
}

let pairNo = 0;
async function checkPair(input: Input, out: Output): Promise<void> {
  const pattern = await patternRaw();
  const src = await input.path();
  const inReader = await openDisk(src, { allowDeprecatedFormats: true });
  const sourceSize = inReader.virtualSize;
  await inReader.close();
  const file = join(work, `pair-${pairNo++}.${out.format}`);
  const res = await convertFile(src, file, { outFormat: out.format, options: out.options, compress: out.compress === true });
  assert.equal(res.virtualSize, sourceSize);
  assert.ok(!existsSync(`${file}.part`), 'no .part left behind');
  const view = await qemuView(out, file);

  const cmp = await runCommand('qemu-img', ['compare', '-f', 'raw', '-F', out.qemuFormat, pattern, view]);
  assert.equal(cmp.code, 0, `qemu-img compare: ${cmp.stdout}${cmp.stderr}`);
  if (out.check) {
    const chk = await runCommand('qemu-img', ['check', '-f', out.qemuFormat, view]);
    assert.equal(chk.code, 0, `qemu-img check: ${chk.stdout}${chk.stderr}`);
  }
  const info = await qemuInfo(view, out.qemuFormat);
  assert.equal(
    info['virtual-size'],
    await qemuCreatedSize(out.qemuFormat, out.qemuOptions, sourceSize),
    'qemu-img info virtual size = qemu create of the same size',
  );
  await assertIdenticalByUs(pattern, file);
  rmSync(file, { force: true });
  if (view !== file) rmSync(`${file}.x`, { recursive: true, force: true });
}

test('convert matrix: every reader format × every writer, checked by qemu-img and by us', { concurrency: 3 }, async (t) => {
  await Promise.all(INPUTS.map((i) => i.path())); // fixtures once, before the pairs race for them
  const runs: Promise<void>[] = [];
  for (const input of INPUTS) {
    for (const out of OUTPUTS) {
      const name = `${input.name} → ${out.name}`;
      const bug = KNOWN_WRITER_BUGS[name] ?? KNOWN_WRITER_BUGS[`* → ${out.name}`];
      runs.push(t.test(name, async (tt) => (bug ? tt.skip(bug) : checkPair(input, out))));
    }
  }
  await Promise.all(runs);
});

/**
 * A sparse raw disk holding 10 MiB of random data in 10 pieces spread over it. 64 GiB for the
 * qcow2 source qemu makes from it; raw sources are tested at 4 GiB, because without SEEK_DATA
 * (Node has none) our raw reader reads every hole to find it (about 1–2 GB/s here).
 */
const SPARSE_DATA = 10 * MiB;
function sparseRaw(size: number): Promise<string> {
  return once(`sparse-${size}`, () =>
    cached(`convert-v1-sparse-${size / GiB}g.raw`, async (tmp) => {
      const fh = await open(tmp, 'w');
      try {
        await fh.truncate(size);
        for (let i = 0; i < 10; i++) {
          const b = patternBytes(MiB, 100 + i);
          await fh.write(b, 0, b.length, Math.floor((size / 10) * i) + i * 4096);
        }
      } finally {
        await fh.close();
      }
    }),
  )();
}

async function allocatedBytes(path: string): Promise<number> {
  return (await stat(path)).blocks * 512;
}

test('sparseness: 64 GiB sources holding 10 MiB convert to outputs allocating about 10 MiB', { concurrency: 2 }, async (t) => {
  const raw = await sparseRaw(4 * GiB);
  const qcow2 = await qemuConvert('convert-v1-sparse-64g.qcow2', await sparseRaw(64 * GiB), 'qcow2');
  // metadata allowance: tables for 64 GiB (qcow2 L1/refcounts, VHD/VDI/VHDX maps, VMDK GTs)
  const slack = 4 * MiB;
  const cases: { name: string; src: string; format: string; options?: Record<string, string>; compress?: boolean; qemuFormat: string }[] = [
    { name: 'raw (4 GiB) → qcow2', src: raw, format: 'qcow2', qemuFormat: 'qcow2' },
    { name: 'raw (4 GiB) → raw', src: raw, format: 'raw', qemuFormat: 'raw' },
    { name: 'qcow2 → raw', src: qcow2, format: 'raw', qemuFormat: 'raw' },
    { name: 'qcow2 → qcow2 -c', src: qcow2, format: 'qcow2', compress: true, qemuFormat: 'qcow2' },
    { name: 'qcow2 → vmdk streamOptimized', src: qcow2, format: 'vmdk', qemuFormat: 'vmdk' },
    { name: 'qcow2 → vmdk monolithicSparse', src: qcow2, format: 'vmdk', options: { subformat: 'monolithicSparse' }, qemuFormat: 'vmdk' },
    { name: 'qcow2 → vhd dynamic', src: qcow2, format: 'vhd', qemuFormat: 'vpc' },
    { name: 'qcow2 → vhd fixed', src: qcow2, format: 'vhd', options: { subformat: 'fixed' }, qemuFormat: 'vpc' },
    { name: 'qcow2 → vhdx', src: qcow2, format: 'vhdx', qemuFormat: 'vhdx' },
    { name: 'qcow2 → vdi', src: qcow2, format: 'vdi', qemuFormat: 'vdi' },
    { name: 'qcow2 → ova', src: qcow2, format: 'ova', qemuFormat: 'raw' },
  ];
  await Promise.all(
    cases.map((c, i) =>
      t.test(c.name, async () => {
        const out = join(work, `sparse-${i}.${c.format}`);
        await convertFile(c.src, out, { outFormat: c.format, options: c.options ?? {}, compress: c.compress === true });
        const used = await allocatedBytes(out);
        assert.ok(used <= SPARSE_DATA + slack, `${c.name}: ${used} bytes allocated for ${SPARSE_DATA} bytes of data`);
        assert.ok(used >= SPARSE_DATA * 0.9, `${c.name}: only ${used} bytes allocated; the data must be there`);
        if (c.format !== 'ova') {
          const [from, fromFormat] = c.src === raw ? [raw, 'raw'] : [qcow2, 'qcow2'];
          const cmp = await runCommand('qemu-img', ['compare', '-f', fromFormat, '-F', c.qemuFormat, from, out]);
          assert.equal(cmp.code, 0, `qemu-img compare: ${cmp.stdout}${cmp.stderr}`);
        }
        rmSync(out, { force: true });
      }),
    ),
  );
});

test('a qcow2 internal snapshot converts to what qemu-img reads from it (-l)', async () => {
  const img = join(work, 'snap.qcow2');
  await sh('qemu-img', ['create', '-q', '-f', 'qcow2', img, '8M']);
  await sh('qemu-io', ['-c', 'write -P 0x11 0 1M', img]);
  await sh('qemu-img', ['snapshot', '-c', 'before', img]);
  await sh('qemu-io', ['-c', 'write -P 0x22 512k 1M', img]);
  const ours = join(work, 'snap-ours.raw');
  const theirs = join(work, 'snap-qemu.raw');
  await convertFile(img, ours, { outFormat: 'raw', snapshot: 'before' });
  await sh('qemu-img', ['convert', '-f', 'qcow2', '-l', 'snapshot.name=before', '-O', 'raw', img, theirs]);
  await sh('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', ours, theirs]);
  // and the active layer differs from it
  const active = join(work, 'snap-active.raw');
  await convertFile(img, active, { outFormat: 'raw' });
  await assert.rejects(sh('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', active, ours]));
  await assert.rejects(convertFile(img, join(work, 'x.raw'), { outFormat: 'raw', snapshot: 'nope' }), DiskError);
});

test('progress is reported in guest bytes, ascending, up to the virtual size', async () => {
  const src = await INPUTS[1]!.path();
  const seen: { done: number; total: number }[] = [];
  const out = join(work, 'progress.vdi');
  const { virtualSize } = await convertFile(src, out, { outFormat: 'vdi', onProgress: (p) => seen.push(p) });
  assert.equal(virtualSize, 6304256, 'the qcow2 source: the pattern rounded up to whole sectors');
  assert.ok(seen.length > 2);
  for (let i = 1; i < seen.length; i++) assert.ok(seen[i]!.done >= seen[i - 1]!.done, 'progress never goes back');
  assert.ok(seen.every((p) => p.total === virtualSize));
  assert.equal(seen.at(-1)!.done, virtualSize);
});

test('an aborted conversion leaves neither the output nor its .part', async () => {
  const src = await sparseRaw(4 * GiB);
  const out = join(work, 'aborted.qcow2');
  const ac = new AbortController();
  const p = convertFile(src, out, { outFormat: 'qcow2', signal: ac.signal, onProgress: (x) => x.done > 0 && ac.abort() });
  await assert.rejects(p);
  assert.ok(!existsSync(out) && !existsSync(`${out}.part`));
});

test('refusals: unsafe source with its findings, declared-format mismatch, unknown format or option, -c where impossible, missing file, output = input', async () => {
  const base = await cached('convert-v1-base.qcow2', (tmp) => sh('qemu-img', ['create', '-q', '-f', 'qcow2', tmp, '1G']).then(() => undefined));
  const overlay = await cached('convert-v1-overlay.qcow2', (tmp) =>
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', tmp]).then(() => undefined),
  );
  const out = join(work, 'refused.raw');
  const is = (code: string, re: RegExp) => (e: unknown) => e instanceof DiskError && e.code === code && re.test(e.message);
  await assert.rejects(convertFile(overlay, out, { outFormat: 'raw' }), is('UNSAFE_IMAGE', /BACKING_FILE/));
  const qcow2 = await INPUTS[1]!.path();
  await assert.rejects(convertFile(qcow2, out, { inFormat: 'raw', outFormat: 'raw' }), is('UNSAFE_IMAGE', /declared as raw but its bytes are qcow2/));
  await assert.rejects(convertFile(qcow2, out, { outFormat: 'qcow3' }), is('BAD_OPTION', /unknown output format "qcow3"/));
  await assert.rejects(convertFile(qcow2, out, { outFormat: 'qed' }), is('UNSUPPORTED', /no writer for qed/));
  await assert.rejects(convertFile(qcow2, out, { outFormat: 'qcow2', options: { clustr_size: '64K' } }), is('BAD_OPTION', /no option 'clustr_size'/));
  await assert.rejects(convertFile(qcow2, out, { outFormat: 'vdi', compress: true }), is('BAD_OPTION', /cannot be compressed/));
  await assert.rejects(convertFile(join(work, 'missing.qcow2'), out, { outFormat: 'raw' }), is('IO', /cannot open .*missing\.qcow2.*ENOENT/));
  await assert.rejects(convertFile(qcow2, qcow2, { outFormat: 'qcow2' }), is('BAD_OPTION', /is the input/));
  assert.ok(!existsSync(out) && !existsSync(`${out}.part`));
});

// ---- the CLI, spawned as a user runs it ----

/** Builds dist/ when the compiled CLI is missing or older than its source (the bin runs dist/). */
async function ensureBuilt(): Promise<void> {
  const built = join(ROOT, 'dist', 'cli', 'convert-command.js');
  const sources = ['src/cli/convert-command.ts', 'src/disk/convert.ts', 'src/cli/main.ts'].map((f) => statSync(join(ROOT, f)).mtimeMs);
  if (existsSync(built) && statSync(built).mtimeMs >= Math.max(...sources)) return;
  // tsc emits even when another file of the tree does not type-check; the check below is what matters
  await runCommand('npx', ['tsc', '-p', join(ROOT, 'tsconfig.build.json')]);
  assert.ok(existsSync(built), 'npx tsc -p tsconfig.build.json produced dist/cli/convert-command.js');
}

function imago(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/**
 * `imago convert ARGS` under strace; `flushes` counts its fdatasync and fsync calls, `writebacks`
 * its sync_file_range calls (the copy engine's writeback starts), `copies` its copy_file_range
 * calls (`out`.trace keeps them).
 */
async function convertTraced(out: string, ...args: string[]): Promise<{ code: number; stderr: string; flushes: number; writebacks: number; copies: number }> {
  const trace = `${out}.trace`;
  const r = await runCommand('strace', [
    '-f',
    '-qq',
    '-e',
    'trace=fdatasync,fsync,sync_file_range,copy_file_range',
    '-o',
    trace,
    process.execPath,
    BIN,
    'convert',
    ...args,
  ]);
  const lines = (await readFile(trace, 'utf8')).split('\n');
  const count = (re: RegExp) => lines.filter((l) => re.test(l)).length;
  return { code: r.code, stderr: r.stderr, flushes: count(/f(data)?sync\(/), writebacks: count(/sync_file_range\(/), copies: count(/copy_file_range\(/) };
}

test('CLI: imago convert and imago compare', async (t) => {
  await ensureBuilt();
  const pattern = await patternRaw();
  const qcow2 = await INPUTS[1]!.path();

  await t.test('convert -f -O -o -p writes the image qemu reads back identical', async () => {
    const out = join(work, 'cli.qcow2');
    const r = await imago('convert', '-f', 'qcow2', '-O', 'qcow2', '-o', 'cluster_size=128K', '-p', qcow2, out);
    assert.equal(r.code, 0, r.stderr);
    const info = await qemuInfo(out, 'qcow2');
    assert.equal(info['cluster-size'], 128 * KiB);
    assert.equal((await runCommand('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', pattern, out])).code, 0);
    const vhd = join(work, 'cli.vhd');
    const v = await imago('convert', '-O', 'vpc', '-o', 'subformat=fixed', '-o', 'force_size=on', pattern, vhd);
    assert.equal(v.code, 0, v.stderr);
    assert.equal((await runCommand('qemu-img', ['compare', '-f', 'raw', '-F', 'vpc', pattern, vhd])).code, 0);
  });

  await t.test('compare: identical (0), content mismatch at the offset qemu names (1), strict size mismatch (1)', async () => {
    const out = join(work, 'cli.qcow2');
    const same = await imago('compare', '-f', 'raw', '-F', 'qcow2', pattern, out);
    assert.equal(same.code, 0, same.stderr);
    assert.equal(same.stdout, 'Images are identical.\n', 'sizes within one sector are equal to qemu too');

    const changed = join(work, 'cli-changed.raw');
    copyFileSync(pattern, changed);
    const at = 3 * MiB + 777; // inside a hole of the pattern
    const fh = await open(changed, 'r+');
    await fh.write(Buffer.from([0x42]), 0, 1, at);
    await fh.close();
    const diff = await imago('compare', pattern, changed);
    const q = await runCommand('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', pattern, changed]);
    assert.equal(diff.code, 1, diff.stderr);
    assert.equal(q.code, 1);
    assert.equal(diff.stdout, `Content mismatch at offset ${at - (at % 512)}!\n`, 'the sector holding the difference, as qemu');
    assert.equal(diff.stdout, q.stdout, 'the same line qemu-img prints');

    const bigger = join(work, 'cli-bigger.qcow2');
    await sh('qemu-img', ['convert', '-q', '-O', 'qcow2', pattern, bigger]);
    await sh('qemu-img', ['resize', '-q', bigger, String(8 * MiB)]);
    const loose = await imago('compare', pattern, bigger);
    assert.equal(loose.code, 0, loose.stdout + loose.stderr);
    assert.match(loose.stdout, /Warning: Image size mismatch!\nImages are identical\./);
    const strict = await imago('compare', '-s', pattern, bigger);
    assert.equal(strict.code, 1);
    assert.equal(strict.stdout, 'Strict mode: Image size mismatch!\n');
  });

  await t.test('errors name what was wrong: unsafe source (1, findings), unknown format, bad option, missing file (2)', async () => {
    const base = await cached('convert-v1-base.qcow2', (tmp) => sh('qemu-img', ['create', '-q', '-f', 'qcow2', tmp, '1G']).then(() => undefined));
    const overlay = await cached('convert-v1-overlay.qcow2', (tmp) =>
      sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', tmp]).then(() => undefined),
    );
    const out = join(work, 'cli-err.raw');
    const unsafe = await imago('convert', '-O', 'raw', overlay, out);
    assert.equal(unsafe.code, 1);
    assert.match(unsafe.stderr, /refused by the safety checks:\n {2}ERROR BACKING_FILE: .*convert-v1-base\.qcow2/);

    const fmt = await imago('convert', '-O', 'qcow3', qcow2, out);
    assert.equal(fmt.code, 2);
    assert.match(fmt.stderr, /unknown output format "qcow3"; use one of raw, qcow2/);
    const opt = await imago('convert', '-O', 'qcow2', '-o', 'cluster_size=3K', qcow2, out);
    assert.equal(opt.code, 2);
    assert.match(opt.stderr, /cluster_size must be a power of two/);
    const notKv = await imago('convert', '-O', 'qcow2', '-o', 'cluster_size', qcow2, out);
    assert.equal(notKv.code, 2);
    assert.match(notKv.stderr, /option "cluster_size" is not key=value/);
    const missing = await imago('convert', '-O', 'raw', join(work, 'nope.img'), out);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /cannot open .*nope\.img: ENOENT/);
    const noO = await imago('convert', qcow2, out);
    assert.equal(noO.code, 2);
    assert.match(noO.stderr, /required option '-O, --output-format <fmt>'/);
    const cmpMissing = await imago('compare', qcow2, join(work, 'nope.img'));
    assert.equal(cmpMissing.code, 2);
    assert.match(cmpMissing.stderr, /imago compare: cannot open .*nope\.img/);
    const cmpDeclared = await imago('compare', '-f', 'vmdk', qcow2, pattern);
    assert.equal(cmpDeclared.code, 2);
    assert.match(cmpDeclared.stderr, /declared as vmdk but its bytes are qcow2/);
    assert.ok(!existsSync(out) && !existsSync(`${out}.part`));
  });
  await t.test('-t / -T: every qemu cache mode writes the identical image; flushes as the mode says; a bad mode is refused', async () => {
    const outputs: string[] = [];
    for (const mode of ['writeback', 'writethrough', 'none', 'directsync', 'unsafe']) {
      const out = join(work, `cli-cache-${mode}.qcow2`);
      // strace records the flushes: all modes but unsafe fdatasync the output before the rename
      const { flushes, ...r } = await convertTraced(out, '-t', mode, '-T', mode, '-O', 'qcow2', qcow2, out);
      assert.equal(r.code, 0, r.stderr);
      if (mode === 'unsafe') assert.equal(flushes, 0, 'unsafe flushes nothing');
      else assert.ok(flushes >= 2, `${mode}: the file and its directory are flushed (${flushes})`);
      if (mode === 'none' || mode === 'directsync')
        assert.match(r.stderr, new RegExp(`-t ${mode}: O_DIRECT is not used .*\\n.*-T ${mode}: O_DIRECT is not used`));
      else assert.equal(r.stderr, '');
      outputs.push(out);
    }
    // the default is qemu-img convert's: -t unsafe
    const dflt = join(work, 'cli-cache-default.qcow2');
    const d = await convertTraced(dflt, '-O', 'qcow2', qcow2, dflt);
    assert.equal(d.code, 0, d.stderr);
    assert.equal(d.flushes, 0, 'the default output cache mode is unsafe, as qemu-img convert');
    const first = await readFile(dflt);
    for (const out of outputs) assert.ok(first.equals(await readFile(out)), `${out} is byte for byte the default's output`);
    assert.equal((await runCommand('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', pattern, dflt])).code, 0);

    const bad = await imago('convert', '-t', 'writebak', '-O', 'raw', qcow2, join(work, 'cli-cache-bad.raw'));
    assert.equal(bad.code, 2);
    assert.equal(bad.stderr, 'imago convert: -t writebak: unknown cache mode; use one of writeback, writethrough, none, directsync, unsafe (as qemu-img)\n');
    const badSrc = await imago('convert', '-T', 'direct', '-O', 'raw', qcow2, join(work, 'cli-cache-bad.raw'));
    assert.equal(badSrc.code, 2);
    assert.match(badSrc.stderr, /-T direct: unknown cache mode/);
    assert.ok(!existsSync(join(work, 'cli-cache-bad.raw')) && !existsSync(join(work, 'cli-cache-bad.raw.part')));
  });

  await t.test('-t writeback on a large output starts writing back as it goes, then flushes once more before the rename', async () => {
    const big = join(work, 'cli-early-flush.raw');
    const fh = await open(big, 'w');
    for (let i = 0; i < 12; i++) await fh.write(patternBytes(16 * MiB, 100 + i), 0, 16 * MiB, i * 16 * MiB); // 192 MiB of data
    await fh.close();
    for (const mode of ['writeback', 'writethrough']) {
      const out = join(work, `cli-early-flush-${mode}.qcow2`);
      const { flushes, writebacks, copies, ...r } = await convertTraced(out, '-t', mode, '-O', 'qcow2', big, out);
      assert.equal(r.code, 0, r.stderr);
      if (mode === 'writeback' && copyEngine()) {
        // the kernel-copy path: the data is copied file to file, its writeback started every 8 MiB copied
        assert.ok(copies >= 1, `192 MiB copied with copy_file_range (${copies} calls)`);
        assert.ok(writebacks >= 192 / 8 - 1, `writeback started about every 8 MiB (${writebacks})`);
        assert.ok(flushes >= 2, `then the final fdatasync and the directory's fsync (${flushes})`);
      } else if (mode === 'writeback') {
        assert.ok(flushes >= 3, `192 MiB written: a background fdatasync or more, then the final one and the directory's fsync (${flushes})`);
      } else {
        // O_DSYNC (each write durable before the next): not the kernel-copy path (FileSink.canCopy)
        assert.equal(copies, 0, 'writethrough takes the read and write path');
        assert.ok(flushes >= 2, `writethrough: the file and its directory are flushed (${flushes})`);
      }
      assert.equal((await runCommand('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', big, out])).code, 0);
    }
    rmSync(big);
  });
});

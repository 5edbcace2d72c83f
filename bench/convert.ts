/**
 * bench/convert — `imago convert` next to `qemu-img convert` on the same files in the same run.
 *
 * Input: a sparse raw disk (default 2 GiB, issue 20's shape) holding about half its size in random
 * data scattered in runs of 64 KiB–4 MiB, plus explicitly written zero regions (stored zeros, which both tools
 * should turn into holes), and the same disk as qcow2 made by qemu-img. Paths: raw→qcow2,
 * qcow2→raw, raw→vmdk monolithicSparse and streamOptimized, raw→vhd dynamic, raw→vhdx, qcow2→vdi,
 * raw→qcow2 -c. Both tools run
 * as a process (`node bin/imago.js convert` — build dist/ first — and `qemu-img convert`), output to
 * the same directory. Each tool is timed twice: with `-t writeback` (the output flushed before the
 * tool ends: the ratio that counts) and with its defaults (both `-t unsafe`: no flush, imago
 * following qemu-img convert's default). The page cache cannot be dropped here, so the order rotates
 * run by run.
 *
 * Then the CLI's start (issue 20: local verbs start in ≤ 60 ms): `imago --version` and inspect,
 * convert and compare on small files (a 1 MiB raw, a 64 MiB empty qcow2), each the median of
 * `--starts` runs, next to `node -e 0` (Node's own start, the floor; run alternately with imago's,
 * so the difference holds on a loaded machine) and qemu-img doing the same.
 *
 *   npm run bench -- convert [--size 2G] [--runs 3] [--starts 30] [--only raw→qcow2,...] [--quick]
 *   (--quick: 64M, 1 run, 5 starts)
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { BENCH_DIR, median, numberOption, printTable, timeCommand } from './support/harness.js';

const BIN = join(import.meta.dirname, '..', 'bin', 'imago.js');
const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

interface Path {
  readonly name: string;
  readonly from: 'raw' | 'qcow2';
  /** output format for both tools (qemu's name) */
  readonly to: string;
  readonly options: string[];
  readonly compress: boolean;
}

const PATHS: readonly Path[] = [
  { name: 'raw → qcow2', from: 'raw', to: 'qcow2', options: [], compress: false },
  { name: 'qcow2 → raw', from: 'qcow2', to: 'raw', options: [], compress: false },
  { name: 'raw → vmdk monolithicSparse', from: 'raw', to: 'vmdk', options: ['subformat=monolithicSparse'], compress: false },
  { name: 'raw → vmdk streamOptimized', from: 'raw', to: 'vmdk', options: ['subformat=streamOptimized'], compress: false },
  { name: 'raw → vhd dynamic', from: 'raw', to: 'vpc', options: ['subformat=dynamic'], compress: false },
  { name: 'raw → vhdx', from: 'raw', to: 'vhdx', options: [], compress: false },
  { name: 'qcow2 → vdi', from: 'qcow2', to: 'vdi', options: [], compress: false },
  { name: 'raw → qcow2 -c', from: 'raw', to: 'qcow2', options: [], compress: true },
];

function parseSize(s: string): number {
  const m = /^(\d+(?:\.\d+)?)([KMG]?)$/i.exec(s);
  if (!m) throw new Error(`--size ${s}: use e.g. 4G, 512M`);
  return Math.round(Number(m[1]) * ({ '': 1, K: KiB, M: MiB, G: GiB } as Record<string, number>)[m[2]!.toUpperCase()]!);
}

/** Deterministic layout (xorshift32), random bytes from the CSPRNG (incompressible, like real data). */
async function makeSource(path: string, size: number): Promise<{ data: number; zeros: number }> {
  let x = 0x9e3779b9;
  const rnd = (n: number) => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  };
  const target = size / 2;
  const fh = await open(`${path}.tmp`, 'w');
  let data = 0;
  let zeros = 0;
  try {
    await fh.truncate(size);
    // walk the disk in steps of 1/256 (at least 8 MiB); each step gets half its length in data
    // chunks with random gaps (avg. the chunk's length), one chunk in 8 stored zeros instead
    const step = Math.max(8 * MiB, Math.floor(size / 256 / MiB) * MiB);
    for (let base = 0; base < size && data < target; base += step) {
      const end = Math.min(size, base + step);
      let inStep = 0;
      let at = base + rnd(64) * 4 * KiB;
      while (at < end && inStep < step / 2) {
        const len = Math.min(64 * KiB * (1 + rnd(64)), end - at); // 64 KiB – 4 MiB
        if (rnd(8) === 0) {
          await fh.write(Buffer.alloc(len), 0, len, at);
          zeros += len;
        } else {
          await fh.write(randomBytes(len), 0, len, at);
          data += len;
          inStep += len;
        }
        at += len + len * rnd(3);
      }
    }
    // data in the very last bytes of the disk
    await fh.write(randomBytes(4096), 0, 4096, size - 4096);
    data += 4096;
  } finally {
    await fh.close();
  }
  execFileSync('mv', [`${path}.tmp`, path]);
  return { data, zeros };
}

function allocated(path: string): number {
  return statSync(path).blocks * 512;
}

function mib(n: number): string {
  return (n / MiB).toFixed(0);
}

export async function run(args: string[]): Promise<void> {
  const arg = (name: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
  const size = parseSize(arg('--size') ?? (args.includes('--quick') ? '64M' : '2G'));
  const runs = numberOption(args, '--runs', 3, 1);
  const only = arg('--only')?.split(',');
  if (!existsSync(join(import.meta.dirname, '..', 'dist', 'cli', 'convert-command.js'))) {
    process.stderr.write('bench convert: build first (npx tsc -p tsconfig.build.json): bin/imago.js runs dist/\n');
    process.exit(2);
  }
  const dir = join(BENCH_DIR, 'convert');
  mkdirSync(dir, { recursive: true });
  const raw = join(dir, `src-${size}.raw`);
  const qcow2 = join(dir, `src-${size}.qcow2`);
  if (!existsSync(raw)) {
    const { data, zeros } = await makeSource(raw, size);
    process.stderr.write(`made ${raw}: ${mib(data)} MiB random data, ${mib(zeros)} MiB stored zeros\n`);
  }
  if (!existsSync(qcow2)) {
    execFileSync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, `${qcow2}.tmp`]);
    execFileSync('mv', [`${qcow2}.tmp`, qcow2]);
  }
  execFileSync('cat', [raw, qcow2], { stdio: ['ignore', 'ignore', 'inherit'] }); // warm the page cache alike for both

  const rows = [
    [
      'path',
      `imago -t writeback s (median of ${runs})`,
      'qemu-img -t writeback s',
      'ratio',
      'imago default s',
      'qemu-img default s',
      'ratio',
      'imago out MiB',
      'qemu out MiB',
      'same guest bytes',
    ],
    ['---', '---', '---', '---', '---', '---', '---', '---', '---', '---'],
  ];
  for (const p of PATHS) {
    if (only && !only.includes(p.name)) continue;
    const src = p.from === 'raw' ? raw : qcow2;
    const ext = p.to === 'vpc' ? 'vhd' : p.to;
    const ours = join(dir, `out-imago.${ext}`);
    const theirs = join(dir, `out-qemu.${ext}`);
    const oursArgs = [BIN, 'convert', '-f', p.from, '-O', p.to, ...p.options.flatMap((o) => ['-o', o]), ...(p.compress ? ['-c'] : []), src, ours];
    const qemuArgs = ['convert', '-f', p.from, '-O', p.to, ...p.options.flatMap((o) => ['-o', o]), ...(p.compress ? ['-c'] : []), src, theirs];
    const writeback = (args: string[], at: number) => [...args.slice(0, at), '-t', 'writeback', ...args.slice(at)];
    const tOurs: number[] = [];
    const tQemu: number[] = [];
    const tOursDefault: number[] = [];
    const tQemuDefault: number[] = [];
    for (let i = 0; i < runs; i++) {
      const jobs = [
        () => tOurs.push(timeCommand(process.execPath, writeback(oursArgs, 2))),
        () => tQemu.push(timeCommand('qemu-img', writeback(qemuArgs, 1))),
        () => tOursDefault.push(timeCommand(process.execPath, oursArgs)),
        () => tQemuDefault.push(timeCommand('qemu-img', qemuArgs)),
      ];
      // rotate the order run by run: no tool always meets the page cache the previous one left
      for (let k = 0; k < jobs.length; k++) {
        rmSync(ours, { force: true });
        rmSync(theirs, { force: true });
        jobs[(i + k) % jobs.length]!();
      }
    }
    // each job starts from no outputs; remake what the last one removed, to compare and size them
    if (!existsSync(theirs)) execFileSync('qemu-img', qemuArgs);
    if (!existsSync(ours)) execFileSync(process.execPath, oursArgs);
    let same = 'yes';
    try {
      execFileSync('qemu-img', ['compare', '-q', '-f', p.to, '-F', p.to, ours, theirs]);
    } catch {
      same = 'NO';
    }
    const mo = median(tOurs);
    const mq = median(tQemu);
    const mod = median(tOursDefault);
    const mqd = median(tQemuDefault);
    rows.push([
      p.name,
      mo.toFixed(2),
      mq.toFixed(2),
      (mo / mq).toFixed(2),
      mod.toFixed(2),
      mqd.toFixed(2),
      (mod / mqd).toFixed(2),
      mib(allocated(ours)),
      mib(allocated(theirs)),
      same,
    ]);
    rmSync(ours, { force: true });
    rmSync(theirs, { force: true });
  }
  process.stdout.write(
    `convert of a ${mib(size)} MiB sparse disk (½ random data in 64 KiB–4 MiB runs, stored zero regions), ${runs} runs each, order rotating\n`,
  );
  printTable(rows);
  startTable(dir, numberOption(args, '--starts', 30, 5));
}

/** Start-up of short CLI runs, in ms: imago, qemu-img doing the same, and Node's own start. */
function startTable(dir: string, starts: number): void {
  const tinyRaw = join(dir, 'tiny.raw');
  const emptyQcow2 = join(dir, 'empty.qcow2');
  writeFileSync(tinyRaw, randomBytes(MiB));
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', emptyQcow2, '64M']);
  const out = join(dir, 'tiny-out.qcow2');
  const verbs: { name: string; imago: string[]; qemu: string[] }[] = [
    { name: '--version', imago: ['--version'], qemu: ['--version'] },
    { name: 'inspect (qemu-img info) 64 MiB qcow2', imago: ['inspect', emptyQcow2], qemu: ['info', emptyQcow2] },
    { name: 'convert 1 MiB raw → qcow2', imago: ['convert', '-O', 'qcow2', tinyRaw, out], qemu: ['convert', '-O', 'qcow2', tinyRaw, out] },
    { name: 'compare qcow2 with raw', imago: ['compare', emptyQcow2, tinyRaw], qemu: ['compare', emptyQcow2, tinyRaw] },
  ];
  const once = (cmd: string, args: string[]) => {
    const start = process.hrtime.bigint();
    // compare exits 1 (the images differ): only the time matters here
    spawnSync(cmd, args, { stdio: 'ignore' });
    return Number(process.hrtime.bigint() - start) / 1e6;
  };
  const rows = [['command', `imago ms (median of ${starts})`, 'qemu-img ms', 'node -e 0 ms', 'imago − node ms', 'imago ≤ 60 ms']];
  rows.push(['---', '---', '---', '---', '---', '---']);
  for (const v of verbs) {
    // node -e 0 runs alternately with imago, so that both see the same load on a shared machine
    const ours: number[] = [];
    const node: number[] = [];
    for (let i = 0; i < starts; i++) {
      node.push(once(process.execPath, ['-e', '0']));
      ours.push(once(process.execPath, [BIN, ...v.imago]));
    }
    const qemu = median(Array.from({ length: starts }, () => once('qemu-img', v.qemu)));
    const [o, n] = [median(ours), median(node)];
    rows.push([v.name, o.toFixed(1), qemu.toFixed(1), n.toFixed(1), (o - n).toFixed(1), o <= 60 ? 'yes' : 'no']);
  }
  rmSync(out, { force: true });
  process.stdout.write('\nCLI start on small files\n');
  printTable(rows);
}

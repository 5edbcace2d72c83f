/**
 * bench/decompress — MB/s of decompressed output through our bounded decoders (`peel()` of
 * src/inspect/peel.ts: the path every upload, import and `imago inspect` takes, with the default
 * limits: counters, ratio and zero-bomb rules) next to the Debian tool alone in the same run
 * (`gzip -dc`, `xz -dc`, `zstd -dc`, `lbzip2 -dc` … `> /dev/null`: the decoder's own speed, no pipe).
 *
 * Input: a raw disk (default 384 MiB) laid out like a filesystem's: extents of real files from
 * /usr (binaries, libraries, text; each file 4 KiB-aligned with its tail slack zeroed) between
 * free regions of zeros (about a third of the disk), compressed once per codec and cached under
 * .cache/bench/decompress: gzip -6, xz -6 in one block (what `xz` wrote before 5.6 and most
 * published images are), xz -6 -T0 (independent blocks of 24 MiB: what `xz -T0` writes), zstd -3,
 * bzip2 -9. `--dense` leaves out the free regions (file data and the files' tail slack only).
 * The order of ours and the tool alternates run by run; medians.
 *
 *   npm run bench -- decompress [--mib 384] [--runs 5] [--dense] [--quick]   (--quick: 8 MiB, 1 run)
 */
import { spawnSync } from 'node:child_process';
import {
  createReadStream,
  existsSync,
  mkdirSync,
  openSync,
  closeSync,
  ftruncateSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  writeSync,
} from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_LIMITS } from '../src/formats/limits.js';
import { peel } from '../src/inspect/peel.js';
import { decoderCommand, type WrapperName } from '../src/io/decompress.js';
import { seededRandom } from '../test/support/prng.js';
import { BENCH_DIR, median, numberOption, printTable } from './support/harness.js';

const DIR = join(BENCH_DIR, 'decompress');
const KiB = 1024;
const MiB = 1024 * KiB;
/** what issue 20 asks of every codec */
const TARGET_MB_S = 100;

interface Codec {
  label: string;
  wrapper: WrapperName;
  suffix: string;
  /** the command that compresses stdin to stdout */
  compress: [string, ...string[]];
  /** the Debian tool decoding the file alone, writing to /dev/null */
  tool: (file: string) => [string, ...string[]];
  /** threads the tool decodes this stream on */
  threads: number;
}

const CORES = availableParallelism();

const CODECS: Codec[] = [
  { label: 'gzip -6', wrapper: 'gzip', suffix: 'gz', compress: ['gzip', '-6', '-c'], tool: (f) => ['gzip', '-dc', f], threads: 1 },
  { label: 'xz -6 (one block)', wrapper: 'xz', suffix: 'xz', compress: ['xz', '-6', '-T1', '-c'], tool: (f) => ['xz', '-dc', f], threads: 1 },
  { label: 'xz -6 -T0 (blocks)', wrapper: 'xz', suffix: 'mt.xz', compress: ['xz', '-6', '-T0', '-c'], tool: (f) => ['xz', '-dc', '-T0', f], threads: CORES },
  { label: 'zstd -3', wrapper: 'zstd', suffix: 'zst', compress: ['zstd', '-3', '-c', '-q'], tool: (f) => ['zstd', '-dcq', f], threads: 1 },
  {
    label: 'bzip2 -9',
    wrapper: 'bzip2',
    suffix: 'bz2',
    compress: ['bzip2', '-9', '-c'],
    tool: (f) => [decoderCommand('bzip2'), '-dc', f],
    threads: decoderCommand('bzip2') === 'lbzip2' ? CORES : 1,
  },
];

/** The regular files under /usr in path order: with the seeded layout, the same disk on every run on one machine. */
function* usrFiles(dir = '/usr'): Generator<string> {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1));
  } catch {
    return; // unreadable directory
  }
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory()) yield* usrFiles(p);
    else if (e.isFile()) yield p;
  }
}

/**
 * Writes the raw disk: data extents of 1–16 MiB filled with whole /usr files (each at a 4 KiB
 * boundary, at most 8 MiB of one file), free extents of 1–8 MiB left as holes (they read as zeros,
 * which is what the compressors see) unless `dense`.
 */
function makeDisk(path: string, size: number, dense: boolean): void {
  const random = seededRandom(0x9e3779b9);
  const rnd = (n: number) => Math.floor(random() * n);
  const files = usrFiles();
  const fd = openSync(`${path}.tmp`, 'w');
  let at = 0;
  try {
    while (at < size) {
      const extentEnd = Math.min(size, at + (1 + rnd(16)) * MiB);
      while (at < extentEnd) {
        const next = files.next();
        if (next.done) throw new Error('/usr holds less data than the disk asks for: give a smaller --mib');
        let bytes: Buffer;
        try {
          if (statSync(next.value).size > 8 * MiB) continue;
          bytes = readFileSync(next.value);
        } catch {
          continue; // unreadable file
        }
        const n = Math.min(bytes.length, extentEnd - at);
        if (n === 0) continue;
        writeSync(fd, bytes, 0, n, at);
        at += Math.ceil(n / (4 * KiB)) * 4 * KiB;
      }
      if (!dense) at += (1 + rnd(8)) * MiB;
    }
    ftruncateSync(fd, size);
  } finally {
    closeSync(fd);
  }
  renameSync(`${path}.tmp`, path);
}

function compressed(disk: string, c: Codec): string {
  const out = `${disk}.${c.suffix}`;
  if (existsSync(out)) return out;
  const inFd = openSync(disk, 'r');
  const outFd = openSync(`${out}.tmp`, 'w');
  try {
    const [cmd, ...args] = c.compress;
    const r = spawnSync(cmd, args, { stdio: [inFd, outFd, 'pipe'] });
    if (r.error || r.status !== 0) throw new Error(`${c.compress.join(' ')} failed: ${r.error?.message ?? r.stderr.toString().trim()}`);
  } finally {
    closeSync(inFd);
    closeSync(outFd);
  }
  renameSync(`${out}.tmp`, out);
  return out;
}

interface Timing {
  /** wall-clock seconds */
  wall: number;
  /** CPU seconds, every thread of every process involved */
  cpu: number;
}

/**
 * CPU seconds of this process's waited-for children so far: cutime + cstime of /proc/self/stat,
 * in clock ticks (USER_HZ, 100 on Linux whatever the kernel's HZ).
 */
function childrenCpu(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields from the 3rd (state) on
  return (Number(fields[13]) + Number(fields[14])) / 100;
}

/** Our bounded decoder producing every byte of `file` (output consumed and dropped). */
async function ours(file: string, expected: number): Promise<Timing> {
  const t = process.hrtime.bigint();
  const cpu = process.cpuUsage();
  const children = childrenCpu();
  const peeled = await peel(createReadStream(file), DEFAULT_LIMITS);
  let bytes = 0;
  for await (const chunk of peeled.output) bytes += chunk.length;
  const wall = Number(process.hrtime.bigint() - t) / 1e9;
  const own = process.cpuUsage(cpu);
  if (bytes !== expected) throw new Error(`ours decoded ${bytes} bytes of ${file}, not ${expected}`);
  return { wall, cpu: (own.user + own.system) / 1e6 + childrenCpu() - children };
}

/** The tool alone, writing to /dev/null. */
function tool(argv: [string, ...string[]]): Timing {
  const devNull = openSync('/dev/null', 'w');
  try {
    const t = process.hrtime.bigint();
    const children = childrenCpu();
    const [cmd, ...args] = argv;
    const r = spawnSync(cmd, args, { stdio: ['ignore', devNull, 'pipe'] });
    const wall = Number(process.hrtime.bigint() - t) / 1e9;
    if (r.error || r.status !== 0) throw new Error(`${argv.join(' ')} failed: ${r.error?.message ?? r.stderr.toString().trim()}`);
    return { wall, cpu: childrenCpu() - children };
  } finally {
    closeSync(devNull);
  }
}

export async function run(args: string[]): Promise<void> {
  const mib = numberOption(args, '--mib', 384, 8);
  const runs = numberOption(args, '--runs', 5, 1);
  mkdirSync(DIR, { recursive: true });
  const dense = args.includes('--dense');
  const disk = join(DIR, `disk-${dense ? 'dense-' : ''}${mib}m.raw`);
  const size = mib * MiB;
  if (!existsSync(disk)) makeDisk(disk, size, dense);
  const mb = size / 1e6;
  const rows: string[][] = [
    [
      'codec',
      'compressed (MiB)',
      'our decoder',
      'ours (MB/s)',
      'tool alone',
      'tool (MB/s)',
      'ratio (time ours/tool)',
      `ours ≥ ${TARGET_MB_S}`,
      'CPU s ours / tool',
      'tool on free cores (MB/s)',
    ],
  ];
  for (const c of CODECS) {
    const file = compressed(disk, c);
    const argv = c.tool(file);
    const o: Timing[] = [];
    const p: Timing[] = [];
    for (let i = 0; i < runs; i++) {
      if (i % 2 === 0) {
        o.push(await ours(file, size));
        p.push(tool(argv));
      } else {
        p.push(tool(argv));
        o.push(await ours(file, size));
      }
    }
    const [ow, pw] = [median(o.map((x) => x.wall)), median(p.map((x) => x.wall))];
    const [oc, pc] = [median(o.map((x) => x.cpu)), median(p.map((x) => x.cpu))];
    rows.push([
      c.label,
      (statSync(file).size / MiB).toFixed(1),
      decoderCommand(c.wrapper),
      (mb / ow).toFixed(0),
      argv.slice(0, -1).join(' '),
      (mb / pw).toFixed(0),
      (ow / pw).toFixed(2),
      mb / ow >= TARGET_MB_S ? 'yes' : 'no',
      `${oc.toFixed(2)} / ${pc.toFixed(2)}`,
      (mb / (pc / c.threads)).toFixed(0),
    ]);
  }
  printTable(rows);
  process.stdout.write(
    `\n${mib} MiB raw disk${dense ? ' without free space' : ''} (${disk}); MB/s = 10^6 bytes of output per second of wall clock; CPU s = every thread of every process ` +
      `(ours: node + the decoder child); tool on free cores = output / (its CPU s / the threads it decodes on), what it would do if no ` +
      `other load took its cores; ${runs} run(s) each, alternating order, medians; ${CORES} cores, shared: noisy\n`,
  );
}

/**
 * bench/inspect — median in-process `inspectFile` time per format for a 1 GiB and a 1 TiB (sparse)
 * image, next to `qemu-img info` of the same files (a process per call, which is how Glance and
 * operators use it). Files are made with qemu-img under .cache/bench (sparse: they take little disk).
 *
 *   npm run bench -- inspect [--runs N] [--quick]   (--quick: 3 runs per cell)
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { inspectFile } from '../src/inspect/inspect-file.js';
import { numberOption } from './support/harness.js';

const DIR = join(import.meta.dirname, '..', '.cache', 'bench', 'inspect');

interface Case {
  label: string;
  qemuFormat: string;
  options: string[];
}

const CASES: Case[] = [
  { label: 'raw', qemuFormat: 'raw', options: [] },
  { label: 'qcow2', qemuFormat: 'qcow2', options: [] },
  { label: 'qcow2 (extended L2, zstd)', qemuFormat: 'qcow2', options: ['extended_l2=on,cluster_size=128k,compression_type=zstd'] },
  { label: 'vmdk monolithicSparse', qemuFormat: 'vmdk', options: ['subformat=monolithicSparse'] },
  { label: 'vmdk streamOptimized', qemuFormat: 'vmdk', options: ['subformat=streamOptimized'] },
  { label: 'vdi', qemuFormat: 'vdi', options: [] },
  { label: 'vhd dynamic', qemuFormat: 'vpc', options: ['subformat=dynamic'] },
  { label: 'vhd fixed', qemuFormat: 'vpc', options: ['subformat=fixed'] },
  { label: 'vhdx', qemuFormat: 'vhdx', options: [] },
  { label: 'qed', qemuFormat: 'qed', options: [] },
  { label: 'parallels', qemuFormat: 'parallels', options: [] },
];

const SIZES = [
  ['1 GiB', '1G'],
  ['1 TiB', '1T'],
] as const;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function make(c: Case, size: string): string {
  mkdirSync(DIR, { recursive: true });
  const file = join(DIR, `${c.label.replace(/[^a-z0-9]+/gi, '-')}-${size}.img`);
  if (!existsSync(file)) {
    const args = ['create', '-q', '-f', c.qemuFormat];
    for (const o of c.options) args.push('-o', o);
    try {
      execFileSync('qemu-img', [...args, `${file}.tmp`, size], { stdio: 'pipe' });
    } catch (e) {
      rmSync(`${file}.tmp`, { force: true });
      throw e;
    }
    execFileSync('mv', [`${file}.tmp`, file]);
  }
  return file;
}

export async function run(args: string[]): Promise<void> {
  const runs = numberOption(args, '--runs', 25, 3);
  const rows: string[][] = [['image', 'size', 'imago (ms)', 'qemu-img info (ms)', 'ratio', 'format / virtual size agree']];
  for (const c of CASES) {
    for (const [sizeLabel, size] of SIZES) {
      let file: string;
      try {
        file = make(c, size);
      } catch (e) {
        rows.push([c.label, sizeLabel, '-', '-', '-', `qemu-img create failed: ${(e as Error).message.split('\n')[0]}`]);
        continue;
      }
      const ours: number[] = [];
      let report = await inspectFile(file);
      for (let i = 0; i < 3; i++) report = await inspectFile(file); // warm-up
      for (let i = 0; i < runs; i++) {
        const t = process.hrtime.bigint();
        report = await inspectFile(file);
        ours.push(Number(process.hrtime.bigint() - t) / 1e6);
      }
      const peer: number[] = [];
      let info: { format: string; 'virtual-size': number } | undefined;
      for (let i = 0; i < Math.min(runs, 10); i++) {
        const t = process.hrtime.bigint();
        const r = spawnSync('qemu-img', ['info', '--output=json', '-f', c.qemuFormat, file], { encoding: 'utf8' });
        peer.push(Number(process.hrtime.bigint() - t) / 1e6);
        if (r.status === 0) info = JSON.parse(r.stdout);
      }
      const o = median(ours);
      const p = median(peer);
      const agree = info ? String(info['virtual-size']) === String(report.virtualSize) && report.verdict !== undefined : false;
      rows.push([
        c.label,
        sizeLabel,
        o.toFixed(3),
        p.toFixed(1),
        (o / p).toFixed(4),
        `${report.format} ${agree ? 'yes' : `NO (${info?.['virtual-size']} vs ${report.virtualSize})`}`,
      ]);
    }
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows) process.stdout.write(`| ${r.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |\n`);
  process.stdout.write(`\nruns per cell: ${runs} (imago, in-process, after 3 warm-ups), ${Math.min(runs, 10)} (qemu-img info, one process each); medians\n`);
}

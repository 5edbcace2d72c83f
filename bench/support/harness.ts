/** Shared pieces for the service benchmarks: a real `imago serve` process, test files, timing. */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, openSync, writeSync, closeSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const BENCH_DIR = join(import.meta.dirname, '..', '..', '.cache', 'bench');
const BIN = join(import.meta.dirname, '..', '..', 'bin', 'imago.js');

/** A file of `mib` MiB of incompressible-looking data (a 1 MiB random block, varied per MiB). */
export function dataFile(mib: number): string {
  mkdirSync(BENCH_DIR, { recursive: true });
  const path = join(BENCH_DIR, `data-${mib}m.raw`);
  if (existsSync(path)) return path;
  const seed = randomBytes(1 << 20);
  const fd = openSync(`${path}.tmp`, 'w');
  for (let i = 0; i < mib; i++) {
    seed.writeUInt32LE(i, 0);
    writeSync(fd, seed);
  }
  closeSync(fd);
  execFileSync('mv', [`${path}.tmp`, path]);
  return path;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      srv.close(() => (typeof a === 'object' && a ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

export interface Served {
  url: string;
  proc: ChildProcess;
  dataDir: string;
  stop(): Promise<void>;
}

export async function serve(extra: string[] = []): Promise<Served> {
  const dataDir = mkdtempSync(join(tmpdir(), 'imago-bench-'));
  const port = await freePort();
  const proc = spawn(process.execPath, [BIN, 'serve', '--data', dataDir, '--listen', `127.0.0.1:${port}`, '--quiet', ...extra], { stdio: 'ignore' });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 200; i++) {
    try {
      if ((await fetch(`${url}/api/v1/healthz`)).ok) break;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    url,
    proc,
    dataDir,
    async stop() {
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      await exited;
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export async function createImage(url: string, name: string): Promise<string> {
  const r = await fetch(`${url}/api/v1/images`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name }) });
  return ((await r.json()) as { id: string }).id;
}

/** Seconds a command takes (wall clock). */
export function timeCommand(cmd: string, args: string[]): number {
  const t = process.hrtime.bigint();
  execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 24 });
  return Number(process.hrtime.bigint() - t) / 1e9;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

/** Peak resident set (VmHWM) of a process, in bytes. */
export function peakRss(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

export function printTable(rows: string[][]): void {
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  for (const r of rows) process.stdout.write(`| ${r.map((c, i) => (c ?? '').padEnd(w[i]!)).join(' | ')} |\n`);
}

/** Shared pieces for the service benchmarks: a real `imago serve` process, test files, timing. */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, openSync, writeSync, closeSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
// one way to start a real server and find a port, for the benches and the tests alike
import { freePort, spawnServer, type SpawnedServer } from '../../test/support/spawned-server.js';

export { freePort };

export const REPO_ROOT = join(import.meta.dirname, '..', '..');
export const BENCH_DIR = join(REPO_ROOT, '.cache', 'bench');

/**
 * A numeric option: `--name N` when given, else the quick default under `--quick` (tiny sizes, one
 * run: the mode the test suite runs so that a bench cannot rot), else the full default.
 */
export function numberOption(args: string[], name: string, full: number, quick: number): number {
  const at = args.indexOf(name);
  if (at >= 0) {
    const n = Number(args[at + 1]);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} ${args[at + 1] ?? ''}: give a positive number`);
    return n;
  }
  return args.includes('--quick') ? quick : full;
}

/**
 * A file of `mib` MiB of incompressible-looking data (a 1 MiB random block, varied per MiB);
 * `variant` > 0 gives another file of the same size with other bytes.
 */
export function dataFile(mib: number, variant = 0): string {
  mkdirSync(BENCH_DIR, { recursive: true });
  const path = join(BENCH_DIR, `data-${mib}m${variant > 0 ? `-v${variant}` : ''}.raw`);
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

export interface Served {
  url: string;
  proc: ChildProcess;
  dataDir: string;
  /** the server-admin token the first start wrote to `<data>/admin.token` */
  token: string;
  /** curl arguments that send the token */
  curlAuth: string[];
  /** fetch as the server admin */
  fetch(path: string, init?: RequestInit): Promise<Response>;
  stop(): Promise<void>;
}

/**
 * A real `imago serve` (the built dist/, via bin/imago.js) on a free loopback port with a fresh
 * data dir, SQLite and filesystem blobs. Its first start mints the server-admin token into
 * `<data>/admin.token`; every request of the benches sends it. `env` is added to the server's environment.
 */
export async function serve(extra: string[] = [], env: Record<string, string> = {}): Promise<Served> {
  if (!existsSync(join(REPO_ROOT, 'dist', 'cli', 'main.js'))) {
    throw new Error('bin/imago.js runs the compiled dist/: build it first with "npx tsc -p tsconfig.build.json"');
  }
  const dataDir = mkdtempSync(join(tmpdir(), 'imago-bench-'));
  let server: SpawnedServer;
  try {
    server = await spawnServer(dataDir, { args: extra, env });
  } catch (e) {
    rmSync(dataDir, { recursive: true, force: true });
    throw e;
  }
  const { url, proc, token } = server;
  return {
    url,
    proc,
    dataDir,
    token,
    curlAuth: ['-H', `authorization: Bearer ${token}`],
    fetch: (path, init = {}) => {
      const headers = new Headers(init.headers);
      headers.set('authorization', `Bearer ${token}`);
      return fetch(`${url}${path}`, { ...init, headers });
    },
    async stop() {
      await server.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** curl arguments that upload `file` as image `id`'s bytes (PUT .../file, the admin token). */
export function uploadArgs(s: Served, id: string, file: string): string[] {
  return [...s.curlAuth, '-H', 'content-type: application/octet-stream', '-T', file, `${s.url}/api/v1/images/${id}/file`];
}

/** Creates an image record (state pending) and returns its id; a refusal stops the bench. */
export async function createImage(s: Served, name: string): Promise<string> {
  const r = await s.fetch('/api/v1/images', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name }) });
  if (!r.ok) throw new Error(`imago: POST /api/v1/images answered ${r.status}: ${await r.text()}`);
  return ((await r.json()) as { id: string }).id;
}

/** Deletes an image; a refusal stops the bench. */
export async function deleteImage(s: Served, id: string): Promise<void> {
  const r = await s.fetch(`/api/v1/images/${id}`, { method: 'DELETE' });
  if (!r.ok) throw new Error(`imago: DELETE /api/v1/images/${id} answered ${r.status}: ${await r.text()}`);
}

/**
 * The plain node:http sink that receives a body and discards it, in its own process. A GET is
 * answered with a page holding one file input (`#file`), so a browser can send a file to it from
 * the same origin.
 */
export async function discardingSink(): Promise<{ url: string; proc: ChildProcess; stop(): void }> {
  const port = await freePort();
  const page = '<!doctype html><title>sink</title><input type=file id=file aria-label=file>';
  const handler = `(q,r)=>{if(q.method==='GET'){r.setHeader('content-type','text/html');return r.end(${JSON.stringify(page)})}q.resume();q.on('end',()=>r.end('ok'))}`;
  const proc = spawn(process.execPath, ['-e', `require('http').createServer(${handler}).listen(${port},'127.0.0.1')`], {
    stdio: 'ignore',
  });
  const url = `http://127.0.0.1:${port}/`;
  for (let i = 0; i < 200; i++) {
    try {
      await fetch(url, { method: 'POST', body: '' });
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  return { url, proc, stop: () => proc.kill() };
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

/** The regular files under `dir`, at any depth. */
function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true })
    .map((entry) => join(dir, String(entry)))
    .filter((path) => statSync(path).isFile());
}

/** Drops every file under `dir` from the page cache (GNU dd: `iflag=nocache count=0` = the whole file); dirty pages stay: `sync` first. */
export function evictPageCache(dir: string): void {
  for (const path of filesUnder(dir)) execFileSync('dd', [`if=${path}`, 'iflag=nocache', 'count=0', 'status=none']);
}

/** Reads every file under `dir` into the page cache. */
export function warmPageCache(dir: string): void {
  for (const path of filesUnder(dir)) execFileSync('dd', [`if=${path}`, 'of=/dev/null', 'bs=4M', 'status=none']);
}

/**
 * The real `imago serve` as a child process (bin/imago.js runs the compiled dist/, which the test
 * command builds first), for tests that must see the process from outside: that it is still alive
 * (in-process, an error escaping a request would be swallowed by the test runner's own
 * uncaughtException handler), its memory (VmRSS/VmHWM from /proc), what a kill -9 leaves behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { adminFetch, registerAdminToken } from './server.js';

export const BIN = join(import.meta.dirname, '..', '..', 'bin', 'imago.js');

export interface SpawnedServer {
  proc: ChildProcess;
  url: string;
  token: string;
  /** everything the process wrote to stderr so far */
  stderr(): string;
  /** true while the process runs */
  alive(): boolean;
  /** kB from /proc/PID/status: current resident set and its high-water mark */
  memory(): { rssKiB: number; hwmKiB: number };
  /** SIGKILL, and wait for the exit */
  kill9(): Promise<void>;
  /** SIGTERM, and wait for the exit (SIGKILL after 10 s); resolves to the exit code */
  stop(): Promise<number | null>;
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

/** Starts `imago serve --data DIR` on a free loopback port (or `port`: a restart on the same address) and waits until /healthz answers. */
export async function spawnServer(dataDir: string, opts: { args?: string[]; env?: Record<string, string>; port?: number } = {}): Promise<SpawnedServer> {
  const port = opts.port ?? (await freePort());
  const proc = spawn(process.execPath, [BIN, 'serve', '--data', dataDir, '--listen', `127.0.0.1:${port}`, '--quiet', ...(opts.args ?? [])], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, IMAGO_GC_GRACE_MS: '0', ...opts.env },
  });
  let stderr = '';
  proc.stderr!.on('data', (d) => (stderr += d));
  const url = `http://127.0.0.1:${port}`;
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const alive = () => proc.exitCode === null && proc.signalCode === null;
  const server: SpawnedServer = {
    proc,
    url,
    token: '',
    stderr: () => stderr,
    alive,
    memory() {
      const status = readFileSync(`/proc/${proc.pid}/status`, 'utf8');
      const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
      return { rssKiB: kib('VmRSS'), hwmKiB: kib('VmHWM') };
    },
    async kill9() {
      if (alive()) proc.kill('SIGKILL');
      await exited;
    },
    async stop() {
      if (alive()) {
        proc.kill('SIGTERM');
        const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(t);
      }
      return proc.exitCode;
    },
  };
  for (let i = 0; i < 300; i++) {
    if (!alive()) throw new Error(`imago serve exited: ${stderr}`);
    try {
      if ((await adminFetch(`${url}/api/v1/healthz`)).ok) {
        server.token = registerAdminToken(url, dataDir);
        return server;
      }
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  proc.kill('SIGKILL');
  throw new Error(`imago serve did not start: ${stderr}`);
}

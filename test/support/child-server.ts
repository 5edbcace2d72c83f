/**
 * `imago serve` as a child process on 127.0.0.1 (from the TypeScript sources through tsx, so no
 * build is needed), for tests whose question is "does the process survive": an error that escapes
 * a request ends this child, which the test sees (`exited`), instead of being swallowed by the test
 * runner's own uncaughtException handler as it would be in-process.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { adminFetch as fetch, registerAdminToken } from './server.js';

const MAIN = join(import.meta.dirname, '..', '..', 'src', 'cli', 'main.ts');

export interface ChildServer {
  url: string;
  proc: ChildProcess;
  /** what the child wrote to stderr so far (its crash report, if it died) */
  stderr(): string;
  /** SIGTERM, then waits; resolves to the exit code (SIGKILL after 10 s) */
  stop(): Promise<number | null>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      srv.close(() => (typeof a === 'object' && a ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

export async function startChildServer(dataDir: string, env: Record<string, string> = {}): Promise<ChildServer> {
  const port = await freePort();
  const script = `import(${JSON.stringify(MAIN)}).then((m) => m.main(process.argv.slice(1))).then((code) => { process.exitCode = code; })`;
  const proc = spawn(process.execPath, ['--import', 'tsx', '-e', script, 'serve', '--data', dataDir, '--listen', `127.0.0.1:${port}`, '--quiet'], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, IMAGO_GC_GRACE_MS: '0', ...env },
  });
  let stderr = '';
  proc.stderr!.on('data', (d) => (stderr += d));
  const url = `http://127.0.0.1:${port}`;
  const server: ChildServer = {
    url,
    proc,
    stderr: () => stderr,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
  for (let i = 0; i < 600; i++) {
    if (proc.exitCode !== null) throw new Error(`imago serve exited: ${stderr}`);
    try {
      if ((await fetch(`${url}/api/v1/healthz`)).ok) {
        registerAdminToken(url, dataDir);
        return server;
      }
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  proc.kill('SIGKILL');
  throw new Error(`imago serve did not start: ${stderr}`);
}

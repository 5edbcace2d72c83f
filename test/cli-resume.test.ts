/**
 * The CLI's resumable upload (tus) as a user meets it: the real `imago` bin against a real server.
 * A server that goes away mid-upload (SIGKILL, restarted on the same address) is retried by the
 * CLI itself, visibly; a CLI killed mid-upload continues with `--resume` from the server's offset
 * into the same image.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { seededRandom } from './support/prng.js';
import { adminFetch as fetch, startTestServer } from './support/server.js';
import { BIN, freePort, spawnServer } from './support/spawned-server.js';

const work = mkdtempSync(join(tmpdir(), 'imago-cli-resume-'));
after(() => rmSync(work, { recursive: true, force: true }));
const env = { ...process.env, XDG_STATE_HOME: join(work, 'state') };

function randomFile(name: string, size: number, seed: number): { path: string; sha256: string } {
  const next = seededRandom(seed);
  const bytes = Buffer.alloc(size);
  for (let i = 0; i < size; i += 4) bytes.writeUInt32LE(Math.floor(next() * 0x100000000), i);
  const path = join(work, name);
  writeFileSync(path, bytes);
  return { path, sha256: createHash('sha256').update(bytes).digest('hex') };
}

/** The CLI as a child process; resolves with its exit code and output. */
function imago(args: string[]) {
  const proc = spawn(process.execPath, [BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (d) => (stdout += d));
  proc.stderr.on('data', (d) => (stderr += d));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((r) =>
    proc.once('exit', (code, signal) => r({ code, signal, stdout, stderr })),
  );
  return { proc, done };
}

/** The bytes the server holds of its one resumable upload (its part file), 0 while there is none. */
function received(dataDir: string): number {
  const dir = join(dataDir, 'uploads-resumable');
  let files: string[] = [];
  try {
    files = readdirSync(dir);
  } catch {
    return 0;
  }
  return files.length === 1 ? statSync(join(dir, files[0]!)).size : 0;
}

async function until(what: string, f: () => boolean, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('CLI killed mid-upload: --resume continues into the same image from the server offset', async () => {
  const s = await startTestServer();
  try {
    const size = 16 * 1024 * 1024;
    const f = randomFile('cli-kill.raw', size, 11);
    const common = ['--server', s.url, '--token', s.token, '-o', 'json'];
    const first = imago(['image', 'create', '--name', 'cli-resume', '--file', f.path, '--resumable', '--limit-rate', '4M', ...common]);
    await until('4 MiB on the server', () => received(s.dataDir) >= 4 * 1024 * 1024);
    first.proc.kill('SIGKILL');
    const killed = await first.done;
    assert.equal(killed.signal, 'SIGKILL');
    const held = received(s.dataDir);
    assert.ok(held < size, `the server holds part of the file (${held})`);
    const second = await imago(['image', 'create', '--name', 'cli-resume', '--file', f.path, '--resume', ...common]).done;
    assert.equal(second.code, 0, second.stderr);
    const m = /resuming the upload of .* at (\d+) of (\d+) bytes/.exec(second.stderr);
    assert.ok(m, `says where it resumes: ${second.stderr}`);
    assert.ok(Number(m[1]) >= held, `resumed at ${m[1]}, not from the start`);
    const img = JSON.parse(second.stdout) as { id: string; state: string; digest: string };
    assert.equal(img.state, 'ready');
    assert.equal(img.digest, `sha256:${f.sha256}`);
    const list = (await (await fetch(`${s.url}/api/v1/images?name=cli-resume`)).json()) as { images: unknown[] };
    assert.equal(list.images.length, 1, 'one image: the resumed run did not create another');
    assert.deepEqual(readdirSync(join(work, 'state', 'imago', 'uploads')), [], 'the state file is removed once the upload ended');
  } finally {
    await s.stop();
  }
});

test('the server goes away mid-upload and comes back: the CLI retries by itself, visibly, and ends ready', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'imago-cli-retry-'));
  after(() => rmSync(dataDir, { recursive: true, force: true }));
  const port = await freePort();
  let srv = await spawnServer(dataDir, { port });
  try {
    const size = 16 * 1024 * 1024;
    const f = randomFile('cli-retry.raw', size, 12);
    const run = imago([
      'image',
      'create',
      '--name',
      'cli-retry',
      '--file',
      f.path,
      '--limit-rate',
      '4M',
      '--server',
      srv.url,
      '--token',
      srv.token,
      '-o',
      'json',
    ]);
    await until('4 MiB on the server', () => received(dataDir) >= 4 * 1024 * 1024);
    await srv.kill9();
    srv = await spawnServer(dataDir, { port });
    const r = await run.done;
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /connection lost .*retrying in [\d.]+ s \(attempt 1\/10\)/);
    const img = JSON.parse(r.stdout) as { state: string; digest: string };
    assert.equal(img.state, 'ready');
    assert.equal(img.digest, `sha256:${f.sha256}`);
  } finally {
    await srv.stop();
  }
});

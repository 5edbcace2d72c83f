/**
 * The `imago` command as a user runs it: the real bin, real files made by qemu-img, exit codes.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { cached, patternedRaw, qemuCreate, sh } from './support/qemu.js';

const BIN = join(import.meta.dirname, '..', 'bin', 'imago.js');

function imago(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('inspect prints a table and exits 0 for safe images', async () => {
  const raw = await patternedRaw('cli-raw-4m.img', 4 << 20);
  const qcow2 = await qemuCreate('cli-10g.qcow2', 'qcow2', '10G');
  const r = imago('inspect', raw, qcow2);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^FILE\s+FORMAT\s+SUBFORMAT\s+VIRTUAL SIZE\s+FILE SIZE\s+VERDICT/);
  assert.match(r.stdout, new RegExp(`${raw.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\s+raw\\s+-\\s+4 MiB\\s+4 MiB\\s+safe`));
  assert.match(r.stdout, /cli-10g\.qcow2\s+qcow2\s+\S+\s+10 GiB/);
});

test('inspect --json prints one object per file with the documented fields', async () => {
  const raw = await patternedRaw('cli-raw-4m.img', 4 << 20);
  const qcow2 = await qemuCreate('cli-10g.qcow2', 'qcow2', '10G');
  const r = imago('inspect', '--json', raw, qcow2);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.equal(lines.length, 2);
  assert.equal(lines[0].format, 'raw');
  assert.equal(lines[0].virtualSize, 4 << 20);
  assert.equal(lines[0].verdict, 'safe');
  assert.deepEqual(lines[0].findings, []);
  assert.equal(lines[1].format, 'qcow2');
  assert.equal(lines[1].virtualSize, 10 * 1024 ** 3);
  for (const l of lines) for (const k of ['file', 'format', 'virtualSize', 'fileSize', 'verdict', 'findings']) assert.ok(k in l, k);
});

test('a claimed format that the bytes contradict is refused with exit 1 and a reason', async () => {
  const qcow2 = await qemuCreate('cli-10g.qcow2', 'qcow2', '10G');
  const r = imago('inspect', '--claimed-format', 'raw', qcow2);
  assert.equal(r.code, 1);
  assert.match(r.stdout, /refused/);
  assert.match(r.stdout, /FORMAT_MISMATCH: the image was declared as raw but its bytes are qcow2/);
  const ok = imago('inspect', '--claimed-format', 'qcow2', qcow2);
  assert.equal(ok.code, 0, ok.stdout);
});

test('a hostile image (qcow2 with a backing file) is refused with exit 1, explained', async () => {
  const base = await qemuCreate('cli-base.qcow2', 'qcow2', '1G');
  const overlay = await cached('cli-overlay.qcow2', async (tmp) => {
    await sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', tmp]);
  });
  const r = imago('inspect', '--json', overlay);
  assert.equal(r.code, 1, r.stdout + r.stderr);
  const rep = JSON.parse(r.stdout);
  assert.equal(rep.verdict, 'refused');
  const f = rep.findings.find((x: { code: string }) => x.code === 'BACKING_FILE');
  assert.ok(f, r.stdout);
  assert.equal(f.severity, 'error');
  assert.ok(f.message.includes(base), f.message);
});

test('compressed files report their wrapper and the inner image', async () => {
  const qcow2 = await qemuCreate('cli-10g.qcow2', 'qcow2', '10G');
  const gz = await cached('cli-10g.qcow2.gz', async (tmp) => {
    await sh('sh', ['-c', `gzip -c ${qcow2} > ${tmp}`]);
  });
  const r = imago('inspect', '--json', gz);
  assert.equal(r.code, 0, r.stderr);
  const rep = JSON.parse(r.stdout);
  assert.equal(rep.format, 'qcow2');
  assert.equal(rep.virtualSize, 10 * 1024 ** 3);
  assert.equal(rep.compression[0].format, 'gzip');
  const table = imago('inspect', gz);
  assert.match(table.stdout, /qcow2 \(in gzip\)/);
});

test('usage and I/O errors exit 2 with a message', async () => {
  const missing = imago('inspect', '/nonexistent/disk.qcow2');
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /nonexistent\/disk\.qcow2: ENOENT/);
  const noArgs = imago('inspect');
  assert.equal(noArgs.code, 2);
  assert.match(noArgs.stderr, /missing required argument/);
  const badClaim = imago('inspect', '--claimed-format', 'floppy', BIN);
  assert.equal(badClaim.code, 2);
  assert.match(badClaim.stderr, /unknown --claimed-format "floppy"/);
  const dir = imago('inspect', import.meta.dirname);
  assert.equal(dir.code, 2);
  assert.match(dir.stderr, /not a regular file/);
  const empty = join(import.meta.dirname, '..', '.cache', 'fixtures', 'cli-empty.img');
  writeFileSync(empty, '');
  const e = imago('inspect', '--json', empty);
  assert.equal(e.code, 0, e.stderr);
  assert.equal(JSON.parse(e.stdout).format, 'raw');
});

/** The CLI with exactly these IMAGO_* variables (none inherited). */
function imagoEnv(env: Record<string, string>, ...args: string[]) {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('IMAGO_')));
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { ...clean, ...env }, timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const STACK_LINE = /^\s+at .+:\d+:\d+\)?$/m;

test('an unexpected error prints one line "imago: <message>"; the stack trace only with --debug or IMAGO_DEBUG=1', async () => {
  const busy = net.createServer();
  await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
  const listen = `127.0.0.1:${(busy.address() as net.AddressInfo).port}`;
  const data = mkdtempSync(join(tmpdir(), 'imago-cli-err-'));
  try {
    const plain = imagoEnv({}, 'serve', '--quiet', '--listen', listen, '--data', data);
    assert.equal(plain.code, 2, plain.stderr);
    assert.match(plain.stderr, /^imago: listen EADDRINUSE: address already in use 127\.0\.0\.1:\d+ \(run again with --debug for the stack trace\)\n$/);
    assert.doesNotMatch(plain.stderr, STACK_LINE);
    for (const debug of [
      imagoEnv({}, '--debug', 'serve', '--quiet', '--listen', listen, '--data', data),
      imagoEnv({}, 'serve', '--quiet', '--listen', listen, '--data', data, '--debug'),
      imagoEnv({ IMAGO_DEBUG: '1' }, 'serve', '--quiet', '--listen', listen, '--data', data),
    ]) {
      assert.equal(debug.code, 2, debug.stderr);
      assert.match(debug.stderr, /^imago: Error: listen EADDRINUSE/);
      assert.match(debug.stderr, STACK_LINE);
    }
    const badConfig = imagoEnv({ IMAGO_MAX_IMAGE_SIZE: 'lots' }, 'gc', '--check', '--data', data);
    assert.equal(badConfig.code, 2, badConfig.stderr);
    assert.match(badConfig.stderr, /^imago: .*max image size/);
    assert.equal(badConfig.stderr.trim().split('\n').length, 1, badConfig.stderr);
  } finally {
    busy.close();
    rmSync(data, { recursive: true, force: true });
  }
});

test('a missing PostgreSQL database is one clear message that says to create it, without a stack trace', () => {
  const name = `nonexistent_db_${randomBytes(4).toString('hex')}`;
  const data = mkdtempSync(join(tmpdir(), 'imago-cli-pg-'));
  try {
    const r = imagoEnv({ IMAGO_DATABASE_URL: `postgres://postgres@127.0.0.1:5432/${name}` }, 'serve', '--quiet', '--listen', '127.0.0.1:0', '--data', data);
    assert.equal(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(
        `^imago: PostgreSQL at postgres://postgres@127\\.0\\.0\\.1:5432/${name} has no database "${name}": create it with "createdb -h 127\\.0\\.0\\.1 -p 5432 -U postgres ${name}"`,
      ),
    );
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.doesNotMatch(r.stderr, STACK_LINE);
  } finally {
    rmSync(data, { recursive: true, force: true });
  }
});

test('a start registers only its verb: VERB_MODULES names exactly the verbs each module registers', async () => {
  const { Command } = await import('commander');
  const { VERB_MODULES } = await import('../src/cli/main.js');
  const all = new Set<string>();
  for (const m of VERB_MODULES) {
    const program = new Command();
    await m.register(program, () => undefined);
    const registered = program.commands.map((c) => c.name());
    assert.deepEqual(registered, [...m.verbs], 'a verb missing from the table would still work (every module is then registered), only slower');
    for (const v of registered) {
      assert.ok(!all.has(v), `${v} is registered by one module only`);
      all.add(v);
    }
  }
  const version = imago('--version');
  assert.deepEqual([version.code, version.stdout], [0, '0.1.0\n']);
  const help = imago('--help');
  for (const v of all) assert.match(help.stdout, new RegExp(`^  ${v}\\b`, 'm'), `imago --help lists ${v}`);
});

/**
 * The `imago` command as a user runs it: the real bin, real files made by qemu-img, exit codes.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
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
  const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
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

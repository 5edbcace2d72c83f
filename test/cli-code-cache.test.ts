/**
 * bin/imago.js runs the bundle (dist/bundle/imago.cjs) from V8's code cache next to it. The cache
 * is a speed-up only: a stale, corrupt, truncated or unwritable one must never break the command.
 * Each test runs the real bin and the real bundle (built by `npm run build`) copied into a scratch
 * package root, so that it can damage the cache without touching the checkout's.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { crc32 } from 'node:zlib';
import { qemuCreate } from './support/qemu.js';

const ROOT = join(import.meta.dirname, '..');
const BUILT_BUNDLE = join(ROOT, 'dist', 'bundle', 'imago.cjs');

let scratch: string;
let disk: string;

before(async () => {
  assert.ok(existsSync(BUILT_BUNDLE) && existsSync(`${BUILT_BUNDLE}.cache`), 'dist/bundle is missing: build it with "npm run build"');
  scratch = mkdtempSync(join(tmpdir(), 'imago-code-cache-'));
  disk = await qemuCreate('cli-cache-64m.qcow2', 'qcow2', '64M');
});

after(() => rmSync(scratch, { recursive: true, force: true }));

/** A package root holding bin/ and dist/bundle/ as built (and dist/cli only with `compiled`). */
function packageRoot(name: string, opts: { compiled?: boolean; bundle?: boolean } = {}): string {
  const root = join(scratch, name);
  mkdirSync(join(root, 'dist'), { recursive: true });
  cpSync(join(ROOT, 'bin'), join(root, 'bin'), { recursive: true });
  if (opts.bundle !== false) cpSync(join(ROOT, 'dist', 'bundle'), join(root, 'dist', 'bundle'), { recursive: true });
  if (opts.compiled) {
    cpSync(join(ROOT, 'package.json'), join(root, 'package.json'));
    for (const d of readdirSync(join(ROOT, 'dist'))) if (d !== 'bundle') cpSync(join(ROOT, 'dist', d), join(root, 'dist', d), { recursive: true });
  }
  symlinkSync(join(ROOT, 'node_modules'), join(root, 'node_modules'));
  return root;
}

const paths = (root: string) => ({ bundle: join(root, 'dist', 'bundle', 'imago.cjs'), cache: join(root, 'dist', 'bundle', 'imago.cjs.cache') });

function inspect(root: string) {
  const r = spawnSync(process.execPath, [join(root, 'bin', 'imago.js'), 'inspect', disk], { encoding: 'utf8' });
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** The command ran and printed what it should (one qcow2, safe). */
function assertInspected(r: ReturnType<typeof inspect>): void {
  assert.equal(r.code, 0, `exit ${r.code} ${r.signal ?? ''}\n${r.stderr}`);
  assert.match(r.stdout, /^FILE\s+FORMAT\s+SUBFORMAT\s+VIRTUAL SIZE\s+FILE SIZE\s+VERDICT\n/);
  assert.match(r.stdout, /cli-cache-64m\.qcow2\s+qcow2\s+v3\s+64 MiB\s+\S+ KiB\s+safe\n$/);
  assert.equal(r.stderr, '');
}

/** Header fields of a cache file, and whether its CRC-32 matches its data. */
function cacheHeader(file: string) {
  const b = readFileSync(file);
  const eol = b.indexOf(10);
  const [magic, bundleId, node, length, crc] = b.subarray(0, eol).toString('latin1').split(' ');
  const data = b.subarray(eol + 1);
  return { magic, bundleId, node, length: Number(length), crc, intact: Number(length) === data.length && crc === crc32(data).toString(16) };
}

const bundleIdOf = (bundle: string) => readFileSync(bundle, 'latin1').split('\n', 1)[0]!.replace('//# imago-bundle ', '');

test('npm run build leaves a code cache for the bundle, which a run uses as it is', () => {
  const root = packageRoot('valid');
  const { bundle, cache } = paths(root);
  const h = cacheHeader(cache);
  assert.equal(h.magic, 'imago-code-cache-1');
  assert.equal(h.bundleId, bundleIdOf(bundle));
  assert.match(h.bundleId!, /^[0-9a-f]{64}$/);
  assert.equal(h.node, `${process.version}-${process.arch}`);
  assert.ok(h.intact);
  const before = readFileSync(cache);
  assertInspected(inspect(root));
  // neither our checks nor V8 refused it, or the run would have written a new one
  assert.deepEqual(readFileSync(cache), before);
});

test('a corrupt code cache (its V8 data damaged, its header intact) is not given to V8: the command runs and remakes it', () => {
  const root = packageRoot('corrupt');
  const { cache } = paths(root);
  const b = readFileSync(cache);
  const eol = b.indexOf(10);
  // several places: V8 does not checksum code caches (release builds) and crashes or misbehaves on some
  for (const at of [eol + 200, Math.floor(b.length / 2), b.length - 5000]) for (let i = 0; i < 64; i++) b[at + i] = b[at + i]! ^ 0x5a;
  writeFileSync(cache, b);
  assertInspected(inspect(root));
  assert.ok(cacheHeader(cache).intact, 'the run wrote a fresh cache');
  const remade = readFileSync(cache);
  assertInspected(inspect(root));
  assert.deepEqual(readFileSync(cache), remade, 'the remade cache is used');
});

test('a truncated or garbage code cache is ignored and remade', () => {
  const root = packageRoot('truncated');
  const { cache } = paths(root);
  const b = readFileSync(cache);
  writeFileSync(cache, b.subarray(0, Math.floor(b.length / 2)));
  assertInspected(inspect(root));
  assert.ok(cacheHeader(cache).intact);
  writeFileSync(cache, Buffer.from('not a cache at all'));
  assertInspected(inspect(root));
  assert.ok(cacheHeader(cache).intact);
});

test('a code cache made for another bundle (a rebuild) is ignored and remade for this one', () => {
  const root = packageRoot('stale');
  const { bundle, cache } = paths(root);
  const source = readFileSync(bundle, 'latin1');
  const oldId = bundleIdOf(bundle);
  // a rebuild of the same length: V8 itself compares only the source's length
  const newId = oldId.replace(/./g, (c) => (c === 'a' ? 'b' : 'a'));
  writeFileSync(bundle, source.replace(oldId, newId), 'latin1');
  assertInspected(inspect(root));
  assert.equal(cacheHeader(cache).bundleId, newId);
  assert.ok(cacheHeader(cache).intact);
});

test('a code cache that cannot be written costs nothing but speed', () => {
  const root = packageRoot('unwritable');
  const { cache } = paths(root);
  rmSync(cache);
  mkdirSync(cache); // neither readable as a file nor replaceable by one, even for root
  assertInspected(inspect(root));
  assertInspected(inspect(root));
  assert.deepEqual(readdirSync(join(root, 'dist', 'bundle')).sort(), ['imago.cjs', 'imago.cjs.cache'], 'no temp file is left behind');
});

test('without the bundle, bin/imago.js runs the compiled dist/cli; without either it says to build', () => {
  const root = packageRoot('compiled', { compiled: true, bundle: false });
  assertInspected(inspect(root));
  const bare = packageRoot('bare', { bundle: false });
  const r = inspect(bare);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /dist\/cli\/main\.js is missing: build imago first with "npm run build"/);
});

#!/usr/bin/env node
// The `imago` command. `npm run build` compiles the CLI into dist/cli (tsc) and bundles it into one
// script, dist/bundle/imago.cjs, with its V8 code cache next to it (scripts/bundle-cli.js). The
// bundle is run only when it is at least as new as the compiled CLI, so a later tsc alone never
// runs stale code; without it, dist/cli runs.
//
// Start-up (issue 20: local verbs start in ≤ 60 ms; docs/BENCHMARKS.md): this file is CommonJS
// (bin/package.json), because an ES module entry starts Node's ES module loader, and the bundle is
// compiled with `vm.Script` from its code cache, which saves V8 parsing and compiling it.
//
// The code cache (dist/bundle/imago.cjs.cache) is only a speed-up and is never trusted: its header
// names the bundle it was made from (the bundle's first line), the Node that made it, and the
// length and CRC-32 of V8's data. V8 itself checks only its version, its flags and the source's
// length, and crashes on corrupt data, so a cache that fails any check is not given to V8. A
// missing, stale, corrupt or rejected cache costs one plain compile, after which a fresh cache is
// written (temp file + rename; silently not when the directory is read-only).
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.join(__dirname, '..');
const BUNDLE = path.join(ROOT, 'dist', 'bundle', 'imago.cjs');
const CACHE = `${BUNDLE}.cache`;
const COMPILED = path.join(ROOT, 'dist', 'cli', 'main.js');
const BUNDLE_ID_PREFIX = '//# imago-bundle ';
const CACHE_MAGIC = 'imago-code-cache-1';
const NODE_ID = `${process.version}-${process.arch}`;

const mtime = (file) => fs.statSync(file, { throwIfNoEntry: false })?.mtimeMs ?? -1;

/** CRC-32 of `data` as hex (zlib.crc32: Node ≥ 20.15); undefined when this Node has none. */
function crc32(data) {
  const { crc32: crc } = require('node:zlib');
  return typeof crc === 'function' ? crc(data).toString(16) : undefined;
}

/** V8's data from the cache file when its header matches `bundleId`, this Node and the data; else undefined. */
function readCache(bundleId) {
  let file;
  try {
    file = fs.readFileSync(CACHE);
  } catch {
    return undefined;
  }
  const eol = file.indexOf(10);
  if (eol < 0 || eol > 512) return undefined;
  const [magic, id, node, length, crc] = file.toString('latin1', 0, eol).split(' ');
  const data = file.subarray(eol + 1);
  if (magic !== CACHE_MAGIC || id !== bundleId || node !== NODE_ID || Number(length) !== data.length) return undefined;
  return crc !== undefined && crc === crc32(data) ? data : undefined;
}

/** Writes V8's cache of `script` with our header; never throws (a cache is only a speed-up). */
function writeCache(bundleId, script) {
  const tmp = `${CACHE}.${process.pid}.tmp`;
  try {
    fs.accessSync(path.dirname(CACHE), fs.constants.W_OK);
    const data = script.createCachedData();
    const crc = crc32(data);
    if (crc === undefined) return;
    const header = Buffer.from(`${CACHE_MAGIC} ${bundleId} ${NODE_ID} ${data.length} ${crc}\n`, 'latin1');
    fs.writeFileSync(tmp, Buffer.concat([header, data]), { flag: 'wx' });
    fs.renameSync(tmp, CACHE);
  } catch {
    try {
      fs.rmSync(tmp, { force: true });
    } catch {
      // nothing more to do: the cache is only a speed-up
    }
  }
}

/**
 * The bundle's `main`, compiled from its code cache when that is valid (`fresh`: do not look for
 * one); `done()` writes a new cache when there was none to use, after the run, so that it also
 * holds the functions the run compiled.
 */
function loadBundle(fresh = false) {
  const vm = require('node:vm');
  const source = fs.readFileSync(BUNDLE, 'utf8');
  const firstLine = source.slice(0, source.indexOf('\n'));
  const bundleId = firstLine.startsWith(BUNDLE_ID_PREFIX) ? firstLine.slice(BUNDLE_ID_PREFIX.length) : undefined;
  const cachedData = bundleId === undefined || fresh ? undefined : readCache(bundleId);
  // the wrapper of Node's own CommonJS loader (module.wrap), so the bundle runs as imago.cjs would,
  // plus the import of the server (dist/app.js, an ES module) for `imago serve`: a vm.Script has
  // no import() of its own on Node 20 (scripts/bundle-cli.js)
  const script = new vm.Script(`(function (exports, require, module, __filename, __dirname, __imagoImportServer) { ${source}\n});`, {
    filename: BUNDLE,
    cachedData,
  });
  const bundle = { exports: {} };
  const importServer = () => import(require('node:url').pathToFileURL(path.join(ROOT, 'dist', 'app.js')).href);
  script.runInThisContext()(bundle.exports, require('node:module').createRequire(BUNDLE), bundle, BUNDLE, path.dirname(BUNDLE), importServer);
  const stale = cachedData === undefined || script.cachedDataRejected === true;
  return { main: bundle.exports.main, done: () => bundleId !== undefined && stale && writeCache(bundleId, script) };
}

async function loadMain() {
  const bundled = mtime(BUNDLE);
  if (bundled >= 0 && bundled >= mtime(COMPILED)) return loadBundle();
  if (mtime(COMPILED) < 0) throw Object.assign(new Error(`${COMPILED} is missing: build imago first with "npm run build"`), { notBuilt: true });
  const { main } = await import(require('node:url').pathToFileURL(COMPILED).href);
  return { main, done: () => undefined };
}

/**
 * For scripts/bundle-cli.js: runs the bundle on each command line of `runs` in this process, its
 * output discarded, then writes the code cache, which thus holds what those verbs compiled.
 * Returns their exit codes.
 */
async function warmUpCodeCache(runs) {
  const { main, done } = loadBundle(true);
  const codes = [];
  const write = process.stdout.write;
  process.stdout.write = () => true;
  try {
    for (const argv of runs) codes.push(await main(argv));
  } finally {
    process.stdout.write = write;
  }
  done();
  return codes;
}

if (require.main === module) {
  loadMain()
    .then(async ({ main, done }) => {
      try {
        process.exitCode = await main(process.argv.slice(2));
      } finally {
        done();
      }
    })
    .catch((err) => {
      process.stderr.write(`imago: ${err instanceof Error ? ((err.notBuilt ? undefined : err.stack) ?? err.message) : String(err)}\n`);
      process.exitCode = 2;
    });
} else module.exports = { warmUpCodeCache };

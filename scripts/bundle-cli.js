/**
 * Bundles the compiled CLI (dist/cli/main.js) into one CommonJS script, dist/bundle/imago.cjs, and
 * makes its V8 code cache, so that `imago` starts by reading two files instead of resolving,
 * parsing and compiling a hundred modules (issue 20: local verbs start in ≤ 60 ms;
 * docs/BENCHMARKS.md). Run by `npm run build` after tsc.
 *
 * - One script, not ES modules: bin/imago.js compiles it with `vm.Script` and V8's code cache
 *   (`cachedData`), which Node 20 offers for scripts only. Every `await import()` of ours becomes a
 *   lazy module initializer inside the script (esbuild), so a verb still evaluates only its own
 *   modules and the node: modules they import.
 * - Packages stay in node_modules (native addons, wasm and worker files are found from there) but
 *   commander, which every start loads. The server (`../app.js`) is not
 *   bundled at all: `imago serve` imports dist/app.js through `__imagoImportServer()`, a
 *   function bin/imago.js passes in (a vm.Script has no import() of its own on Node 20).
 * - The bundle lives two levels below the package root, as dist/io does, so the relative path to
 *   the native addons (native/) is the same.
 * - Whitespace and syntax are minified (the file is read at every start), names are kept so that
 *   `--debug` stack traces still name our functions.
 * - Its first line names the build (`//# imago-bundle <sha256 of the rest>`); a code cache is used
 *   only for the bundle it was made from (bin/imago.js).
 *
 * The code cache is made here by running convert, inspect and compare once on tiny disks in one
 * process (bin/imago.js `warmUpCodeCache`), so that it holds the functions they run, not only the
 * top level; bin/imago.js remakes it when it is missing, stale or rejected (another Node, other V8
 * flags). Without esbuild this prints a note and bin/imago.js
 * runs dist/cli as before.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Buffer } from 'node:buffer';
import process from 'node:process';

const root = join(import.meta.dirname, '..');
let esbuild;
try {
  esbuild = await import('esbuild');
} catch {
  process.stderr.write('bundle-cli: esbuild is not installed; imago runs the unbundled dist/cli (slower to start)\n');
  process.exit(0);
}
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const outdir = join(root, 'dist', 'bundle');
const outfile = join(outdir, 'imago.cjs');
rmSync(outdir, { recursive: true, force: true });

/**
 * commander requires node:child_process at its top for executable subcommands, which imago has
 * none of; loading it (with node:net, dgram and the streams) was ~3 ms of every start. Here it is
 * required when first used.
 */
const SERVER_MARK = 'imago:server';

const lazyChildProcess = {
  name: 'commander-lazy-child-process',
  setup(build) {
    build.onLoad({ filter: /[\\/]commander[\\/]lib[\\/]command\.js$/ }, (args) => {
      const eager = "const childProcess = require('node:child_process');";
      const source = readFileSync(args.path, 'utf8');
      if (!source.includes(eager)) {
        return { contents: source, loader: 'js', warnings: [{ text: 'commander no longer requires node:child_process as expected: it loads eagerly' }] };
      }
      const lazy = "const childProcess = { spawn: (...a) => require('node:child_process').spawn(...a) };";
      return { contents: source.replace(eager, lazy), loader: 'js' };
    });
  },
};

const result = await esbuild.build({
  entryPoints: [join(root, 'dist', 'cli', 'main.js')],
  outfile,
  write: false,
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  minifyWhitespace: true,
  minifySyntax: true,
  external: Object.keys(pkg.dependencies).filter((name) => name !== 'commander'),
  // our modules are ES modules: their import.meta.url is the bundle's own URL
  define: { 'import.meta.url': '__imagoModuleUrl' },
  banner: { js: "const __imagoModuleUrl=require('node:url').pathToFileURL(__filename).href;" },
  plugins: [
    lazyChildProcess,
    {
      name: 'server-unbundled',
      setup(build) {
        build.onResolve({ filter: /^\.\.\/app\.js$/ }, () => ({ path: SERVER_MARK, external: true }));
      },
    },
  ],
  logLevel: 'warning',
});
// A script compiled by vm.Script has no dynamic import() on Node 20 without an experimental flag
// (or a warning): bin/imago.js hands the bundle a function that imports the server instead.
const marked = result.outputFiles[0].text;
const serverImports = marked.split(`import("${SERVER_MARK}")`).length - 1;
if (serverImports !== 1) throw new Error(`bundle-cli: expected one import of the server in the bundle, found ${serverImports}`);
const code = marked.replace(`import("${SERVER_MARK}")`, '__imagoImportServer()');
const id = createHash('sha256').update(code).digest('hex');
mkdirSync(outdir, { recursive: true });
writeFileSync(outfile, `//# imago-bundle ${id}\n${code}`);

// The code cache, made after running the local verbs once on tiny disks, so that it holds the
// functions they run and not only the bundle's top level (a run compiles what the cache lacks).
const scratch = mkdtempSync(join(tmpdir(), 'imago-bundle-'));
try {
  const raw = join(scratch, 'warm-up.raw');
  const qcow2 = join(scratch, 'warm-up.qcow2');
  writeFileSync(raw, Buffer.alloc(1 << 20, 1));
  const runs = [
    ['convert', '-O', 'qcow2', raw, qcow2],
    ['inspect', raw, qcow2],
    ['compare', qcow2, raw],
  ];
  const warmUp = `require(${JSON.stringify(join(root, 'bin', 'imago.js'))}).warmUpCodeCache(${JSON.stringify(runs)}).then((codes) => process.stdout.write(JSON.stringify(codes)))`;
  const run = spawnSync(process.execPath, ['-e', warmUp], { encoding: 'utf8' });
  if (run.status !== 0 || run.stdout !== '[0,0,0]' || !existsSync(`${outfile}.cache`)) {
    process.stderr.write(`bundle-cli: the bundle did not run or wrote no code cache (exit ${run.status}, exit codes ${run.stdout}): ${run.stderr}\n`);
    process.exit(1);
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}

/**
 * Bundles the compiled CLI (dist/cli/main.js) into dist/bundle/ with esbuild, so that `imago`
 * starts by reading a few files instead of resolving and compiling a hundred modules (issue 20:
 * local verbs start in ≤ 60 ms; docs/BENCHMARKS.md). Run by `npm run build` after tsc.
 *
 * - Every `await import()` stays a chunk of its own (esbuild splitting), loaded when the verb that
 *   needs it runs; the server (`../app.js`) is not bundled at all: `imago serve` imports dist/app.js.
 * - Packages stay in node_modules (native addons, wasm and worker files are found from there) but
 *   commander, which every start loads.
 * - The bundle lives two levels below the package root, as dist/io does, so the relative path to
 *   the SEEK_DATA addon (native/) is the same.
 *
 * bin/imago.js runs the bundle only when it is newer than dist/cli/main.js (a later tsc alone
 * leaves it stale); without esbuild this prints a note and bin/imago.js runs dist/cli as before.
 */
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
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
rmSync(outdir, { recursive: true, force: true });
await esbuild.build({
  entryPoints: { main: join(root, 'dist', 'cli', 'main.js') },
  outdir,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  external: Object.keys(pkg.dependencies).filter((name) => name !== 'commander'),
  // commander is CommonJS: its require() of node: modules needs a real require in an ES module
  banner: { js: "import { createRequire as __imagoCreateRequire } from 'node:module'; const require = __imagoCreateRequire(import.meta.url);" },
  plugins: [
    {
      name: 'server-unbundled',
      setup(build) {
        build.onResolve({ filter: /^\.\.\/app\.js$/ }, (args) => ({ path: args.path, external: true }));
      },
    },
  ],
  logLevel: 'warning',
});

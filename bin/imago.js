#!/usr/bin/env node
// The `imago` command. `npm run build` compiles the CLI into dist/cli (tsc) and bundles it into
// dist/bundle (scripts/bundle-cli.js: faster to start); the bundle is run only when it is at least
// as new as the compiled CLI, so a later tsc alone never runs stale code.
import { statSync } from 'node:fs';

const mtime = (path) => statSync(new URL(path, import.meta.url), { throwIfNoEntry: false })?.mtimeMs ?? -1;
const bundled = mtime('../dist/bundle/main.js') >= mtime('../dist/cli/main.js');
const { main } = await import(bundled ? '../dist/bundle/main.js' : '../dist/cli/main.js');

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`imago: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 2;
  },
);

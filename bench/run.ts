/**
 * `npm run bench -- NAME [args]`: runs bench/NAME.ts. Every benchmark prints our figure next to a
 * peer's measured in the same run, as a ratio (ours / peer; below 1 means we are faster).
 * `--quick` runs any of them at tiny sizes, once: the test suite does, so that none can rot.
 */
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { BENCH_SOURCE_DIR, benchNames } from './support/bench-names.js';

const names = benchNames();
const [name, ...args] = process.argv.slice(2);
if (!name || !names.includes(name)) {
  process.stderr.write(`usage: npm run bench -- NAME [--quick] [args]\nbenchmarks: ${names.join(', ')}\n`);
  process.exit(2);
}
const mod = (await import(pathToFileURL(join(BENCH_SOURCE_DIR, `${name}.ts`)).href)) as { run(args: string[]): Promise<void> };
try {
  await mod.run(args);
} catch (e) {
  process.stderr.write(`bench ${name} failed: ${(e as Error).message}\n`);
  process.exitCode = 1;
}

/**
 * `npm run bench -- NAME [args]`: runs bench/NAME.ts. Every benchmark prints our figure next to a
 * peer's measured in the same run, as a ratio (ours / peer; below 1 means we are faster).
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const names = readdirSync(import.meta.dirname)
  .filter((f) => f.endsWith('.ts') && f !== 'run.ts' && !f.includes('.test.'))
  .map((f) => f.slice(0, -3));
const [name, ...args] = process.argv.slice(2);
if (!name || !names.includes(name)) {
  process.stderr.write(`usage: npm run bench -- NAME [args]\nbenchmarks: ${names.join(', ')}\n`);
  process.exit(2);
}
const mod = (await import(pathToFileURL(join(import.meta.dirname, `${name}.ts`)).href)) as { run(args: string[]): Promise<void> };
await mod.run(args);

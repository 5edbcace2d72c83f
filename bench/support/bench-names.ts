/** The benchmarks are the files in bench/ (every `NAME.ts` but run.ts): `npm run bench -- NAME`. */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

export const BENCH_SOURCE_DIR = join(import.meta.dirname, '..');

export function benchNames(): string[] {
  return readdirSync(BENCH_SOURCE_DIR)
    .filter((f) => f.endsWith('.ts') && f !== 'run.ts' && !f.includes('.test.'))
    .map((f) => f.slice(0, -3))
    .sort();
}

/**
 * bench/download — 2 GiB download of a stored image (`curl -o FILE`) next to `cp` of the same
 * bytes to the same disk, in the same run.
 *
 *   npm run bench -- download [--mib 2048] [--runs 3]
 */
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { BENCH_DIR, createImage, dataFile, median, printTable, serve, timeCommand } from './support/harness.js';

export async function run(args: string[]): Promise<void> {
  const mib = Number(args[args.indexOf('--mib') + 1] || 2048) || 2048;
  const runs = Number(args[args.indexOf('--runs') + 1] || 3) || 3;
  const file = dataFile(mib);
  const s = await serve();
  const dst = join(BENCH_DIR, 'dl-dst.raw');
  try {
    const id = await createImage(s.url, 'bench-dl');
    execFileSync('curl', ['-sS', '-f', '-o', '/dev/null', '-T', file, `${s.url}/api/v1/images/${id}/file`]);
    const blob = execFileSync('sh', ['-c', `find ${s.dataDir}/blobs -type f | head -1`]).toString().trim();
    execFileSync('cat', [blob], { stdio: ['ignore', 'ignore', 'inherit'] });
    const dl: number[] = [];
    const cp: number[] = [];
    for (let i = 0; i < runs; i++) {
      dl.push(timeCommand('curl', ['-sS', '-f', '-o', dst, `${s.url}/api/v1/images/${id}/file`]));
      rmSync(dst, { force: true });
      cp.push(timeCommand('cp', [blob, dst]));
      rmSync(dst, { force: true });
    }
    const mb = mib * 1.048576;
    const o = median(dl);
    const c = median(cp);
    process.stdout.write(`download of ${mib} MiB, ${runs} runs each\n`);
    printTable([
      ['path', 'seconds', 'MB/s', 'ratio imago / cp'],
      ['imago GET /file → curl -o', o.toFixed(2), (mb / o).toFixed(0), (o / c).toFixed(2)],
      ['cp blob → file', c.toFixed(2), (mb / c).toFixed(0), '-'],
    ]);
  } finally {
    rmSync(dst, { force: true });
    await s.stop();
  }
}

/**
 * bench/ingest — upload of a 2 GiB image through the API with `curl -T` (unwrap check, sha256 +
 * sha512 [+ md5] hashing, stream inspection, staging write, fsync, commit) next to `cp` of the same
 * file and `curl -T` to a plain node:http sink that discards, in the same run; with md5 off and on.
 *
 *   npm run bench -- ingest [--mib 2048] [--runs 3]
 */
import { execFileSync, spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { BENCH_DIR, createImage, dataFile, freePort, median, printTable, serve, timeCommand } from './support/harness.js';

export async function run(args: string[]): Promise<void> {
  const mib = Number(args[args.indexOf('--mib') + 1] || 2048) || 2048;
  const runs = Number(args[args.indexOf('--runs') + 1] || 3) || 3;
  const file = dataFile(mib);
  execFileSync('cat', [file], { stdio: ['ignore', 'ignore', 'inherit'] }); // warm the page cache
  const mb = mib * 1.048576;

  const cp: number[] = [];
  for (let i = 0; i < runs; i++) {
    const dst = join(BENCH_DIR, 'cp-dst.raw');
    cp.push(timeCommand('sh', ['-c', `cp ${file} ${dst} && sync -f ${dst}`]));
    rmSync(dst, { force: true });
  }

  // the sink runs in its own process: timeCommand blocks this one's event loop
  const port = await freePort();
  const sink = spawn(process.execPath, ['-e', `require('http').createServer((q,r)=>{q.resume();q.on('end',()=>r.end('ok'))}).listen(${port},'127.0.0.1')`], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 500));
  const sinkUrl = `http://127.0.0.1:${port}/`;
  const plain: number[] = [];
  for (let i = 0; i < runs; i++) plain.push(timeCommand('curl', ['-sS', '-o', '/dev/null', '-T', file, sinkUrl]));
  sink.kill();

  const results: Record<string, number[]> = {};
  for (const md5 of [false, true]) {
    const s = await serve(md5 ? ['--md5'] : []);
    const times: number[] = [];
    try {
      for (let i = 0; i < runs; i++) {
        const id = await createImage(s.url, `bench-${i}`);
        times.push(timeCommand('curl', ['-sS', '-f', '-o', '/dev/null', '-H', 'content-type: application/octet-stream', '-T', file, `${s.url}/api/v1/images/${id}/file`]));
        // identical bytes dedup: delete so the next run stores again
        await fetch(`${s.url}/api/v1/images/${id}`, { method: 'DELETE' });
        execFileSync('sh', ['-c', `rm -rf ${s.dataDir}/blobs`]);
      }
    } finally {
      await s.stop();
    }
    results[md5 ? 'imago (sha256+sha512+md5)' : 'imago (sha256+sha512)'] = times;
  }

  const rows = [['path', `seconds (median of ${runs})`, 'MB/s', 'imago / this']];
  const ours = median(results['imago (sha256+sha512)']!);
  const oursMd5 = median(results['imago (sha256+sha512+md5)']!);
  for (const [name, t] of [
    ['imago upload, md5 off', ours],
    ['imago upload, md5 on', oursMd5],
    ['cp + fsync (same disk)', median(cp)],
    ['curl -T to a discarding node:http sink', median(plain)],
  ] as const) {
    rows.push([name, t.toFixed(2), (mb / t).toFixed(0), name.startsWith('imago') ? '-' : `${(ours / t).toFixed(2)} (md5 on: ${(oursMd5 / t).toFixed(2)})`]);
  }
  process.stdout.write(`ingest of ${mib} MiB (${mb.toFixed(0)} MB), ${runs} runs each\n`);
  printTable(rows);
}

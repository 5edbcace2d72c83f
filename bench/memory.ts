/**
 * bench/memory — peak resident memory (VmHWM) of the `imago serve` process during a 4 GiB upload,
 * next to a plain node:http process that receives the same upload and discards it. Budget: 200 MiB.
 *
 *   npm run bench -- memory [--mib 4096]
 */
import { execFileSync, spawn } from 'node:child_process';
import { createImage, dataFile, freePort, peakRss, printTable, serve } from './support/harness.js';

export async function run(args: string[]): Promise<void> {
  const mib = Number(args[args.indexOf('--mib') + 1] || 4096) || 4096;
  const file = dataFile(mib);
  const s = await serve(['--md5']);
  let ours = NaN;
  try {
    const id = await createImage(s.url, 'bench-mem');
    execFileSync('curl', ['-sS', '-f', '-o', '/dev/null', '-T', file, `${s.url}/api/v1/images/${id}/file`]);
    ours = peakRss(s.proc.pid!);
  } finally {
    await s.stop();
  }
  const port = await freePort();
  const sink = spawn(process.execPath, ['-e', `require('http').createServer((q,r)=>{q.resume();q.on('end',()=>r.end('ok'))}).listen(${port},'127.0.0.1')`], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 500));
  execFileSync('curl', ['-sS', '-o', '/dev/null', '-T', file, `http://127.0.0.1:${port}/`]);
  const peer = peakRss(sink.pid!);
  sink.kill();
  const MiB = 1024 * 1024;
  process.stdout.write(`peak RSS during a ${mib} MiB upload (md5 on)\n`);
  printTable([
    ['process', 'peak RSS (MiB)', 'ratio imago / this'],
    ['imago serve', (ours / MiB).toFixed(0), '-'],
    ['plain node:http sink', (peer / MiB).toFixed(0), (ours / peer).toFixed(2)],
    ['budget (issue 3)', '200', (ours / (200 * MiB)).toFixed(2)],
  ]);
}

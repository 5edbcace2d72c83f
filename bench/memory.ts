/**
 * bench/memory — peak resident memory (VmHWM) of the `imago serve` process during a 4 GiB upload,
 * next to a plain node:http process that receives the same upload and discards it. Budget: 200 MiB.
 *
 *   npm run bench -- memory [--mib 4096] [--quick]
 */
import { execFileSync } from 'node:child_process';
import { createImage, dataFile, discardingSink, numberOption, peakRss, printTable, serve, uploadArgs } from './support/harness.js';

export async function run(args: string[]): Promise<void> {
  const mib = numberOption(args, '--mib', 4096, 16);
  const file = dataFile(mib);
  const s = await serve(['--md5']);
  let ours = NaN;
  try {
    const id = await createImage(s, 'bench-mem');
    execFileSync('curl', ['-sS', '-f', '-o', '/dev/null', ...uploadArgs(s, id, file)]);
    ours = peakRss(s.proc.pid!);
  } finally {
    await s.stop();
  }
  const sink = await discardingSink();
  let peer = NaN;
  try {
    execFileSync('curl', ['-sS', '-o', '/dev/null', '-T', file, sink.url]);
    peer = peakRss(sink.proc.pid!);
  } finally {
    sink.stop();
  }
  const MiB = 1024 * 1024;
  process.stdout.write(`peak RSS during a ${mib} MiB upload (md5 on)\n`);
  printTable([
    ['process', 'peak RSS (MiB)', 'ratio imago / this'],
    ['imago serve', (ours / MiB).toFixed(0), '-'],
    ['plain node:http sink', (peer / MiB).toFixed(0), (ours / peer).toFixed(2)],
    ['budget (issue 3)', '200', (ours / (200 * MiB)).toFixed(2)],
  ]);
}

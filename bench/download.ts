/**
 * bench/download — download of a stored image (`curl -o /dev/null`, GET /api/v1/images/ID/file)
 * from a real `imago serve`, next to the same download from the live Glance peer (GET
 * /v2/images/ID/file), in alternating runs. Two limits, measured in the same run: reading the
 * stored blob from the page cache (`cat BLOB > /dev/null`, the copy a download cannot avoid), and the
 * sendfile floor (the blob sent by the kernel with sendfile(2) to the same curl: what any server can
 * deliver to this client over loopback here; bench/support/limits.ts).
 *
 *   npm run bench -- download [--mib 1024] [--runs 3] [--quick]
 */
import { execFileSync } from 'node:child_process';
import { startGlance } from './support/glance-peer.js';
import { createImage, dataFile, median, numberOption, printTable, serve, timeCommand, uploadArgs } from './support/harness.js';
import { pageCacheReadSeconds, sendfileFloorSeconds } from './support/limits.js';

export async function run(args: string[]): Promise<void> {
  const mib = numberOption(args, '--mib', 1024, 16);
  const runs = numberOption(args, '--runs', 3, 1);
  const file = dataFile(mib);
  const bytes = mib * 1024 * 1024;
  const glance = await startGlance();
  let glanceId: string | undefined;
  const s = await serve().catch(async (e) => {
    await glance.stop();
    throw e;
  });
  try {
    const id = await createImage(s, 'bench-dl');
    execFileSync('curl', ['-sS', '-f', '-o', '/dev/null', ...uploadArgs(s, id, file)]);
    glanceId = await glance.createImage('imago-bench-dl');
    execFileSync('curl', ['-sS', '-f', '-o', '/dev/null', ...glance.uploadArgs(glanceId, file)]);
    const blob = execFileSync('find', [s.dataDir, '-path', '*/blobs/*', '-type', 'f']).toString().trim().split('\n')[0]!;
    const limit = pageCacheReadSeconds(blob, runs);
    const floor = await sendfileFloorSeconds(blob, runs);
    const ours: number[] = [];
    const theirs: number[] = [];
    for (let i = 0; i < runs; i++) {
      const jobs = [
        () => ours.push(timeCommand('curl', ['-sS', '-f', '-o', '/dev/null', ...s.curlAuth, `${s.url}/api/v1/images/${id}/file`])),
        () => theirs.push(timeCommand('curl', ['-sS', '-f', '-o', '/dev/null', `${glance.url}/v2/images/${glanceId}/file`])),
      ];
      for (let k = 0; k < jobs.length; k++) jobs[(i + k) % jobs.length]!();
    }
    const o = median(ours);
    const g = median(theirs);
    process.stdout.write(`download of ${mib} MiB with curl -o /dev/null, ${runs} alternating run(s) each\n`);
    printTable([
      [
        'download',
        `imago s (median of ${runs})`,
        'imago MB/s',
        'Glance 25.1 s',
        'ratio imago / Glance',
        'limit s (page-cache read)',
        'ratio imago / limit',
        'floor s (sendfile → curl)',
        'ratio imago / floor',
        'ratio floor / Glance',
      ],
      [
        'GET /file → curl -o /dev/null',
        o.toFixed(2),
        (bytes / 1e6 / o).toFixed(0),
        g.toFixed(2),
        (o / g).toFixed(2),
        limit.toFixed(2),
        (o / limit).toFixed(2),
        floor.toFixed(2),
        (o / floor).toFixed(2),
        (floor / g).toFixed(2),
      ],
    ]);
  } finally {
    if (glanceId) await glance.deleteImage(glanceId);
    await s.stop();
    await glance.stop();
  }
}

/**
 * bench/ingest — upload of an image through the API with `curl -T` (unwrap check, sha256 + sha512
 * [+ md5] hashing, stream inspection, staging write, fsync, commit) into a real `imago serve`, next
 * to the same `curl -T` into the live Glance peer (PUT /v2/images/ID/file: md5 + sha512, no fsync),
 * in alternating runs; with md5 off and on. The limit column is the hashing the upload cannot
 * avoid, at the per-core hash speeds measured in the same run. Context rows: `cp` + fsync of the
 * same file (the durable copy) and `curl -T` into a node:http sink that discards (the network path).
 *
 *   npm run bench -- ingest [--mib 1024] [--runs 3] [--quick]
 */
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { startGlance } from './support/glance-peer.js';
import {
  BENCH_DIR,
  createImage,
  dataFile,
  deleteImage,
  discardingSink,
  median,
  numberOption,
  printTable,
  serve,
  timeCommand,
  type Served,
  uploadArgs,
} from './support/harness.js';
import { describeLimits, hashLimitSeconds, measureHashRates, pageCacheReadSeconds } from './support/limits.js';

export async function run(args: string[]): Promise<void> {
  const mib = numberOption(args, '--mib', 1024, 16);
  const runs = numberOption(args, '--runs', 3, 1);
  const file = dataFile(mib);
  const bytes = mib * 1024 * 1024;
  const mbps = (t: number) => (bytes / 1e6 / t).toFixed(0);
  const cacheRead = pageCacheReadSeconds(file, runs); // also warms the page cache
  const rates = measureHashRates(Math.min(mib, 256), runs);

  const glance = await startGlance();
  const servers: Served[] = [];
  try {
    const plain = await serve();
    servers.push(plain);
    const withMd5 = await serve(['--md5']);
    servers.push(withMd5);
    // Nothing is deleted between timed uploads: on these machines' disk (ext4 mounted with
    // `discard`) deleting a 1 GiB file just written slowed the next fsyncing upload by up to 1 s.
    // Each run uploads its own file (other bytes: nothing is deduplicated) and everything is
    // deleted after the last run.
    const files = Array.from({ length: runs }, (_, i) => dataFile(mib, i));
    for (const f of files) pageCacheReadSeconds(f, 1);
    const made: (() => Promise<void>)[] = [];
    const upload = async (s: Served, i: number) => {
      const id = await createImage(s, `bench-${i}`);
      const t = timeCommand('curl', ['-sS', '-f', '-o', '/dev/null', ...uploadArgs(s, id, files[i]!)]);
      made.push(() => deleteImage(s, id));
      return t;
    };
    const times = { glance: [] as number[], plain: [] as number[], md5: [] as number[] };
    for (let i = 0; i < runs; i++) {
      const jobs = [
        async () => {
          const id = await glance.createImage(`imago-bench-${i}`);
          times.glance.push(timeCommand('curl', ['-sS', '-f', '-o', '/dev/null', ...glance.uploadArgs(id, files[i]!)]));
          made.push(() => glance.deleteImage(id));
        },
        async () => times.plain.push(await upload(plain, i)),
        async () => times.md5.push(await upload(withMd5, i)),
      ];
      // rotate the order run by run, and write back what the previous path left dirty (Glance does
      // not fsync: its 1 GiB would otherwise be flushed during the next path's upload)
      for (let k = 0; k < jobs.length; k++) {
        execFileSync('sync');
        await jobs[(i + k) % jobs.length]!();
      }
    }
    for (const remove of made) await remove();

    const cp: number[] = [];
    const dst = join(BENCH_DIR, 'cp-dst.raw');
    for (let i = 0; i < runs; i++) {
      cp.push(timeCommand('sh', ['-c', 'cp "$1" "$2" && sync -f "$2"', 'sh', file, dst]));
      rmSync(dst, { force: true });
    }
    const sink = await discardingSink();
    const network: number[] = [];
    try {
      for (let i = 0; i < runs; i++) network.push(timeCommand('curl', ['-sS', '-o', '/dev/null', '-T', file, sink.url]));
    } finally {
      sink.stop();
    }

    const g = median(times.glance);
    const rows = [['upload', `imago s (median of ${runs})`, 'imago MB/s', 'Glance 25.1 s', 'ratio imago / Glance', 'limit s (hashing)', 'ratio imago / limit']];
    for (const [label, t, hashes] of [
      ['md5 off (sha256 + sha512)', median(times.plain), ['sha256', 'sha512']],
      ['md5 on (sha256 + sha512 + md5)', median(times.md5), ['sha256', 'sha512', 'md5']],
    ] as const) {
      const limit = hashLimitSeconds(bytes, hashes, rates);
      rows.push([label, t.toFixed(2), mbps(t), g.toFixed(2), (t / g).toFixed(2), limit.toFixed(2), (t / limit).toFixed(2)]);
    }
    process.stdout.write(`ingest of ${mib} MiB (incompressible) with curl -T, ${runs} alternating run(s) per path\n`);
    printTable(rows);
    process.stdout.write(describeLimits(rates, { bytes, seconds: cacheRead }));
    const ours = median(times.plain);
    process.stdout.write('\ncontext, same file and run\n');
    printTable([
      ['path', 'seconds', 'MB/s', 'ratio imago (md5 off) / this'],
      ['Glance 25.1 upload (md5 + sha512, no fsync)', g.toFixed(2), mbps(g), (ours / g).toFixed(2)],
      ['cp + fsync (same disk)', median(cp).toFixed(2), mbps(median(cp)), (ours / median(cp)).toFixed(2)],
      ['curl -T to a discarding node:http sink', median(network).toFixed(2), mbps(median(network)), (ours / median(network)).toFixed(2)],
    ]);
  } finally {
    for (const s of servers) await s.stop();
    await glance.stop();
  }
}

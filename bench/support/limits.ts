/**
 * The machine's limits, measured in the same run as the bench they bound (absolute speeds on these
 * shared machines move from run to run; a limit copied from a file would compare unlike with like):
 *
 * - hash speed per core: sha256, sha512 and md5 with node:crypto over an in-memory buffer, the
 *   work an ingest cannot avoid;
 * - page-cache read: `cat FILE > /dev/null` of a file that is already cached, the copy a download
 *   cannot avoid.
 *
 * A limit is the fastest of its runs, not the median: other work on the machine only ever slows a
 * run down, so the fastest is the closest to what the hardware can do.
 */
import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { timeCommand } from './harness.js';

export type HashName = 'sha256' | 'sha512' | 'md5';
export const HASHES: readonly HashName[] = ['sha256', 'sha512', 'md5'];

/** Bytes per second, per core. */
export type HashRates = Record<HashName, number>;

/** Hashes `mib` MiB (1 MiB updates, as the ingest pipeline feeds its hashers) `runs` times per algorithm; the fastest run. */
export function measureHashRates(mib: number, runs: number): HashRates {
  const chunk = Buffer.alloc(1 << 20, 0x5a);
  for (let i = 0; i < chunk.length; i += 4) chunk.writeUInt32LE((i * 2654435761) >>> 0, i);
  const rates = {} as HashRates;
  for (const name of HASHES) {
    const times: number[] = [];
    for (let r = 0; r < runs; r++) {
      const t = process.hrtime.bigint();
      const h = createHash(name);
      for (let i = 0; i < mib; i++) h.update(chunk);
      h.digest();
      times.push(Number(process.hrtime.bigint() - t) / 1e9);
    }
    rates[name] = (mib * chunk.length) / Math.min(...times);
  }
  return rates;
}

/**
 * The shortest time `bytes` can take when every byte goes through each of `hashes`, one hash per
 * core at most: the slowest single hash, or the total hashing work spread over all cores,
 * whichever is longer.
 */
export function hashLimitSeconds(bytes: number, hashes: readonly HashName[], rates: HashRates, cores = availableParallelism()): number {
  const each = hashes.map((h) => bytes / rates[h]);
  return Math.max(...each, each.reduce((a, b) => a + b, 0) / cores);
}

/** Seconds to read a cached file into /dev/null (the fastest of `runs`, after one warm-up read). */
export function pageCacheReadSeconds(file: string, runs: number): number {
  const read = () => timeCommand('sh', ['-c', 'cat "$1" > /dev/null', 'sh', file]);
  read();
  const times: number[] = [];
  for (let i = 0; i < runs; i++) times.push(read());
  return Math.min(...times);
}

/** One line that states the limits a table used, printed under it. */
export function describeLimits(rates: HashRates, cacheRead?: { bytes: number; seconds: number }): string {
  const mb = (bytesPerSecond: number) => (bytesPerSecond / 1e6).toFixed(0);
  const parts = HASHES.map((h) => `${h} ${mb(rates[h])} MB/s`);
  if (cacheRead) parts.push(`page-cache read (cat > /dev/null) ${mb(cacheRead.bytes / cacheRead.seconds)} MB/s`);
  return `limits measured in this run, per core (node:crypto, ${availableParallelism()} cores): ${parts.join(', ')}\n`;
}

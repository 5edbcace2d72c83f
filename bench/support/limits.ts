/**
 * The machine's limits, measured in the same run as the bench they bound (absolute speeds on these
 * shared machines move from run to run; a limit copied from a file would compare unlike with like):
 *
 * - hash speed per core: sha256, sha512 and md5 with node:crypto over an in-memory buffer, the
 *   work an ingest cannot avoid;
 * - page-cache read: `cat FILE > /dev/null` of a file that is already cached, the copy a download
 *   cannot avoid;
 * - the sendfile floor: the same cached file sent by the kernel itself (`sendfile(2)` from a
 *   minimal python3 HTTP responder, no user-space copy) to the same `curl -o /dev/null` over
 *   loopback — what any server on this machine can deliver to that client.
 *
 * A limit is the fastest of its runs, not the median: other work on the machine only ever slows a
 * run down, so the fastest is the closest to what the hardware can do.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { freePort, timeCommand } from './harness.js';

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

/** A one-file HTTP/1.1 responder: each connection gets the file through sendfile(2), then closes. */
const SENDFILE_SERVER = `
import os, socket, sys
path, port = sys.argv[1], int(sys.argv[2])
size = os.path.getsize(path)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", port)); s.listen(8)
print("ready", flush=True)
while True:
    c, _ = s.accept(); c.recv(65536)
    c.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\nConnection: close\\r\\n\\r\\n" % size)
    fd = os.open(path, os.O_RDONLY); off = 0
    while off < size: off += os.sendfile(c.fileno(), fd, off, size - off)
    os.close(fd); c.close()
`;

/** Seconds for `curl -o /dev/null` to receive the cached `file` sent with sendfile(2) (the fastest of `runs`, after a warm-up). */
export async function sendfileFloorSeconds(file: string, runs: number): Promise<number> {
  const port = await freePort();
  const proc = spawn('python3', ['-c', SENDFILE_SERVER, file, String(port)], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    await new Promise<void>((resolve, reject) => {
      proc.once('error', reject);
      proc.once('exit', (code) => reject(new Error(`the sendfile responder (python3) exited with ${code}`)));
      proc.stdout!.once('data', () => resolve());
    });
    const get = () => timeCommand('curl', ['-sS', '-f', '-o', '/dev/null', `http://127.0.0.1:${port}/`]);
    get();
    const times: number[] = [];
    for (let i = 0; i < runs; i++) times.push(get());
    return Math.min(...times);
  } finally {
    proc.kill();
  }
}

/** One line that states the limits a table used, printed under it. */
export function describeLimits(rates: HashRates, cacheRead?: { bytes: number; seconds: number }): string {
  const mb = (bytesPerSecond: number) => (bytesPerSecond / 1e6).toFixed(0);
  const parts = HASHES.map((h) => `${h} ${mb(rates[h])} MB/s`);
  if (cacheRead) parts.push(`page-cache read (cat > /dev/null) ${mb(cacheRead.bytes / cacheRead.seconds)} MB/s`);
  return `limits measured in this run, per core (node:crypto, ${availableParallelism()} cores): ${parts.join(', ')}\n`;
}

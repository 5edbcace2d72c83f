/**
 * Compression on worker threads, so every core works on `-c` qcow2 and streamOptimized VMDK while
 * the main thread reads the source and writes the output.
 *
 * - `CompressPool`: POOL_SIZE workers (node:worker_threads), each compressing one block at a time
 *   with node:zlib's synchronous codec; a job goes to the worker with the fewest jobs queued.
 * - `mapOrdered`: runs a job per item with at most `maxInFlight` pending and yields results in
 *   input order, so the output is byte-for-byte deterministic whatever the scheduling, and memory
 *   is bounded by `maxInFlight` blocks (the queue never grows with the disk).
 *
 * The worker's code is an inline CommonJS string (`eval: true`): it then runs the same from the
 * TypeScript sources under tsx and from the compiled `dist/`, with no path to resolve.
 *
 * node:worker_threads is loaded, and the encoder looked up, only when a pool starts: every writer
 * imports this module, most conversions compress nothing (issue 20, CLI start).
 *
 * Input blocks are copied once into a transferable buffer: posting a view of a larger read chunk
 * would structured-clone the whole chunk. Results come back as small copies (compressed bytes).
 */
import type { Worker } from 'node:worker_threads';
import { DiskError } from '../disk.js';

const POOL_SIZE = 2;

export type Codec =
  /** raw deflate (RFC 1951) with a 2^windowBits window — qcow2 zlib clusters use windowBits 12 */
  | { readonly kind: 'deflate-raw'; readonly windowBits: number; readonly level: number }
  /** zlib-wrapped deflate (RFC 1950) — VMDK grains (qemu uses zlib `compress()`) */
  | { readonly kind: 'deflate'; readonly level: number }
  /** one zstd frame — qcow2 compression_type=zstd clusters (encoder: @bokuweb/zstd-wasm in the worker) */
  | { readonly kind: 'zstd'; readonly level: number };

let zstdEncoderResolved: string | null | undefined;

/** Where the zstd encoder lives (resolved here, required by path in the workers); undefined when not installed. */
export function zstdEncoderPath(): string | undefined {
  if (zstdEncoderResolved === undefined) {
    try {
      zstdEncoderResolved = process
        .getBuiltinModule('node:module')
        .createRequire(import.meta.url)
        .resolve('@bokuweb/zstd-wasm');
    } catch {
      zstdEncoderResolved = null;
    }
  }
  return zstdEncoderResolved ?? undefined;
}

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const zlib = require('node:zlib');
let zstd;
const zstdReady = workerData && workerData.zstdPath ? (zstd = require(workerData.zstdPath)).init() : Promise.resolve();
zstdReady.catch(() => undefined);
parentPort.on('message', async (m) => {
  try {
    let out;
    if (m.codec.kind === 'zstd') {
      if (!zstd) throw new Error('no zstd encoder installed');
      await zstdReady;
      out = zstd.compress(m.data, m.codec.level);
    } else out = m.codec.kind === 'deflate-raw'
      ? zlib.deflateRawSync(m.data, { level: m.codec.level, windowBits: m.codec.windowBits })
      : zlib.deflateSync(m.data, { level: m.codec.level });
    parentPort.postMessage({ id: m.id, data: new Uint8Array(out) });
  } catch (err) {
    parentPort.postMessage({ id: m.id, error: String(err && err.message || err) });
  }
});
`;

interface Pending {
  resolve: (b: Uint8Array) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  jobs: Map<number, Pending>;
}

export class CompressPool {
  private readonly slots: Slot[] = [];
  private nextId = 1;
  private closed = false;

  constructor(size = Math.max(1, Math.min(POOL_SIZE, process.getBuiltinModule('node:os').cpus().length))) {
    const threads = process.getBuiltinModule('node:worker_threads');
    for (let i = 0; i < size; i++) {
      const worker = new threads.Worker(WORKER_SOURCE, { eval: true, workerData: { zstdPath: zstdEncoderPath() } });
      const slot: Slot = { worker, jobs: new Map() };
      worker.on('message', (m: { id: number; data?: Uint8Array; error?: string }) => {
        const job = slot.jobs.get(m.id);
        if (!job) return;
        slot.jobs.delete(m.id);
        if (m.data) job.resolve(m.data);
        else job.reject(new DiskError(`compression failed: ${m.error ?? 'unknown error'}`, 'IO'));
      });
      worker.on('error', (err) => this.failAll(slot, err));
      worker.on('exit', () => this.failAll(slot, new DiskError('a compression worker exited', 'IO')));
      this.slots.push(slot);
    }
  }

  private failAll(slot: Slot, err: Error): void {
    for (const job of slot.jobs.values()) job.reject(err);
    slot.jobs.clear();
  }

  compress(data: Uint8Array, codec: Codec): Promise<Uint8Array> {
    if (this.closed) return Promise.reject(new DiskError('compression pool is closed', 'IO'));
    let slot = this.slots[0]!;
    for (const s of this.slots) if (s.jobs.size < slot.jobs.size) slot = s;
    const id = this.nextId++;
    // a copy in its own ArrayBuffer (new Uint8Array(x) always copies; Buffer#slice would be a view
    // and transferring its buffer would detach the caller's)
    const copy = new Uint8Array(data);
    return new Promise<Uint8Array>((resolve, reject) => {
      slot.jobs.set(id, { resolve, reject });
      slot.worker.postMessage({ id, codec, data: copy }, [copy.buffer]);
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}

/**
 * Yields `[item, await fn(item)]` in input order with at most `maxInFlight` calls outstanding.
 * A rejected call surfaces when its turn comes (never as an unhandled rejection before).
 */
export async function* mapOrdered<T, R>(items: AsyncIterable<T>, fn: (item: T) => Promise<R>, maxInFlight: number): AsyncGenerator<[T, R]> {
  const queue: { item: T; result: Promise<R> }[] = [];
  for await (const item of items) {
    const result = fn(item);
    result.catch(() => undefined);
    queue.push({ item, result });
    if (queue.length >= maxInFlight) {
      const head = queue.shift()!;
      yield [head.item, await head.result];
    }
  }
  while (queue.length > 0) {
    const head = queue.shift()!;
    yield [head.item, await head.result];
  }
}

/**
 * Hashes one byte stream with several algorithms on worker threads, so hashing does not compete
 * with the event loop (which writes the bytes to staging and inspects them).
 *
 * The worker threads are one pool for the whole process (as many as the cores), shared by every
 * hasher: a worker thread is a V8 isolate of ~9 MiB, and one pair per upload made ten concurrent
 * uploads cost 170 MiB in threads alone (issue 18). A hasher gives each group of algorithms a
 * lane on one pool worker (groups of one hasher go to different workers, so sha256 and sha512 run
 * in parallel). Each lane owns a fixed set of slots in a SharedArrayBuffer: a chunk is copied into
 * a free slot (memcpy is ~20x faster than any hash) and the worker hashes it in place, then frees
 * the slot. Memory is therefore fixed (slots × slotBytes per lane) whatever the stream's size, and
 * `update` waits when a worker lags (backpressure) — no allocation per chunk.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

export type HashAlgorithm = 'sha256' | 'sha512' | 'md5' | 'sha1';

// Plain JS so it runs the same from dist/ and under tsx. One worker serves many lanes, by id.
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const lanes = new Map();
parentPort.on('message', (msg) => {
  if (msg.op === 'open') {
    lanes.set(msg.id, { ring: new Uint8Array(msg.ring), hashes: msg.algorithms.map((a) => [a, createHash(a)]) });
  } else if (msg.op === 'update') {
    const lane = lanes.get(msg.id);
    const view = lane.ring.subarray(msg.offset, msg.offset + msg.length);
    for (const [, h] of lane.hashes) h.update(view);
    parentPort.postMessage({ id: msg.id, free: msg.slot });
  } else if (msg.op === 'digest') {
    const lane = lanes.get(msg.id);
    const out = {};
    for (const [a, h] of lane.hashes) out[a] = h.digest('hex');
    lanes.delete(msg.id);
    parentPort.postMessage({ id: msg.id, digest: out });
  } else if (msg.op === 'close') {
    lanes.delete(msg.id);
  }
});
`;

interface Lane {
  id: number;
  worker: PoolWorker;
  ring: Uint8Array;
  free: number[];
  waiters: (() => void)[];
  failure?: Error;
  digest?: { resolve: (d: Record<string, string>) => void; reject: (e: Error) => void };
}

interface PoolWorker {
  thread: Worker;
  lanes: Map<number, Lane>;
  dead: boolean;
}

/** The process-wide workers, created on first use; a worker that dies fails its lanes and is replaced. */
class HashPool {
  private readonly workers: PoolWorker[] = [];
  private next = 0;
  private ids = 0;

  constructor(private readonly size: number) {}

  /** `count` workers, distinct while the pool has that many, rotating so hashers spread evenly. */
  take(count: number): PoolWorker[] {
    const start = this.next;
    this.next = (this.next + 1) % this.size;
    return Array.from({ length: count }, (_, i) => this.worker((start + i) % this.size));
  }

  newId(): number {
    return ++this.ids;
  }

  private worker(i: number): PoolWorker {
    const existing = this.workers[i];
    if (existing && !existing.dead) return existing;
    const thread = new Worker(WORKER_SOURCE, { eval: true });
    const w: PoolWorker = { thread, lanes: new Map(), dead: false };
    thread.on('message', (m: { id: number; free?: number; digest?: Record<string, string> }) => {
      const lane = w.lanes.get(m.id);
      if (!lane) return;
      if (m.free !== undefined) {
        lane.free.push(m.free);
        lane.waiters.shift()?.();
      } else if (m.digest) {
        track(w, lane, false);
        lane.digest?.resolve(m.digest);
      }
    });
    const die = (e: Error) => {
      w.dead = true;
      for (const lane of w.lanes.values()) {
        lane.failure = e;
        for (const f of lane.waiters.splice(0)) f();
        lane.digest?.reject(e);
      }
      w.lanes.clear();
    };
    thread.on('error', die);
    thread.on('exit', (code) => die(new Error(`a hashing worker thread exited (code ${code})`)));
    // an idle pool thread must not keep a process alive; a busy one must (see track)
    thread.unref();
    this.workers[i] = w;
    return w;
  }
}

/** Keeps a worker's thread referenced exactly while it has lanes (work the process waits for). */
function track(w: PoolWorker, lane: Lane, open: boolean): void {
  if (open) {
    if (w.lanes.size === 0) w.thread.ref();
    w.lanes.set(lane.id, lane);
  } else if (w.lanes.delete(lane.id) && w.lanes.size === 0) {
    w.thread.unref();
  }
}

let pool: HashPool | undefined;
const sharedPool = () => (pool ??= new HashPool(Math.max(2, availableParallelism())));

export class ParallelHasher {
  private readonly lanes: Lane[];
  private closed = false;

  constructor(
    groups: HashAlgorithm[][],
    // 4 slots of 128 KiB keep both workers busy (a slot is hashed while the next is filled; 256 KiB
    // slots hash no faster) for 512 KiB per lane: ten concurrent uploads hold 10 MiB of rings
    private readonly slots = 4,
    private readonly slotBytes = 128 * 1024,
  ) {
    const used = groups.filter((g) => g.length > 0);
    const workers = sharedPool().take(used.length);
    this.lanes = used.map((algorithms, i) => {
      const shared = new SharedArrayBuffer(slots * slotBytes);
      const worker = workers[i]!;
      const lane: Lane = { id: sharedPool().newId(), worker, ring: new Uint8Array(shared), free: [...Array(slots).keys()], waiters: [] };
      track(worker, lane, true);
      worker.thread.postMessage({ op: 'open', id: lane.id, algorithms, ring: shared });
      return lane;
    });
  }

  async update(chunk: Uint8Array): Promise<void> {
    if (this.closed) throw new Error('ParallelHasher: update after digest/close');
    for (let off = 0; off < chunk.length; off += this.slotBytes) {
      const piece = chunk.subarray(off, Math.min(chunk.length, off + this.slotBytes));
      for (const lane of this.lanes) {
        while (lane.free.length === 0 && !lane.failure) await new Promise<void>((r) => lane.waiters.push(r));
        if (lane.failure) throw lane.failure;
        const slot = lane.free.pop()!;
        lane.ring.set(piece, slot * this.slotBytes);
        lane.worker.thread.postMessage({ op: 'update', id: lane.id, slot, offset: slot * this.slotBytes, length: piece.length });
      }
    }
  }

  /** Waits for every lane and returns hex digests by algorithm; the hasher is closed after. */
  async digest(): Promise<Partial<Record<HashAlgorithm, string>>> {
    if (this.closed) throw new Error('ParallelHasher: digest after digest/close');
    this.closed = true;
    const parts = await Promise.all(
      this.lanes.map(
        (lane) =>
          new Promise<Record<string, string>>((resolve, reject) => {
            if (lane.failure) return reject(lane.failure);
            lane.digest = { resolve, reject };
            lane.worker.thread.postMessage({ op: 'digest', id: lane.id });
          }),
      ),
    );
    return Object.assign({}, ...parts) as Partial<Record<HashAlgorithm, string>>;
  }

  /** Gives the lanes back without a digest (an aborted stream). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const lane of this.lanes) {
      lane.failure ??= new Error('ParallelHasher: closed');
      for (const f of lane.waiters.splice(0)) f();
      track(lane.worker, lane, false);
      if (!lane.worker.dead) lane.worker.thread.postMessage({ op: 'close', id: lane.id });
    }
  }
}

/**
 * Hashes one byte stream with several algorithms on worker threads, so hashing does not compete
 * with the event loop (which writes the bytes to staging and inspects them).
 *
 * The worker threads are one pool for the whole process (as many as the cores), shared by every
 * hasher: a worker thread is a V8 isolate of ~9 MiB, and one pair per upload made ten concurrent
 * uploads cost 170 MiB in threads alone (issue 18). A hasher gives each group of algorithms a
 * lane on one pool worker (groups of one hasher go to different workers, so sha256 and sha512 run
 * in parallel).
 *
 * A hasher owns a fixed set of slots in one SharedArrayBuffer that all its lanes see. The caller
 * fills a slot (`slot()`) with the stream's next bytes, hands it to the lanes (`hash()`), uses the
 * same bytes meanwhile (the staging write, inspection) and gives it back (`release()`); the slot is
 * free again once every lane and the caller are done. The bytes are thus copied once, into the
 * slot, whatever the number of algorithms; memory is fixed (slots × slotBytes) whatever the
 * stream's size, and `slot()` waits when a lane lags (backpressure) — no allocation per chunk.
 */
import { availableParallelism, getPriority } from 'node:os';
import { Worker } from 'node:worker_threads';
import { alignedStart, PAGE_BYTES } from './direct-io.js';

export type HashAlgorithm = 'sha256' | 'sha512' | 'md5' | 'sha1';

// Plain JS so it runs the same from dist/ and under tsx. One worker serves many lanes, by id.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const { readlinkSync } = require('node:fs');
const { setPriority } = require('node:os');
// this thread only (Linux: a thread id is a pid to setpriority); elsewhere it stays as it is
try { setPriority(Number(readlinkSync('/proc/thread-self').split('/').pop()), workerData.nice); } catch {}
const lanes = new Map();
// A lane holds its stream's SharedArrayBuffer; the memory is freed only once this isolate, too, has
// collected its handle. This thread allocates almost nothing, so V8 would collect rarely: a
// collection after each lane ends (~1 ms on this tiny heap) keeps ended streams' slots from piling
// up (a soak of ~500 streams held 700 MiB without it).
require('node:v8').setFlagsFromString('--expose-gc');
const collect = require('node:vm').runInNewContext('gc');
let collecting = false;
const released = () => {
  if (collecting) return;
  collecting = true;
  setImmediate(() => {
    collecting = false;
    collect();
  });
};
parentPort.on('message', (msg) => {
  if (msg.op === 'open') {
    lanes.set(msg.id, { slots: new Uint8Array(msg.slots), hashes: msg.algorithms.map((a) => [a, createHash(a)]) });
  } else if (msg.op === 'update') {
    const lane = lanes.get(msg.id);
    const view = lane.slots.subarray(msg.offset, msg.offset + msg.length);
    for (const [, h] of lane.hashes) h.update(view);
    parentPort.postMessage({ id: msg.id, done: msg.offset });
  } else if (msg.op === 'digest') {
    const lane = lanes.get(msg.id);
    const out = {};
    for (const [a, h] of lane.hashes) out[a] = h.digest('hex');
    lanes.delete(msg.id);
    parentPort.postMessage({ id: msg.id, digest: out });
    released();
  } else if (msg.op === 'close') {
    lanes.delete(msg.id);
    released();
  }
});
`;

/**
 * How far below the event loop the hashing threads run (nice, relative to the thread that makes
 * the pool). Hashing is bulk work that can wait a moment; the event loop answers every client. On a
 * machine whose cores are all busy hashing (a hundred uploads at once) the loop would otherwise get
 * a third of a core and stall for hundreds of ms (issue 20 item 6); 10 below, the scheduler gives
 * it the CPU whenever it has work (weight 1024 against 110), and hashing takes all the rest.
 * Relative, like Node's own V8 threads under `imago serve` (bin/imago.js): a server started at
 * another nice keeps the same order — loop first, then hashing and V8's background work alike.
 */
const HASH_NICE = 10;

interface Lane {
  id: number;
  worker: PoolWorker;
  /** the hasher's slot at this byte offset is hashed */
  done: (offset: number) => void;
  /** the worker died */
  fail: (e: Error) => void;
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
    const thread = new Worker(WORKER_SOURCE, { eval: true, workerData: { nice: Math.min(19, getPriority() + HASH_NICE) } });
    const w: PoolWorker = { thread, lanes: new Map(), dead: false };
    thread.on('message', (m: { id: number; done?: number; digest?: Record<string, string> }) => {
      const lane = w.lanes.get(m.id);
      if (!lane) return;
      if (m.done !== undefined) {
        lane.done(m.done);
      } else if (m.digest) {
        track(w, lane, false);
        lane.digest?.resolve(m.digest);
      }
    });
    const die = (e: Error) => {
      w.dead = true;
      for (const lane of w.lanes.values()) {
        lane.fail(e);
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

/** A hasher's slots: how many, and their size. */
export interface SlotShape {
  slots: number;
  slotBytes: number;
}

/**
 * Large slots cost a quarter of the cross-thread messages and wake-ups of small ones (-0.1 to
 * -0.2 s of CPU per GiB, issue 20), but 4 MiB per stream; small ones hold 2 MiB. The first
 * `LARGE_STREAMS` streams at a time get large ones, any more get small ones.
 */
export const LARGE: SlotShape = Object.freeze({ slots: 4, slotBytes: 1024 * 1024 });
export const SMALL: SlotShape = Object.freeze({ slots: 8, slotBytes: 256 * 1024 });
const LARGE_STREAMS = 4;
let largeInUse = 0;

function takeSlotShape(): SlotShape {
  if (largeInUse >= LARGE_STREAMS) return SMALL;
  largeInUse++;
  return LARGE;
}

/**
 * Memory for slots beyond each stream's first, shared by all streams. A stream starts with one
 * slot and takes more (up to its shape's count) only while this budget lasts, so a hundred
 * concurrent uploads hold one slot each plus the budget — not a hundred full sets (200 MiB RSS,
 * issue 20 item 6); they fill, hash and write one slot at a time, which costs them nothing when
 * the cores are busy anyway. A slot's pages become resident only once it is used, so the unused
 * part of a stream's SharedArrayBuffer costs no memory.
 */
export const EXTRA_SLOT_BUDGET_BYTES = 32 * 1024 * 1024;
let extraInUse = 0;

/**
 * Slot memory of ended streams, reused by the next ones. A SharedArrayBuffer is freed only once
 * every isolate that saw it (this thread and a hash worker) has collected its handle, which may be
 * long after its stream ended: ~500 streams in a soak held 700 MiB that way. Reusing a few keeps
 * sequential streams on the same memory; beyond `SPARE_BUFFERS` per shape they are left to the
 * collectors (the workers collect after each stream, see WORKER_SOURCE).
 */
const SPARE_BUFFERS = 8;
const spareBuffers = new Map<SlotShape, SharedArrayBuffer[]>();

function keepSpare(shape: SlotShape, shared: SharedArrayBuffer): void {
  if (shape !== LARGE && shape !== SMALL) return;
  const spare = spareBuffers.get(shape) ?? [];
  spareBuffers.set(shape, spare);
  if (spare.length < SPARE_BUFFERS) spare.push(shared);
}

export class ParallelHasher {
  private readonly lanes: Lane[];
  private readonly shared: SharedArrayBuffer;
  /** holders of each slot: the caller while it fills and uses it, and each lane until it hashed it */
  private readonly holds: number[];
  private readonly free: number[];
  private readonly waiters: (() => void)[] = [];
  private failure: Error | undefined;
  private closed = false;
  /** slots in use so far: the first, and those taken from the shared budget */
  private grown = 1;

  /** Slots this stream has used so far (a diagnostic). */
  get slotsUsed(): number {
    return this.grown;
  }
  readonly slotBytes: number;
  private readonly base: number;

  constructor(
    groups: HashAlgorithm[][],
    private readonly shape: SlotShape = takeSlotShape(),
  ) {
    this.slotBytes = shape.slotBytes;
    // slots start on a page boundary, so the staging write can go straight to the device (O_DIRECT)
    this.shared = spareBuffers.get(shape)?.pop() ?? new SharedArrayBuffer(shape.slots * shape.slotBytes + PAGE_BYTES);
    this.base = alignedStart(this.shared);
    this.holds = new Array<number>(shape.slots).fill(0);
    this.free = [0];
    const used = groups.filter((g) => g.length > 0);
    const workers = sharedPool().take(used.length);
    this.lanes = used.map((algorithms, i) => {
      const worker = workers[i]!;
      const lane: Lane = {
        id: sharedPool().newId(),
        worker,
        done: (offset) => this.drop((offset - this.base) / this.slotBytes),
        fail: (e) => {
          this.failure ??= e;
          for (const f of this.waiters.splice(0)) f();
        },
      };
      track(worker, lane, true);
      worker.thread.postMessage({ op: 'open', id: lane.id, algorithms, slots: this.shared });
      return lane;
    });
  }

  /** A free slot to fill (the caller holds it until `release`); waits while every slot is in use. */
  async slot(): Promise<Buffer> {
    for (;;) {
      const slot = this.trySlot();
      if (slot) return slot;
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }

  /** A free slot to fill now, or undefined when every slot is in use (`slot()` waits for one). */
  trySlot(): Buffer | undefined {
    this.usable();
    if (this.free.length === 0 && this.grown < this.shape.slots && extraInUse + this.slotBytes <= EXTRA_SLOT_BUDGET_BYTES) {
      extraInUse += this.slotBytes;
      this.free.push(this.grown++);
    }
    const i = this.free.pop();
    if (i === undefined) return undefined;
    this.holds[i] = 1;
    return Buffer.from(this.shared, this.base + i * this.slotBytes, this.slotBytes);
  }

  /** Hashes `bytes`, the start of a slot from `slot()`, as the stream's next bytes. */
  hash(bytes: Uint8Array): void {
    this.usable();
    const i = this.slotOf(bytes);
    for (const lane of this.lanes) {
      this.holds[i]!++;
      lane.worker.thread.postMessage({ op: 'update', id: lane.id, offset: bytes.byteOffset, length: bytes.length });
    }
  }

  /** The caller is done with the slot `bytes` lies in (it may still be hashing). */
  release(bytes: Uint8Array): void {
    this.drop(this.slotOf(bytes));
  }

  /** Hashes any bytes as the stream's next: copies them into slots (for callers without slots of their own). */
  async update(chunk: Uint8Array): Promise<void> {
    for (let off = 0; off < chunk.length; off += this.slotBytes) {
      const piece = chunk.subarray(off, Math.min(chunk.length, off + this.slotBytes));
      const slot = await this.slot();
      slot.set(piece);
      this.hash(slot.subarray(0, piece.length));
      this.release(slot);
    }
  }

  /** Waits for every lane and returns hex digests by algorithm; the hasher is closed after. */
  async digest(): Promise<Partial<Record<HashAlgorithm, string>>> {
    this.usable();
    this.finish();
    const parts = await Promise.all(
      this.lanes.map(
        (lane) =>
          new Promise<Record<string, string>>((resolve, reject) => {
            if (this.failure) return reject(this.failure);
            lane.digest = { resolve, reject };
            lane.worker.thread.postMessage({ op: 'digest', id: lane.id });
          }),
      ),
    );
    // every lane has hashed its last slot: the memory may serve the next stream
    keepSpare(this.shape, this.shared);
    return Object.assign({}, ...parts) as Partial<Record<HashAlgorithm, string>>;
  }

  /** Gives the lanes back without a digest (an aborted stream). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.finish();
    keepSpare(this.shape, this.shared);
    this.failure ??= new Error('ParallelHasher: closed');
    for (const f of this.waiters.splice(0)) f();
    for (const lane of this.lanes) {
      track(lane.worker, lane, false);
      if (!lane.worker.dead) lane.worker.thread.postMessage({ op: 'close', id: lane.id });
    }
  }

  private finish(): void {
    this.closed = true;
    if (this.shape === LARGE) largeInUse--;
    extraInUse -= (this.grown - 1) * this.slotBytes;
    this.grown = 1;
  }

  private usable(): void {
    if (this.closed) throw new Error('ParallelHasher: used after digest/close');
    if (this.failure) throw this.failure;
  }

  private slotOf(bytes: Uint8Array): number {
    const i = Math.floor((bytes.byteOffset - this.base) / this.slotBytes);
    if (bytes.buffer !== this.shared || bytes.byteOffset !== this.base + i * this.slotBytes || bytes.length > this.slotBytes) {
      throw new Error("ParallelHasher: not the start of one of this hasher's slots");
    }
    return i;
  }

  private drop(i: number): void {
    if (--this.holds[i]! === 0) {
      this.free.push(i);
      this.waiters.shift()?.();
    }
  }
}

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
 * A hasher borrows a few slots from the process's slot arena (SharedArrayBuffers that every
 * worker was given once, see SlotArena) and keeps them until its digest. The caller fills a slot (`slot()`) with the stream's next bytes, hands it to the lanes (`hash()`), uses the
 * same bytes meanwhile (the staging write, inspection) and gives it back (`release()`); the slot is
 * free again once every lane and the caller are done. The bytes are thus copied once, into the
 * slot, whatever the number of algorithms; memory is fixed (slots × slotBytes) whatever the
 * stream's size, and `slot()` waits when a lane lags (backpressure) — no allocation per chunk.
 */
import { availableParallelism, getPriority } from 'node:os';
import { Socket } from 'node:net';
import { Worker } from 'node:worker_threads';
import { alignedStart, PAGE_BYTES } from './direct-io.js';
import { loadNativeAddon } from './native-addon.js';

const wakePipe = loadNativeAddon<{ pipe(): [number, number] }>('wake_pipe');

/** Whether the hashing threads wake the loop through the wake pipe (the native addon is built), not by message. */
export const wakesByPipe = wakePipe !== undefined;

export type HashAlgorithm = 'sha256' | 'sha512' | 'md5' | 'sha1';

// Plain JS so it runs the same from dist/ and under tsx. One worker serves many lanes, by id, over
// the slot arena's segments, by id (see SlotArena).
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const { readlinkSync, writeSync } = require('node:fs');
const { setPriority } = require('node:os');
// this thread only (Linux: a thread id is a pid to setpriority); elsewhere it stays as it is
try { setPriority(Number(readlinkSync('/proc/thread-self').split('/').pop()), workerData.nice); } catch {}
const lanes = new Map();
const segments = new Map();
// Hashed slots go into the completion ring (see CompletionRing); a message wakes the event loop
// only when it asked to be woken, i.e. once per time it has emptied the ring.
const ring = new Int32Array(workerData.ring);
const CAPACITY = workerData.capacity;
const completed = (id, slot) => {
  const tail = ring[1];
  if (((tail - Atomics.load(ring, 0)) | 0) >= CAPACITY) {
    parentPort.postMessage({ id, done: slot }); // full (not expected): say it directly
    return;
  }
  const at = 4 + (tail & (CAPACITY - 1)) * 2;
  ring[at] = id;
  ring[at + 1] = slot;
  Atomics.store(ring, 1, (tail + 1) | 0);
  if (Atomics.exchange(ring, 2, 0) === 1) wake();
};
const ONE = new Uint8Array(1);
// through the wake pipe when there is one (a full pipe already wakes the loop); else a message
const wake = workerData.wakeFd >= 0
  ? () => { try { writeSync(workerData.wakeFd, ONE); } catch {} }
  : () => parentPort.postMessage({ wake: true });
// A dropped segment's memory is freed only once this isolate, too, has collected its handle, and
// this thread allocates almost nothing, so V8 would collect rarely: collect once after a drop.
require('node:v8').setFlagsFromString('--expose-gc');
const collect = require('node:vm').runInNewContext('gc');
let collecting = false;
const dropped = () => {
  if (collecting) return;
  collecting = true;
  setImmediate(() => {
    collecting = false;
    collect();
  });
};
parentPort.on('message', (msg) => {
  if (msg.op === 'update') {
    const lane = lanes.get(msg.id);
    const view = new Uint8Array(segments.get(msg.segment), msg.offset, msg.length);
    for (const h of lane.hashes) h[1].update(view);
    completed(msg.id, msg.slot);
  } else if (msg.op === 'open') {
    lanes.set(msg.id, { hashes: msg.algorithms.map((a) => [a, createHash(a)]) });
  } else if (msg.op === 'digest') {
    const lane = lanes.get(msg.id);
    const out = {};
    for (const [a, h] of lane.hashes) out[a] = h.digest('hex');
    lanes.delete(msg.id);
    parentPort.postMessage({ id: msg.id, digest: out });
  } else if (msg.op === 'close') {
    lanes.delete(msg.id);
  } else if (msg.op === 'segment') {
    segments.set(msg.segment, msg.shared);
  } else if (msg.op === 'drop') {
    segments.delete(msg.segment);
    dropped();
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
  /** the hasher's slot with this index is hashed */
  done: (slot: number) => void;
  /** the worker died */
  fail: (e: Error) => void;
  digest?: { resolve: (d: Record<string, string>) => void; reject: (e: Error) => void };
}

interface PoolWorker {
  thread: Worker;
  lanes: Map<number, Lane>;
  dead: boolean;
  /** hands the hashed slots in its completion ring to their lanes */
  drain: () => void;
}

/**
 * How a hashing thread tells the event loop which slots it has hashed: entries (lane, slot) in a
 * ring in shared memory, and a message only to wake the loop once it has emptied the ring and
 * asked again. A message per hashed slot cost a lock handover per message: Node's MessagePort
 * wakes the receiving thread while it still holds the queue's lock, so the loop — woken at a far
 * higher priority than the niced hashing thread — found the lock taken, and slept until the
 * hashing thread got a CPU again and let go of it. Under 100 uploads that was 5,000 waits in 12 s,
 * up to 18 ms each (perf sched). So the wake-up is one byte into a pipe (native/wake-pipe.c), which
 * holds no lock of ours, and only when the loop asked for it (once per time it emptied the ring);
 * without the native addon, a message.
 *
 * Layout (Int32): [0] head, advanced by the loop; [1] tail, advanced by the thread; [2] armed: 1
 * while the loop wants a wake-up message; from [4], CAPACITY entries of (lane id, slot).
 */
const RING_CAPACITY = 1 << 16;

class CompletionRing {
  readonly shared = new SharedArrayBuffer((4 + RING_CAPACITY * 2) * 4);
  private readonly ring = new Int32Array(this.shared);

  constructor() {
    Atomics.store(this.ring, 2, 1);
  }

  /** Hands every entry to `done`, then asks for a wake-up at the next one. */
  drain(done: (lane: number, slot: number) => void): void {
    const ring = this.ring;
    let head = ring[0]!;
    for (;;) {
      const tail = Atomics.load(ring, 1);
      while (head !== tail) {
        const at = 4 + (head & (RING_CAPACITY - 1)) * 2;
        const lane = ring[at]!;
        const slot = ring[at + 1]!;
        head = (head + 1) | 0;
        Atomics.store(ring, 0, head);
        done(lane, slot);
      }
      Atomics.store(ring, 2, 1);
      // an entry that came after the last look but before arming woke no one: take it now
      if (Atomics.load(ring, 1) === head) return;
    }
  }
}

/** The process-wide workers, created on first use; a worker that dies fails its lanes and is replaced. */
class HashPool {
  private readonly workers: PoolWorker[] = [];
  private next = 0;
  private ids = 0;
  /** the write end of the wake pipe, -1 without one (the workers then wake the loop by message) */
  private readonly wakeFd: number;

  constructor(
    private readonly size: number,
    /** every live segment of the slot arena, which a new worker is told of before anything else */
    private readonly segments: () => Iterable<Segment>,
  ) {
    const fds = wakePipe?.pipe();
    this.wakeFd = fds?.[1] ?? -1;
    if (fds) {
      // a byte means: some worker's ring has entries. The stream must not keep the process alive (busy workers do, see track).
      const reader = new Socket({ fd: fds[0], readable: true, writable: false });
      reader.on('data', () => {
        for (const w of this.workers) if (w && !w.dead) w.drain();
      });
      reader.unref();
    }
  }

  /** `count` workers, distinct while the pool has that many, rotating so hashers spread evenly. */
  take(count: number): PoolWorker[] {
    const start = this.next;
    this.next = (this.next + 1) % this.size;
    return Array.from({ length: count }, (_, i) => this.worker((start + i) % this.size));
  }

  newId(): number {
    // an Int32 in the completion ring
    this.ids = (this.ids % 0x7fffffff) + 1;
    return this.ids;
  }

  /** Tells every live worker (a segment is created or dropped; a worker made later learns from `segments`). */
  broadcast(msg: object): void {
    for (const w of this.workers) if (w && !w.dead) w.thread.postMessage(msg);
  }

  private worker(i: number): PoolWorker {
    const existing = this.workers[i];
    if (existing && !existing.dead) return existing;
    const ring = new CompletionRing();
    const thread = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { nice: Math.min(19, getPriority() + HASH_NICE), ring: ring.shared, capacity: RING_CAPACITY, wakeFd: this.wakeFd },
    });
    const hashed = (id: number, slot: number) => w.lanes.get(id)?.done(slot);
    const w: PoolWorker = { thread, lanes: new Map(), dead: false, drain: () => ring.drain(hashed) };
    for (const s of this.segments()) thread.postMessage({ op: 'segment', segment: s.id, shared: s.shared });
    thread.on('message', (m: { id: number; done?: number; digest?: Record<string, string>; wake?: true }) => {
      // the ring first: a lane's hashed slots come before its digest
      w.drain();
      if (m.wake) return;
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

/** One SharedArrayBuffer of the arena, cut into slots of one size. */
interface Segment {
  id: number;
  shared: SharedArrayBuffer;
  slotBytes: number;
  /** slots that fit */
  capacity: number;
  /** byte offsets of the free slots */
  free: number[];
}

/** A slot lent by the arena: where it lies. */
interface ArenaSlot {
  segment: Segment;
  offset: number;
}

/**
 * The process's slot memory, shared by every hasher: SharedArrayBuffers of `SEGMENT_BYTES`
 * ("segments"), each posted to the hashing threads once, and lent out a slot at a time. Before,
 * each stream had a SharedArrayBuffer of its own, posted to a worker with its lane: a hundred
 * uploads starting at once made a hundred 2 MiB buffers, which V8 counts in full as external
 * memory the moment they exist (a collection as they appeared), and each worker ran a full
 * collection after every stream so that ended streams' buffers were freed (issue 20 item 6). Now
 * a stream only borrows offsets; the arena grows by a segment when no slot of the size is free and
 * gives a segment back once it is wholly free and `SPARE_SEGMENTS` others already are, so memory
 * follows the streams in flight (slots of ended streams are reused first, from the oldest segment).
 */
const SEGMENT_BYTES = 8 * 1024 * 1024;
const SPARE_SEGMENTS = 1;

class SlotArena {
  /** by slot size, oldest first */
  private readonly bySize = new Map<number, Segment[]>();
  private readonly byBuffer = new Map<SharedArrayBuffer, Segment>();
  private ids = 0;

  constructor(private readonly announce: (msg: object) => void) {}

  *segments(): Iterable<Segment> {
    yield* this.byBuffer.values();
  }

  /** Bytes of all live segments (a diagnostic). */
  get bytes(): number {
    let n = 0;
    for (const s of this.byBuffer.values()) n += s.shared.byteLength;
    return n;
  }

  take(slotBytes: number): ArenaSlot {
    const list = this.bySize.get(slotBytes) ?? [];
    this.bySize.set(slotBytes, list);
    const segment = list.find((s) => s.free.length > 0) ?? this.grow(list, slotBytes);
    // lowest offset first, so the segment's tail stays untouched (not resident) while it can
    return { segment, offset: segment.free.pop()! };
  }

  give(slot: ArenaSlot): void {
    const { segment } = slot;
    segment.free.push(slot.offset);
    segment.free.sort((a, b) => b - a);
    if (segment.free.length < segment.capacity) return;
    const list = this.bySize.get(segment.slotBytes)!;
    const idle = list.filter((s) => s.free.length === s.capacity).length;
    if (idle <= SPARE_SEGMENTS) return;
    list.splice(list.indexOf(segment), 1);
    this.byBuffer.delete(segment.shared);
    this.announce({ op: 'drop', segment: segment.id });
  }

  /** The segment a view into the arena lies in, if any. */
  segmentOf(buffer: ArrayBufferLike): Segment | undefined {
    return this.byBuffer.get(buffer as SharedArrayBuffer);
  }

  private grow(list: Segment[], slotBytes: number): Segment {
    const capacity = Math.max(1, Math.floor(SEGMENT_BYTES / slotBytes));
    // slots start on a page boundary, so the staging write can go straight to the device (O_DIRECT)
    const shared = new SharedArrayBuffer(capacity * slotBytes + PAGE_BYTES);
    const base = alignedStart(shared);
    const free = Array.from({ length: capacity }, (_, i) => base + (capacity - 1 - i) * slotBytes);
    const segment: Segment = { id: ++this.ids, shared, slotBytes, capacity, free };
    list.push(segment);
    this.byBuffer.set(shared, segment);
    this.announce({ op: 'segment', segment: segment.id, shared });
    return segment;
  }
}

let pool: HashPool | undefined;
let arena: SlotArena | undefined;
const sharedArena = () => (arena ??= new SlotArena((msg) => pool?.broadcast(msg)));
const sharedPool = () => (pool ??= new HashPool(Math.max(2, availableParallelism()), () => sharedArena().segments()));

/** Bytes of slot memory the process holds now, in use or spare (a diagnostic). */
export function slotArenaBytes(): number {
  return arena?.bytes ?? 0;
}

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
 * the cores are busy anyway.
 */
export const EXTRA_SLOT_BUDGET_BYTES = 32 * 1024 * 1024;
let extraInUse = 0;

export class ParallelHasher {
  private readonly lanes: Lane[];
  /** the slots this stream borrowed from the arena, by index; kept until digest/close */
  private readonly slots: ArenaSlot[] = [];
  /** holders of each slot: the caller while it fills and uses it, and each lane until it hashed it */
  private readonly holds: number[] = [];
  private readonly free: number[] = [];
  private readonly waiters: (() => void)[] = [];
  private failure: Error | undefined;
  private closed = false;

  /** Slots this stream has used so far (a diagnostic). */
  get slotsUsed(): number {
    return this.slots.length;
  }
  readonly slotBytes: number;

  constructor(
    groups: HashAlgorithm[][],
    private readonly shape: SlotShape = takeSlotShape(),
  ) {
    this.slotBytes = shape.slotBytes;
    const used = groups.filter((g) => g.length > 0);
    const workers = sharedPool().take(used.length);
    this.borrow();
    this.lanes = used.map((algorithms, i) => {
      const worker = workers[i]!;
      const lane: Lane = {
        id: sharedPool().newId(),
        worker,
        done: (slot) => this.drop(slot),
        fail: (e) => {
          this.failure ??= e;
          for (const f of this.waiters.splice(0)) f();
        },
      };
      track(worker, lane, true);
      worker.thread.postMessage({ op: 'open', id: lane.id, algorithms });
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
    if (this.free.length === 0 && this.slots.length < this.shape.slots && extraInUse + this.slotBytes <= EXTRA_SLOT_BUDGET_BYTES) {
      extraInUse += this.slotBytes;
      this.borrow();
    }
    const i = this.free.pop();
    if (i === undefined) return undefined;
    this.holds[i] = 1;
    const { segment, offset } = this.slots[i]!;
    return Buffer.from(segment.shared, offset, this.slotBytes);
  }

  /** Hashes `bytes`, the start of a slot from `slot()`, as the stream's next bytes. */
  hash(bytes: Uint8Array): void {
    this.usable();
    const i = this.slotOf(bytes);
    const { segment, offset } = this.slots[i]!;
    for (const lane of this.lanes) {
      this.holds[i]!++;
      lane.worker.thread.postMessage({ op: 'update', id: lane.id, segment: segment.id, offset, length: bytes.length, slot: i });
    }
  }

  /** The caller is done with the slot `bytes` lies in (it may still be hashing); nothing once the hasher is closed. */
  release(bytes: Uint8Array): void {
    if (this.closed) return;
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
    this.closed = true;
    try {
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
      return Object.assign({}, ...parts) as Partial<Record<HashAlgorithm, string>>;
    } finally {
      // every lane has hashed its last slot (or is dead): the slots may serve other streams
      this.giveBack();
    }
  }

  /** Gives the lanes back without a digest (an aborted stream). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.failure ??= new Error('ParallelHasher: closed');
    for (const f of this.waiters.splice(0)) f();
    for (const lane of this.lanes) {
      track(lane.worker, lane, false);
      if (!lane.worker.dead) lane.worker.thread.postMessage({ op: 'close', id: lane.id });
    }
    // A lane may still be reading a slot the arena lends out again: what it hashes is thrown away.
    this.giveBack();
  }

  private borrow(): void {
    this.free.push(this.slots.length);
    this.holds.push(0);
    this.slots.push(sharedArena().take(this.slotBytes));
  }

  private giveBack(): void {
    if (this.shape === LARGE) largeInUse--;
    extraInUse -= (this.slots.length - 1) * this.slotBytes;
    for (const s of this.slots.splice(0)) sharedArena().give(s);
  }

  private usable(): void {
    if (this.closed) throw new Error('ParallelHasher: used after digest/close');
    if (this.failure) throw this.failure;
  }

  private slotOf(bytes: Uint8Array): number {
    const i = this.slots.findIndex((s) => s.segment.shared === bytes.buffer && s.offset === bytes.byteOffset);
    if (i < 0 || bytes.length > this.slotBytes) throw new Error("ParallelHasher: not the start of one of this hasher's slots");
    return i;
  }

  private drop(i: number): void {
    if (--this.holds[i]! === 0) {
      this.free.push(i);
      this.waiters.shift()?.();
    }
  }
}

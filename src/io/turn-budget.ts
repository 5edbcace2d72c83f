/**
 * How many bytes the event loop moves through the ingest pipeline per turn, shared by every stream.
 *
 * Each byte an upload brings costs the loop a fixed amount of work (the parser's copy, the copy
 * into a hashing slot, inspection, handing it to the hashers and to staging: ~1.4 ms per MiB with
 * a hundred uploads at once). libuv runs every socket that is ready in one turn, and a stream that
 * keeps up reads on within that turn; when the hashing threads free a hundred streams' slots at
 * once, they all copy a slot's worth and more in the same turn — 25–40 MiB, 30–40 ms of the loop
 * without a break, in which no other request is answered (issue 20 item 6).
 *
 * With a budget, a stream that has used up the turn's share waits for a later turn before it reads
 * its next chunk; meanwhile its socket is paused (the request's buffer is full), so the kernel
 * holds the rest. Waiting streams are let go in arrival order, as many per turn as the budget
 * covers, so every stream keeps moving. A lone stream never waits: one turn of one socket is
 * smaller than the budget.
 */

/** The bytes a stream that is let go is expected to spend before it asks again (one body chunk). */
const CHUNK_ESTIMATE = 64 * 1024;

export class TurnBudget {
  private used = 0;
  private scheduled = false;
  private readonly waiting: (() => void)[] = [];

  constructor(readonly bytesPerTurn: number) {}

  /**
   * Counts `bytes` as moved in this turn. Undefined while the turn's budget lasts (go on at once);
   * otherwise a promise that settles in a later turn, when it is this caller's turn again.
   */
  spend(bytes: number): Promise<void> | undefined {
    this.used += bytes;
    this.schedule();
    if (this.used < this.bytesPerTurn) return undefined;
    return new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  /** Streams waiting for a later turn (a diagnostic). */
  get waiters(): number {
    return this.waiting.length;
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    // the check phase: after the turn's I/O callbacks (where the bytes were spent), before the next poll
    setImmediate(this.nextTurn);
  }

  private readonly nextTurn = (): void => {
    this.scheduled = false;
    const admit = Math.max(1, Math.floor(this.bytesPerTurn / CHUNK_ESTIMATE));
    const go = this.waiting.splice(0, admit);
    // what those let go spend next counts against the new turn, with the sockets the poll finds ready
    this.used = 0;
    for (const resolve of go) resolve();
    if (this.waiting.length > 0) this.schedule();
  };
}

/**
 * The process's budget for ingest: 4 MiB a turn is ~6 ms of the loop's work at a hundred uploads,
 * and more than one socket delivers in a turn (libuv reads at most 32 × 64 KiB per socket).
 */
export const ingestTurns = new TurnBudget(4 * 1024 * 1024);

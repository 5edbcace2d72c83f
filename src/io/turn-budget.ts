/**
 * Spreads bursts of work over event-loop turns (issue 20, item 6: the loop is never blocked for
 * more than 50 ms). Two budgets share the loop: requests' and the ingest's (below).
 *
 * Requests. node:http hands a turn every request whose bytes have arrived, and
 * each runs its synchronous part (authentication and catalog queries on SQLite, which is
 * synchronous, then the start of its I/O) before the next: 1,000 downloads arriving at once held
 * the loop for 100–150 ms, during which no timer ran and no other client was answered.
 *
 * `enter()` is called where a request's work starts (and again where a download's second part
 * starts): within a turn, requests go on at once until `budgetMs` of the turn is used; later ones
 * wait in arrival order and are let go in the following turns (setImmediate: after each turn's
 * timers and I/O), as many per turn as the budget holds at the cost a request has had so far
 * (measured per turn; at least one), until none waits. A turn is measured from its first
 * `enter()` to its check phase.
 */
export class TurnBudget {
  private turnStart = -1;
  /** requests that went on in this turn */
  private started = 0;
  /** ms of a turn one request has taken, smoothed over turns */
  private costMs = 0.5;
  private readonly waiting: Array<() => void> = [];
  private draining = false;

  constructor(private readonly budgetMs = 10) {}

  /** undefined: go on now; otherwise a promise that resolves in a later turn. */
  enter(): Promise<void> | undefined {
    if (this.waiting.length === 0) {
      const now = performance.now();
      this.beginTurn(now);
      if (now - this.turnStart < this.budgetMs) {
        this.started++;
        return undefined;
      }
    }
    return new Promise<void>((resolve) => {
      this.waiting.push(resolve);
      if (!this.draining) {
        this.draining = true;
        setImmediate(this.release);
      }
    });
  }

  /** requests waiting for a later turn */
  get queued(): number {
    return this.waiting.length;
  }

  private beginTurn(now: number): void {
    if (this.turnStart >= 0) return;
    this.turnStart = now;
    this.started = 0;
    setImmediate(this.endTurn);
  }

  private readonly endTurn = (): void => {
    if (this.started > 0) this.costMs = 0.7 * this.costMs + (0.3 * (performance.now() - this.turnStart)) / this.started;
    this.turnStart = -1;
  };

  private readonly release = (): void => {
    const now = performance.now();
    this.beginTurn(now);
    const room = Math.max(1, Math.floor((this.budgetMs - (now - this.turnStart)) / this.costMs));
    for (let i = 0; i < room && this.waiting.length > 0; i++) {
      this.started++;
      this.waiting.shift()!();
    }
    if (this.waiting.length > 0) setImmediate(this.release);
    else this.draining = false;
  };
}

/** The process's budget for requests: every door's requests share the one event loop. */
export const requestTurns = new TurnBudget();

/**
 * The ingest's budget, entered by `stageBlob` before it reads a stream's next chunk. Each byte an
 * upload brings costs the loop a fixed amount of work (the parser's copy, the copy into a hashing
 * slot, inspection, handing it to the hashers and to staging: ~1.4 ms per MiB with a hundred
 * uploads at once), and libuv runs every socket that is ready in one turn, where a stream that keeps
 * up reads on. When the hashing threads freed a hundred streams' slots at once, they all copied a
 * slot's worth and more in the same turn — 25–40 MiB, 30–40 ms on the CPU without a break. Now a
 * stream that finds the turn's 8 ms used waits for a later turn before its next chunk (its socket
 * pauses once the request's buffer is full, so the kernel holds the rest). A lone upload never
 * waits: one turn of one socket (at most 32 reads of 64 KiB) costs less.
 */
export const ingestTurns = new TurnBudget(8);

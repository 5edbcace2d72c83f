import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TurnBudget } from './turn-budget.js';

/** Keeps the thread busy for `ms`, as a request's synchronous work does. */
function busy(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

test('a burst of 200 requests of 1 ms each is spread over turns: a timer runs between them, all run, in arrival order', async () => {
  const turns = new TurnBudget(10);
  const ran: number[] = [];
  // counted in turns, not milliseconds: on a loaded machine a turn's wall time stretches, its count does not
  let ticks = 0;
  const ticker = setInterval(() => ticks++, 1);
  // a failed assertion must not leave the process running
  ticker.unref();
  // the burst arrives in one turn, as node:http hands over requests whose bytes are all there
  const all: Promise<void>[] = [];
  let immediate = 0;
  for (let i = 0; i < 200; i++) {
    const wait = turns.enter();
    if (wait === undefined) immediate++;
    all.push(
      (wait ?? Promise.resolve()).then(() => {
        busy(1);
        ran.push(i);
      }),
    );
    if (wait === undefined) await Promise.resolve().then(() => busy(1));
  }
  assert.ok(immediate >= 1 && immediate <= 12, `went on at once within the 10 ms budget: ${immediate}`);
  assert.ok(turns.queued > 150, `the rest waits for later turns: ${turns.queued}`);
  const ticksBefore = ticks;
  await Promise.all(all);
  clearInterval(ticker);
  const ticksDuring = ticks - ticksBefore;
  assert.equal(ran.length, 200);
  assert.deepEqual(
    ran.filter((i) => i >= immediate),
    Array.from({ length: 200 - immediate }, (_, k) => k + immediate),
    'the waiting ones run in arrival order',
  );
  // unbudgeted, the 200 ms of work would run in one turn and the 1 ms timer not once meanwhile;
  // spread over ~10 ms turns, it runs in (nearly) every one of them
  assert.ok(ticksDuring >= 10, `the 1 ms timer ran ${ticksDuring} time(s) while the burst drained`);
  assert.equal(turns.queued, 0);
});

test('one request at a time never waits', async () => {
  const turns = new TurnBudget(10);
  for (let i = 0; i < 20; i++) {
    assert.equal(turns.enter(), undefined);
    busy(1);
    await new Promise((r) => setImmediate(r));
  }
});

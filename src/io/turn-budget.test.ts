import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TurnBudget } from './turn-budget.js';

const KiB = 1024;
const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

test('within the turn’s budget a stream goes on at once; past it, it waits for a later turn', async () => {
  const budget = new TurnBudget(256 * KiB);
  assert.equal(budget.spend(64 * KiB), undefined);
  assert.equal(budget.spend(64 * KiB), undefined);
  assert.equal(budget.spend(64 * KiB), undefined);
  let released = false;
  const wait = budget.spend(64 * KiB);
  assert.ok(wait, 'the fourth 64 KiB of a 256 KiB turn waits');
  void wait.then(() => (released = true));
  await Promise.resolve();
  assert.equal(released, false, 'not within the same turn');
  await turn();
  assert.equal(released, true, 'let go in the next turn');
  // the new turn's budget is whole again
  assert.equal(budget.spend(64 * KiB), undefined);
});

test('waiting streams are let go in arrival order, as many per turn as the budget covers', async () => {
  const budget = new TurnBudget(256 * KiB);
  const order: number[] = [];
  const waits: Promise<void>[] = [];
  for (let i = 0; i < 11; i++) {
    const w = budget.spend(64 * KiB);
    if (w) waits.push(w.then(() => void order.push(i)));
  }
  assert.equal(waits.length, 8, 'three went on, eight wait');
  assert.equal(budget.waiters, 8);
  await turn();
  assert.deepEqual(order, [3, 4, 5, 6], 'four (256 KiB / 64 KiB) in the first turn, first come first');
  await turn();
  assert.deepEqual(order, [3, 4, 5, 6, 7, 8, 9, 10]);
  assert.equal(budget.waiters, 0);
  await Promise.all(waits);
});

test('a stream that spends a whole turn by itself still moves, one turn at a time', async () => {
  const budget = new TurnBudget(64 * KiB);
  let turns = 0;
  for (let i = 0; i < 5; i++) {
    const w = budget.spend(1024 * KiB);
    assert.ok(w);
    await w;
    turns++;
  }
  assert.equal(turns, 5);
});

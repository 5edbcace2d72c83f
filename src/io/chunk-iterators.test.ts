import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { prepend, relabelErrors, tapChunks } from './chunk-iterators.js';

/** A source that yields `items` (an Error item is thrown there) and records whether it was ended early. */
function source<T>(items: (T | Error)[]) {
  const state = { returned: false, pulled: 0 };
  const iterable: AsyncIterable<T> = {
    [Symbol.asyncIterator]() {
      let i = 0;
      return {
        next: async () => {
          state.pulled++;
          if (i >= items.length) return { done: true, value: undefined };
          const item = items[i++]!;
          if (item instanceof Error) throw item;
          return { done: false, value: item };
        },
        return: async () => {
          state.returned = true;
          return { done: true, value: undefined };
        },
      };
    },
  };
  return { iterable, state };
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

describe('tapChunks', () => {
  test('sees every chunk in order and passes it on unchanged', async () => {
    const { iterable } = source([1, 2, 3]);
    const seen: number[] = [];
    assert.deepEqual(await collect(tapChunks(iterable, (c) => seen.push(c * 10))), [1, 2, 3]);
    assert.deepEqual(seen, [10, 20, 30]);
  });

  test('a throwing look ends the source and the iteration with its error', async () => {
    const { iterable, state } = source([1, 2, 3]);
    const got: number[] = [];
    await assert.rejects(
      (async () => {
        for await (const c of tapChunks(iterable, (x) => {
          if (x === 2) throw new Error('aborted at 2');
        }))
          got.push(c);
      })(),
      /aborted at 2/,
    );
    assert.deepEqual(got, [1]);
    assert.equal(state.returned, true);
  });

  test('a consumer that stops early ends the source', async () => {
    const { iterable, state } = source([1, 2, 3]);
    for await (const c of tapChunks(iterable, () => undefined)) if (c === 1) break;
    assert.equal(state.returned, true);
  });
});

describe('relabelErrors', () => {
  test("relabels the source's error and ends there; an early stop leaves the source to its owner", async () => {
    const { iterable } = source<number>([1, new Error('socket hang up'), 3]);
    const it = relabelErrors(iterable, (e) => new Error(`source: ${(e as Error).message}`));
    assert.deepEqual(await it.next(), { done: false, value: 1 });
    await assert.rejects(it.next(), /^Error: source: socket hang up$/);
    assert.deepEqual(await it.next(), { done: true, value: undefined });

    const other = source([1, 2]);
    for await (const c of relabelErrors(other.iterable, (e) => e)) if (c === 1) break;
    assert.equal(other.state.returned, false);
  });
});

describe('prepend', () => {
  test('the chunks already read, then the rest of the source', async () => {
    const { iterable } = source([3, 4]);
    assert.deepEqual(await collect(prepend([1, 2], undefined, iterable[Symbol.asyncIterator](), false)), [1, 2, 3, 4]);
  });

  test('a failure met while reading ahead comes after the chunks read before it, and the source is not read again', async () => {
    const { iterable, state } = source([9]);
    const it = prepend([1], new Error('truncated'), iterable[Symbol.asyncIterator](), false);
    assert.deepEqual(await it.next(), { done: false, value: 1 });
    await assert.rejects(it.next(), /truncated/);
    assert.deepEqual(await it.next(), { done: true, value: undefined });
    assert.equal(state.pulled, 0);
  });

  test('a source that had already ended is not read again', async () => {
    const { iterable, state } = source([9]);
    assert.deepEqual(await collect(prepend([1, 2], undefined, iterable[Symbol.asyncIterator](), true)), [1, 2]);
    assert.equal(state.pulled, 0);
  });

  test('an early stop ends the source below; a stop after the end does not', async () => {
    const early = source([3, 4]);
    for await (const c of prepend([1], undefined, early.iterable[Symbol.asyncIterator](), false)) if (c === 3) break;
    assert.equal(early.state.returned, true);

    const late = source([3]);
    const it = prepend([1], undefined, late.iterable[Symbol.asyncIterator](), false);
    assert.deepEqual(await collect(it), [1, 3]);
    await it.return!();
    assert.equal(late.state.returned, false);
  });

  test("an error of the source mid-way reaches the consumer and the source is ended, as a generator's finally did", async () => {
    const { iterable, state } = source<number>([3, new Error('decoder failed')]);
    const it = prepend([1], undefined, iterable[Symbol.asyncIterator](), false);
    await assert.rejects(collect(it), /decoder failed/);
    assert.equal(state.returned, true);
  });
});

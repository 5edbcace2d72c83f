import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DomainError } from '../../domain/errors.js';
import { parseRange } from './byte-range.js';

const code = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return e instanceof DomainError ? e.code : 'not a DomainError';
  }
  return 'no error';
};

test('Range: one byte range of RFC 9110; several ranges or a stale If-Range send the whole body', () => {
  assert.equal(parseRange(undefined, 100, undefined, '"a"'), null);
  assert.deepEqual(parseRange('bytes=10-19', 100, undefined, '"a"'), { start: 10, end: 19 });
  assert.deepEqual(parseRange('bytes=90-', 100, undefined, '"a"'), { start: 90, end: 99 });
  assert.deepEqual(parseRange('bytes=95-200', 100, undefined, '"a"'), { start: 95, end: 99 });
  assert.deepEqual(parseRange('bytes=-10', 100, undefined, '"a"'), { start: 90, end: 99 });
  assert.deepEqual(parseRange('bytes=-1000', 100, undefined, '"a"'), { start: 0, end: 99 });
  assert.equal(parseRange('bytes=0-1,5-6', 100, undefined, '"a"'), null);
  assert.equal(parseRange('bytes=0-1', 100, '"b"', '"a"'), null);
  assert.deepEqual(parseRange('bytes=0-1', 100, '"a"', '"a"'), { start: 0, end: 1 });
});

test('Range: a malformed header is INVALID_REQUEST; one outside the bytes is RANGE_NOT_SATISFIABLE with the size', () => {
  assert.equal(
    code(() => parseRange('pages=1', 100, undefined, undefined)),
    'INVALID_REQUEST',
  );
  assert.equal(
    code(() => parseRange('bytes=100-', 100, undefined, undefined)),
    'RANGE_NOT_SATISFIABLE',
  );
  assert.equal(
    code(() => parseRange('bytes=5-4', 100, undefined, undefined)),
    'RANGE_NOT_SATISFIABLE',
  );
  assert.equal(
    code(() => parseRange('bytes=-0', 100, undefined, undefined)),
    'RANGE_NOT_SATISFIABLE',
  );
  try {
    parseRange('bytes=200-', 100, undefined, undefined);
  } catch (e) {
    assert.deepEqual((e as DomainError).details, { size: 100 });
  }
});

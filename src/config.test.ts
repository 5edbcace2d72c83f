import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError, loadConfig, parseDuration } from './config.js';

test('durations: seconds by default, s and ms suffixes; zero and nonsense refused with the accepted forms', () => {
  assert.equal(parseDuration('x', '60', 1), 60_000);
  assert.equal(parseDuration('x', '1.5s', 1), 1500);
  assert.equal(parseDuration('x', '250ms', 1), 250);
  assert.equal(parseDuration('x', undefined, 42), 42);
  for (const bad of ['0', '-1', 'soon', '10m']) assert.throws(() => parseDuration('body idle timeout', bad, 1), (e: unknown) => e instanceof ConfigError && /60, 60s, 1500ms/.test(e.message), bad);
});

test('body idle timeout and event recheck: defaults 60 s and 3 s, set from the environment', () => {
  const d = loadConfig({}, {});
  assert.equal(d.bodyIdleTimeoutMs, 60_000);
  assert.equal(d.eventsRecheckMs, 3_000);
  const c = loadConfig({}, { IMAGO_BODY_IDLE_TIMEOUT: '5', IMAGO_EVENTS_RECHECK: '500ms' });
  assert.equal(c.bodyIdleTimeoutMs, 5000);
  assert.equal(c.eventsRecheckMs, 500);
});

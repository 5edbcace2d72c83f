import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError, loadConfig } from './config.js';

test('compression limits: IMAGO_ZERO_BOMB_RATIO (0 = off) and IMAGO_MAX_COMPRESSION_RATIO reach the inspect limits', () => {
  assert.deepEqual(loadConfig({}, {}).inspectLimits, {});
  const c = loadConfig({}, { IMAGO_ZERO_BOMB_RATIO: '0', IMAGO_MAX_COMPRESSION_RATIO: '20000:1' });
  assert.equal(c.inspectLimits.zeroBombRatio, 0);
  assert.equal(c.inspectLimits.maxCompressionRatio, 20000);
  assert.equal(loadConfig({}, { IMAGO_ZERO_BOMB_RATIO: '1000' }).inspectLimits.zeroBombRatio, 1000);
  assert.throws(() => loadConfig({}, { IMAGO_ZERO_BOMB_RATIO: 'lots' }), (e: Error) => e instanceof ConfigError && /IMAGO_ZERO_BOMB_RATIO "lots" is not an expansion ratio/.test(e.message));
  assert.throws(() => loadConfig({}, { IMAGO_MAX_COMPRESSION_RATIO: '0' }), ConfigError);
});

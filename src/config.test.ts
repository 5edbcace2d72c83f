import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError, loadConfig, parseDuration } from './config.js';

test('durations: seconds by default, s and ms suffixes; zero and nonsense refused with the accepted forms', () => {
  assert.equal(parseDuration('x', '60', 1), 60_000);
  assert.equal(parseDuration('x', '1.5s', 1), 1500);
  assert.equal(parseDuration('x', '250ms', 1), 250);
  assert.equal(parseDuration('x', undefined, 42), 42);
  for (const bad of ['0', '-1', 'soon', '10m'])
    assert.throws(
      () => parseDuration('body idle timeout', bad, 1),
      (e: unknown) => e instanceof ConfigError && /60, 60s, 1500ms/.test(e.message),
      bad,
    );
});

test('body idle timeout and event recheck: defaults 60 s and 3 s, set from the environment', () => {
  const d = loadConfig({}, {});
  assert.equal(d.bodyIdleTimeoutMs, 60_000);
  assert.equal(d.eventsRecheckMs, 3_000);
  const c = loadConfig({}, { IMAGO_BODY_IDLE_TIMEOUT: '5', IMAGO_EVENTS_RECHECK: '500ms' });
  assert.equal(c.bodyIdleTimeoutMs, 5000);
  assert.equal(c.eventsRecheckMs, 500);
});

test('compression limits: IMAGO_ZERO_BOMB_RATIO (0 = off) and IMAGO_MAX_COMPRESSION_RATIO reach the inspect limits', () => {
  assert.deepEqual(loadConfig({}, {}).inspectLimits, {});
  const c = loadConfig({}, { IMAGO_ZERO_BOMB_RATIO: '0', IMAGO_MAX_COMPRESSION_RATIO: '20000:1' });
  assert.equal(c.inspectLimits.zeroBombRatio, 0);
  assert.equal(c.inspectLimits.maxCompressionRatio, 20000);
  assert.equal(loadConfig({}, { IMAGO_ZERO_BOMB_RATIO: '1000' }).inspectLimits.zeroBombRatio, 1000);
  assert.throws(
    () => loadConfig({}, { IMAGO_ZERO_BOMB_RATIO: 'lots' }),
    (e: Error) => e instanceof ConfigError && /IMAGO_ZERO_BOMB_RATIO "lots" is not an expansion ratio/.test(e.message),
  );
  assert.throws(() => loadConfig({}, { IMAGO_MAX_COMPRESSION_RATIO: '0' }), ConfigError);
});

test('os_hash_algo: sha512 by default, sha256 by flag or environment; one the ingest pass does not compute refused, naming what is', () => {
  assert.equal(loadConfig({}, {}).osHashAlgo, 'sha512');
  assert.equal(loadConfig({}, { IMAGO_OS_HASH_ALGO: 'SHA256' }).osHashAlgo, 'sha256');
  assert.equal(loadConfig({ osHashAlgo: 'sha512' }, { IMAGO_OS_HASH_ALGO: 'sha256' }).osHashAlgo, 'sha512', 'the flag wins');
  for (const bad of ['sha384', 'sha3_512', 'md5', 'blake2b'])
    assert.throws(
      () => loadConfig({}, { IMAGO_OS_HASH_ALGO: bad }),
      (e: unknown) => e instanceof ConfigError && e.message.includes(`"${bad}" is not supported`) && /sha512 and sha256/.test(e.message),
      bad,
    );
});

test('console OIDC sign-in: both issuer and client id, or neither; the bearer is access_token or id_token', () => {
  assert.equal(loadConfig({}, {}).consoleOidc, undefined);
  const c = loadConfig({}, { IMAGO_CONSOLE_OIDC_ISSUER: 'https://aai.egi.eu/auth/realms/egi/', IMAGO_CONSOLE_OIDC_CLIENT_ID: 'imago' });
  assert.deepEqual(c.consoleOidc, { issuer: 'https://aai.egi.eu/auth/realms/egi', clientId: 'imago', scopes: 'openid profile email', bearer: 'access_token' });
  assert.throws(
    () => loadConfig({}, { IMAGO_CONSOLE_OIDC_ISSUER: 'https://aai.egi.eu' }),
    /needs both IMAGO_CONSOLE_OIDC_ISSUER and IMAGO_CONSOLE_OIDC_CLIENT_ID/,
  );
  assert.throws(() => loadConfig({}, { IMAGO_CONSOLE_OIDC_ISSUER: 'aai.egi.eu', IMAGO_CONSOLE_OIDC_CLIENT_ID: 'x' }), /must be an http\(s\) URL/);
  assert.throws(
    () => loadConfig({}, { IMAGO_CONSOLE_OIDC_ISSUER: 'https://aai.egi.eu', IMAGO_CONSOLE_OIDC_CLIENT_ID: 'x', IMAGO_CONSOLE_OIDC_BEARER: 'refresh_token' }),
    /access_token or id_token, got "refresh_token"/,
  );
});

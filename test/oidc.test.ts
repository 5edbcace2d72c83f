/**
 * OIDC bearer tokens against a JWKS generated here and served on 127.0.0.1 (discovery document
 * and key set), verified by a real Imago: the EGI VO set-up from the README done with the CLI in
 * four commands, then every way a token can be wrong — key, issuer, audience, expiry, nbf, alg
 * none, HMAC confusion — and key rotation.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { exportJWK, generateKeyPair, SignJWT, type JWK, type JWTPayload } from 'jose';
import { startTestServer, type TestServer } from './support/server.js';

const BIN = join(import.meta.dirname, '..', 'bin', 'imago.js');
const AUD = 'imago-client';
const MEMBER = 'urn:mace:egi.eu:group:egi-vo:role=member#aai.egi.eu';
const OPERATOR = 'urn:mace:egi.eu:group:egi-vo:role=vm_operator#aai.egi.eu';

type Key = { privateKey: Awaited<ReturnType<typeof generateKeyPair>>['privateKey']; jwk: JWK };
let s: TestServer;
let idp: http.Server;
let issuer: string;
let key1: Key;
let key2: Key;
let stranger: Key;
let published: JWK[] = [];
let jwksFetches = 0;

async function newKey(kid: string): Promise<Key> {
  const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' };
  return { privateKey, jwk };
}

async function jwt(claims: JWTPayload, opts: { key?: Key; kid?: string; iss?: string; aud?: string; exp?: number; nbf?: number } = {}): Promise<string> {
  const k = opts.key ?? key1;
  const now = Math.floor(Date.now() / 1000);
  let b = new SignJWT({ sub: 'user-1', ...claims })
    .setProtectedHeader({ alg: 'RS256', kid: opts.kid ?? k.jwk.kid!, typ: 'JWT' })
    .setIssuer(opts.iss ?? issuer)
    .setAudience(opts.aud ?? AUD)
    .setIssuedAt(now)
    .setExpirationTime(opts.exp ?? now + 600);
  if (opts.nbf !== undefined) b = b.setNotBefore(opts.nbf);
  return b.sign(k.privateKey);
}

function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args, '--server', s.url, '--data', s.dataDir], { encoding: 'utf8' }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

async function whoami(token: string): Promise<{ status: number; body: any }> {
  const r = await fetch(`${s.url}/api/v1/whoami`, { headers: { authorization: `Bearer ${token}` } });
  return { status: r.status, body: await r.json() };
}

before(async () => {
  key1 = await newKey('k1');
  key2 = await newKey('k2');
  stranger = await newKey('k1'); // same kid, other key: a forgery
  published = [key1.jwk];
  idp = http.createServer((req, res) => {
    if (req.url === '/.well-known/openid-configuration') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ issuer, jwks_uri: `${issuer}/jwks` }));
    } else if (req.url === '/jwks') {
      jwksFetches++;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: published }));
    } else res.writeHead(404).end();
  });
  await new Promise<void>((r) => idp.listen(0, '127.0.0.1', r));
  issuer = `http://127.0.0.1:${(idp.address() as AddressInfo).port}`;
  s = await startTestServer({ env: { IMAGO_OIDC_JWKS_COOLDOWN_MS: '0' } });
});
after(async () => {
  await s?.stop();
  await new Promise((r) => idp?.close(r));
});

test('README: a VO project with read-only and write entitlements in four commands', async () => {
  const steps = [
    ['project', 'create', 'egi-vo'],
    ['oidc', 'add', issuer, '--audience', AUD],
    ['project', 'map', 'egi-vo', 'reader', '--value', MEMBER],
    ['project', 'map', 'egi-vo', 'writer', '--value', OPERATOR],
  ];
  for (const step of steps) {
    const r = await cli(...step);
    assert.equal(r.code, 0, `${step.join(' ')}: ${r.stderr}`);
  }
  const member = await whoami(await jwt({ sub: 'anna', eduperson_entitlement: [MEMBER, 'urn:other'] }));
  assert.equal(member.status, 200, JSON.stringify(member.body));
  assert.deepEqual(member.body.roles, { 'egi-vo': 'reader' });
  assert.equal(member.body.user, 'anna');
  const operator = await whoami(await jwt({ sub: 'olaf', eduperson_entitlement: [MEMBER, OPERATOR] }));
  assert.deepEqual(operator.body.roles, { 'egi-vo': 'writer' });
  // read-only may list but not push; write may push
  const create = (t: string) =>
    fetch(`${s.url}/api/v1/images`, {
      method: 'POST',
      headers: { authorization: `Bearer ${t}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'vo-img', project: 'egi-vo' }),
    });
  assert.equal((await create(await jwt({ sub: 'anna', eduperson_entitlement: MEMBER }))).status, 403);
  const made = await create(await jwt({ sub: 'olaf', eduperson_entitlement: OPERATOR }));
  assert.equal(made.status, 201);
  const list = await fetch(`${s.url}/api/v1/images`, { headers: { authorization: `Bearer ${await jwt({ sub: 'anna', eduperson_entitlement: MEMBER })}` } });
  assert.deepEqual(
    ((await list.json()) as { images: { name: string }[] }).images.map((i) => i.name),
    ['vo-img'],
  );
  // no entitlement: authenticated, but no project
  const none = await whoami(await jwt({ sub: 'nobody' }));
  assert.equal(none.status, 200);
  assert.deepEqual(none.body.roles, {});
});

test('{project} rules capture the VO; group rules go through group grants', async () => {
  await cli('project', 'create', 'vo2');
  assert.equal((await cli('oidc', 'map', '--value', 'urn:mace:egi.eu:group:{project}:role=manager#aai.egi.eu', '--role', 'admin')).code, 0);
  const m = await whoami(
    await jwt({ eduperson_entitlement: ['urn:mace:egi.eu:group:vo2:role=manager#aai.egi.eu', 'urn:mace:egi.eu:group:no-such-vo:role=manager#aai.egi.eu'] }),
  );
  assert.deepEqual(m.body.roles, { vo2: 'admin' });
  assert.equal((await cli('group', 'create', 'ops')).code, 0);
  assert.equal((await cli('project', 'grant', 'vo2', 'writer', '--group', 'ops')).code, 0);
  assert.equal((await cli('oidc', 'map', '--claim', 'groups', '--value', 'operators', '--group', 'ops')).code, 0);
  const g = await whoami(await jwt({ sub: 'gina', groups: ['operators'] }));
  assert.deepEqual(g.body.roles, { vo2: 'writer' });
});

test('refused tokens: 401 with the reason', async () => {
  const now = Math.floor(Date.now() / 1000);
  const cases: [string, Promise<string> | string, RegExp][] = [
    ['wrong key (same kid)', jwt({}, { key: stranger }), /signature/],
    ['wrong issuer', jwt({}, { iss: 'https://evil.example/realms/x' }), /not trusted/],
    ['wrong audience', jwt({}, { aud: 'someone-else' }), /aud/],
    ['expired', jwt({}, { exp: now - 3600 }), /expired/],
    ['not yet valid', jwt({}, { nbf: now + 3600 }), /nbf/],
    ['unknown kid', jwt({}, { kid: 'k9' }), /key id|kid/],
  ];
  // alg none: header and payload only
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  cases.push(['alg none', `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ iss: issuer, aud: AUD, sub: 'x', exp: now + 600 })}.`, /algorithm|malformed/]);
  // HMAC confusion: HS256 keyed with the public key's modulus
  const hs = await new SignJWT({ sub: 'x' })
    .setProtectedHeader({ alg: 'HS256', kid: 'k1' })
    .setIssuer(issuer)
    .setAudience(AUD)
    .setExpirationTime(now + 600)
    .sign(Buffer.from(key1.jwk.n!, 'base64url'));
  cases.push(['HS256 with the public key', hs, /algorithm/]);
  cases.push(['no subject', jwt({ sub: undefined }), /sub/]);
  for (const [name, tokenP, reason] of cases) {
    const r = await whoami(await tokenP);
    assert.equal(r.status, 401, `${name}: ${JSON.stringify(r.body)}`);
    assert.equal(r.body.code, 'UNAUTHENTICATED', name);
    assert.match(r.body.detail, reason, name);
  }
  // within the clock skew (60 s) an expired token still passes
  assert.equal((await whoami(await jwt({}, { exp: now - 20 }))).status, 200);
});

test('key rotation: a new kid refetches the JWKS; the retired key stops working', async () => {
  const before = jwksFetches;
  const old = await jwt({}, { key: key1 });
  assert.equal((await whoami(old)).status, 200);
  published = [key2.jwk];
  const fresh = await jwt({}, { key: key2 });
  assert.equal((await whoami(fresh)).status, 200);
  assert.ok(jwksFetches > before, 'the key set was fetched again');
  const r = await whoami(old);
  assert.equal(r.status, 401);
  // both keys during an overlap
  published = [key1.jwk, key2.jwk];
  await new Promise((res) => setTimeout(res, 5));
  assert.equal((await whoami(await jwt({}, { key: key1, kid: 'k1' }))).status, 200);
});

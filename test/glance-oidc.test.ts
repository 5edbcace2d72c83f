/**
 * OIDC access tokens in Glance's `X-Auth-Token`: the same Authenticator as the REST door's
 * Authorization header (src/api/glance/glance-door.ts passes the header on as a bearer token), so a
 * JWT from a trusted issuer, mapped to a project by a claim rule, creates and lists images through
 * `/image` (SQLite and PostgreSQL) and through the real glance and openstack clients (SQLite); a
 * forged or expired one is 401. The identity provider is a JWKS served on 127.0.0.1.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose';
import { runGlance, runOpenstack } from './support/glance-clients.js';
import { startTestServer, type Dialect, type TestServer } from './support/server.js';

const AUD = 'imago-glance';
const ENTITLEMENT = 'urn:mace:egi.eu:group:vo:role=vm_operator#aai.egi.eu';

type Key = { privateKey: Awaited<ReturnType<typeof generateKeyPair>>['privateKey']; jwk: JWK };

async function newKey(kid: string): Promise<Key> {
  const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
  return { privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' } };
}

let idp: http.Server;
let issuer: string;
let key: Key;
let forger: Key;

async function jwt(opts: { key?: Key; exp?: number } = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const k = opts.key ?? key;
  return new SignJWT({ sub: 'olga', eduperson_entitlement: [ENTITLEMENT] })
    .setProtectedHeader({ alg: 'RS256', kid: k.jwk.kid!, typ: 'JWT' })
    .setIssuer(issuer)
    .setAudience(AUD)
    .setIssuedAt(now - 60)
    .setExpirationTime(opts.exp ?? now + 600)
    .sign(k.privateKey);
}

before(async () => {
  key = await newKey('k1');
  forger = await newKey('k1');
  idp = http.createServer((req, res) => {
    if (req.url === '/.well-known/openid-configuration')
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ issuer, jwks_uri: `${issuer}/jwks` }));
    else if (req.url === '/jwks') res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [key.jwk] }));
    else res.writeHead(404).end();
  });
  await new Promise<void>((r) => idp.listen(0, '127.0.0.1', r));
  issuer = `http://127.0.0.1:${(idp.address() as AddressInfo).port}`;
});
after(() => new Promise((r) => idp?.close(r)));

for (const dialect of ['sqlite', 'postgres'] as Dialect[]) {
  describe(`OIDC access tokens in X-Auth-Token (${dialect})`, () => {
    let s: TestServer;
    let home: string;

    before(async () => {
      s = await startTestServer({ dialect, env: { IMAGO_OIDC_JWKS_COOLDOWN_MS: '0' } });
      home = mkdtempSync(join(tmpdir(), 'imago-glance-oidc-'));
      const admin = async (method: string, path: string, body: unknown) => {
        const r = await fetch(`${s.url}${path}`, {
          method,
          headers: { authorization: `Bearer ${s.token}`, 'content-type': 'application/json' },
          body: JSON.stringify(body),
        });
        assert.ok(r.ok, `${path}: ${r.status} ${await r.text()}`);
      };
      await admin('POST', '/api/v1/projects', { name: 'vo' });
      await admin('PUT', '/api/v1/oidc/issuers', { issuer, audience: AUD });
      await admin('POST', '/api/v1/oidc/rules', { claim: 'eduperson_entitlement', value: ENTITLEMENT, project: 'vo', role: 'writer' });
    });
    after(async () => {
      await s?.stop();
      rmSync(home, { recursive: true, force: true });
    });

    test('a JWT in X-Auth-Token creates, shows and lists; a forged or expired one is 401', async () => {
      const token = await jwt();
      const made = await fetch(`${s.url}/image/v2/images`, {
        method: 'POST',
        headers: { 'x-auth-token': token, 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'by-oidc' }),
      });
      assert.equal(made.status, 201, await made.clone().text());
      const img = (await made.json()) as { id: string; owner: string };
      assert.equal(img.owner, 'vo');
      const list = await fetch(`${s.url}/image/v2/images`, { headers: { 'x-auth-token': token } });
      assert.deepEqual(
        ((await list.json()) as { images: { name: string }[] }).images.map((i) => i.name),
        ['by-oidc'],
      );
      for (const bad of [await jwt({ key: forger }), await jwt({ exp: Math.floor(Date.now() / 1000) - 120 })]) {
        const r = await fetch(`${s.url}/image/v2/images/${img.id}`, { headers: { 'x-auth-token': bad } });
        assert.equal(r.status, 401);
      }
    });

    if (dialect === 'sqlite') {
      test('glance --os-auth-token and openstack --os-token take the JWT', async () => {
        const token = await jwt();
        const g = await runGlance(s.url, token, home, ['image-create', '--name', 'oidc-cli', '--disk-format', 'raw', '--container-format', 'bare']);
        assert.equal(g.code, 0, g.stderr);
        assert.match(g.stdout, /\|\s+owner\s+\|\s+vo\s/);
        const o = await runOpenstack(s.url, token, home, ['image', 'list']);
        assert.equal(o.code, 0, o.stderr);
        assert.match(o.stdout, /oidc-cli\s+\|\s+queued/);
        const forged = await runGlance(s.url, await jwt({ key: forger }), home, ['image-list']);
        assert.notEqual(forged.code, 0);
        assert.match(forged.stderr + forged.stdout, /401|Unauthorized|Invalid OpenStack Identity credentials/i);
      });
    }
  });
}

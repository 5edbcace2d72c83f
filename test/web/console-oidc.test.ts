/**
 * The console's OIDC sign-in in Chromium: authorization code + PKCE (S256) against an issuer this
 * test runs (discovery, an authorization endpoint that signs "anna" in at once, a token endpoint
 * that checks the code verifier against the challenge, JWKS), the token then accepted by Imago's
 * own OIDC rules (an entitlement → reader in a project). A forged state is refused.
 */
import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose';
import { apiRequest, startTestServer, type TestServer } from '../support/server.js';
import { axeSerious, CHROMIUM, describeViolations, launchChromium, screenshot, type Browser } from './browser.js';

const skip = !existsSync(CHROMIUM)
  ? `Debian's chromium is not installed (${CHROMIUM})`
  : !existsSync(join(import.meta.dirname, '..', '..', 'web', 'dist', 'index.html'))
    ? 'the console is not built (web/dist): run npm run build'
    : false;

const CLIENT_ID = 'imago-console';
const ENTITLEMENT = 'urn:mace:egi.eu:group:egi-vo:role=member#aai.egi.eu';
let s: TestServer;
let idp: http.Server;
let issuer: string;
let browser: Browser;
let signingKey: Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];
let jwk: JWK;
const codes = new Map<string, { challenge: string; redirectUri: string }>();
const exchanges: { verifierMatched: boolean }[] = [];

const b64url = (buf: Buffer) => buf.toString('base64').replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');

before(async () => {
  if (skip) return;
  const pair = await generateKeyPair('RS256', { extractable: true });
  signingKey = pair.privateKey;
  jwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' };
  idp = http.createServer((req, res) => {
    const url = new URL(req.url!, issuer);
    const json = (status: number, body: unknown) =>
      res.writeHead(status, { 'content-type': 'application/json', 'access-control-allow-origin': '*' }).end(JSON.stringify(body));
    if (url.pathname === '/.well-known/openid-configuration') {
      json(200, { issuer, jwks_uri: `${issuer}/jwks`, authorization_endpoint: `${issuer}/authorize`, token_endpoint: `${issuer}/token` });
    } else if (url.pathname === '/jwks') {
      json(200, { keys: [jwk] });
    } else if (url.pathname === '/authorize') {
      const p = url.searchParams;
      if (p.get('response_type') !== 'code' || p.get('client_id') !== CLIENT_ID || p.get('code_challenge_method') !== 'S256' || !p.get('code_challenge')) {
        res.writeHead(400).end('bad authorization request');
        return;
      }
      const code = randomUUID();
      codes.set(code, { challenge: p.get('code_challenge')!, redirectUri: p.get('redirect_uri')! });
      const back = new URL(p.get('redirect_uri')!);
      back.searchParams.set('code', code);
      back.searchParams.set('state', p.get('state')!);
      res.writeHead(302, { location: back.toString() }).end();
    } else if (url.pathname === '/token' && req.method === 'POST') {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', async () => {
        const f = new URLSearchParams(body);
        const c = codes.get(f.get('code') ?? '');
        codes.delete(f.get('code') ?? '');
        const verifierMatched =
          !!c &&
          b64url(
            createHash('sha256')
              .update(f.get('code_verifier') ?? '')
              .digest(),
          ) === c.challenge;
        exchanges.push({ verifierMatched });
        if (!c || !verifierMatched || f.get('redirect_uri') !== c.redirectUri || f.get('client_id') !== CLIENT_ID) {
          json(400, { error: 'invalid_grant', error_description: 'code, verifier or redirect_uri do not match' });
          return;
        }
        const now = Math.floor(Date.now() / 1000);
        const token = await new SignJWT({ sub: 'anna', eduperson_entitlement: [ENTITLEMENT] })
          .setProtectedHeader({ alg: 'RS256', kid: 'k1', typ: 'JWT' })
          .setIssuer(issuer)
          .setAudience(CLIENT_ID)
          .setIssuedAt(now)
          .setExpirationTime(now + 600)
          .sign(signingKey);
        json(200, { access_token: token, id_token: token, token_type: 'Bearer', expires_in: 600 });
      });
    } else res.writeHead(404).end();
  });
  await new Promise<void>((r) => idp.listen(0, '127.0.0.1', r));
  issuer = `http://127.0.0.1:${(idp.address() as AddressInfo).port}`;
  s = await startTestServer({ env: { IMAGO_CONSOLE_OIDC_ISSUER: issuer, IMAGO_CONSOLE_OIDC_CLIENT_ID: CLIENT_ID } });
  assert.equal((await apiRequest(s, 'POST', '/api/v1/projects', { name: 'egi-vo' })).status, 201);
  assert.equal((await apiRequest(s, 'PUT', '/api/v1/oidc/issuers', { issuer, audience: CLIENT_ID })).status, 200);
  const rule = await apiRequest(s, 'POST', '/api/v1/oidc/rules', { claim: 'eduperson_entitlement', value: ENTITLEMENT, project: 'egi-vo', role: 'reader' });
  assert.equal(rule.status, 201, rule.text);
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await s?.stop();
  idp?.close();
});

test('OIDC sign-in: code + PKCE at the issuer, then Imago maps the entitlement to a project role', { skip }, async () => {
  const cfg = (await (await fetch(`${s.url}/api/v1/console`)).json()) as { oidc: { issuer: string; clientId: string } };
  assert.deepEqual([cfg.oidc.issuer, cfg.oidc.clientId], [issuer, CLIENT_ID]);
  const page = await browser.context.newPage();
  await page.goto(`${s.url}/`);
  const button = page.getByRole('button', { name: `Sign in with ${new URL(issuer).host}` });
  await button.waitFor();
  const v = await axeSerious(page);
  assert.deepEqual(v, [], describeViolations(v));
  await button.click();
  await page.getByRole('heading', { name: 'Images', level: 1 }).waitFor();
  assert.deepEqual(exchanges, [{ verifierMatched: true }], 'one code exchange, with the verifier of the challenge');
  assert.match(await page.locator('.who').innerText(), /anna/);
  await page.goto(`${s.url}/projects`);
  await page.locator('section[data-project="egi-vo"]', { hasText: 'reader' }).waitFor();
  await screenshot(page, 'oidc-signed-in');
  await page.close();
});

test('OIDC callback with a state this tab did not start is refused with a message', { skip }, async () => {
  const page = await browser.context.newPage();
  await page.goto(`${s.url}/signin/callback?code=stolen&state=forged`);
  const alert = page.getByRole('alert');
  await alert.waitFor();
  assert.match(await alert.innerText(), /state mismatch/);
  assert.equal(exchanges.length, 1, 'no code exchange was attempted');
  assert.ok(await page.getByRole('link', { name: 'Back to sign-in' }).isVisible());
  await page.close();
});

/**
 * Who is signed in: the bearer token lives in sessionStorage (gone with the tab, never in a
 * cookie the browser would send by itself). OIDC sign-in is the authorization code flow with
 * PKCE (RFC 7636) as a public client: the verifier and state wait in sessionStorage across the
 * redirect to the issuer.
 */
const TOKEN_KEY = 'imago.token';
const NOTICE_KEY = 'imago.signout-reason';
const PKCE_KEY = 'imago.oidc';

const listeners = new Set<() => void>();

export function currentToken(): string | undefined {
  return sessionStorage.getItem(TOKEN_KEY) ?? undefined;
}

export function signIn(token: string): void {
  sessionStorage.setItem(TOKEN_KEY, token);
  sessionStorage.removeItem(NOTICE_KEY);
  for (const l of listeners) l();
}

export function signOut(reason?: string): void {
  sessionStorage.removeItem(TOKEN_KEY);
  if (reason) sessionStorage.setItem(NOTICE_KEY, reason);
  for (const l of listeners) l();
}

/** Why the last session ended (a revoked or expired token), once. */
export function takeSignOutReason(): string | undefined {
  const r = sessionStorage.getItem(NOTICE_KEY) ?? undefined;
  sessionStorage.removeItem(NOTICE_KEY);
  return r;
}

export function onAuthChange(l: () => void): () => void {
  listeners.add(l);
  return () => listeners.delete(l);
}

// ---- OIDC: authorization code + PKCE -------------------------------------------------------

interface OidcSettings {
  issuer: string;
  clientId: string;
  scopes: string;
  bearer: 'access_token' | 'id_token';
}

interface Discovery {
  authorization_endpoint: string;
  token_endpoint: string;
}

async function discover(issuer: string): Promise<Discovery> {
  const res = await fetch(`${issuer}/.well-known/openid-configuration`);
  if (!res.ok) throw new Error(`the issuer ${issuer} did not answer its discovery document (${res.status})`);
  return (await res.json()) as Discovery;
}

function base64url(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function randomString(bytes = 32): string {
  return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
}

const redirectUri = () => `${location.origin}/signin/callback`;

/** Leaves for the issuer's sign-in page. */
export async function startOidc(oidc: OidcSettings): Promise<void> {
  const d = await discover(oidc.issuer);
  const verifier = randomString(48);
  const state = randomString(16);
  const challenge = base64url(new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier))));
  sessionStorage.setItem(PKCE_KEY, JSON.stringify({ verifier, state }));
  const u = new URL(d.authorization_endpoint);
  u.search = new URLSearchParams({
    response_type: 'code',
    client_id: oidc.clientId,
    redirect_uri: redirectUri(),
    scope: oidc.scopes,
    state,
    code_challenge: challenge,
    code_challenge_method: 'S256',
  }).toString();
  location.assign(u.toString());
}

/** Back from the issuer: checks the state, exchanges the code, signs in with the chosen token. */
export async function finishOidc(oidc: OidcSettings, params: URLSearchParams): Promise<void> {
  const saved = JSON.parse(sessionStorage.getItem(PKCE_KEY) ?? 'null') as { verifier: string; state: string } | null;
  sessionStorage.removeItem(PKCE_KEY);
  const error = params.get('error');
  if (error) throw new Error(`the issuer refused the sign-in: ${error}${params.get('error_description') ? ` (${params.get('error_description')})` : ''}`);
  if (!saved || params.get('state') !== saved.state)
    throw new Error('this sign-in answer does not belong to a sign-in started here (state mismatch); sign in again');
  const code = params.get('code');
  if (!code) throw new Error('the issuer sent no authorization code; sign in again');
  const d = await discover(oidc.issuer);
  const res = await fetch(d.token_endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: redirectUri(), client_id: oidc.clientId, code_verifier: saved.verifier }),
  });
  const body = (await res.json().catch(() => ({}))) as Record<string, string>;
  if (!res.ok) throw new Error(`the issuer did not exchange the code: ${body.error_description ?? body.error ?? res.status}`);
  const token = body[oidc.bearer];
  if (!token) throw new Error(`the issuer's answer has no ${oidc.bearer}; ask the administrator to check IMAGO_CONSOLE_OIDC_BEARER`);
  signIn(token);
}

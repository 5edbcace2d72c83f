/**
 * Credentials → principal. Three ways in, one result:
 * - API tokens `imago_<id>_<secret>` (Bearer, or as the password of HTTP Basic for OCI clients):
 *   stored as sha256 of the secret (the secret is 256 random bits, so a fast hash is enough and
 *   a lookup by id keeps the comparison constant-time);
 * - OIDC bearer tokens (JWT) from a configured issuer, verified against its JWKS by `jose`:
 *   signature, `iss`, `aud`, `exp`/`nbf` with a small clock skew; `alg: none` and HMAC algorithms
 *   are refused; unknown key ids refetch the JWKS (key rotation) at most once per cooldown;
 * - nothing: the anonymous principal (sees public images only).
 *
 * Authentication happens once, when a request starts: an upload that began with a valid token
 * runs to its end even if the token expires meanwhile (Glance's uploads die with the Keystone
 * token).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { createRemoteJWKSet, decodeJwt, errors as joseErrors, jwtVerify, type JWTPayload } from 'jose';
import { ANONYMOUS, maxRole, type Principal, type Role } from './policy.js';
import type { AccessRepository, ClaimRule, OidcIssuer, TokenRecord } from './access-repository.js';
import { DomainError } from '../errors.js';

export const TOKEN_PREFIX = 'imago_';
const TOKEN_RE = /^imago_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;
const JWT_RE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;
const ASYMMETRIC = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'];

export interface AuthenticatorOptions {
  /** allowed clock skew for exp/nbf, seconds */
  clockSkewSec?: number;
  /** at most one JWKS refetch per issuer per this many ms (unknown `kid` → refetch) */
  jwksCooldownMs?: number;
  now?: () => number;
}

/** A new token's secret form and the hash to store. */
export function mintToken(): { id: string; token: string; secretHash: string } {
  const id = randomBytes(8).toString('hex');
  const secret = randomBytes(32).toString('base64url');
  return { id, token: `${TOKEN_PREFIX}${id}_${secret}`, secretHash: hashSecret(secret) };
}

function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

const unauthenticated = (message: string) => new DomainError('UNAUTHENTICATED', message);

export class Authenticator {
  private readonly jwks = new Map<string, ReturnType<typeof createRemoteJWKSet>>();
  private readonly touched = new Map<string, number>();

  constructor(
    private readonly repo: AccessRepository,
    private readonly opts: AuthenticatorOptions = {},
  ) {}

  /** The principal for an `Authorization` header value (absent: anonymous). Throws UNAUTHENTICATED. */
  async authenticate(authorization: string | undefined): Promise<Principal> {
    if (authorization === undefined || authorization.trim() === '') return ANONYMOUS;
    const m = /^(\S+)\s+(\S+)$/.exec(authorization.trim());
    if (!m) throw unauthenticated('the Authorization header must be "Bearer <token>" or "Basic <base64 user:token>"');
    const scheme = m[1]!.toLowerCase();
    let credential = m[2]!;
    if (scheme === 'basic') {
      const decoded = Buffer.from(credential, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon < 0) throw unauthenticated('HTTP Basic credentials must be "user:token" (the password is an Imago API token)');
      credential = decoded.slice(colon + 1);
    } else if (scheme !== 'bearer') {
      throw unauthenticated(`authorization scheme "${m[1]!.slice(0, 20)}" is not supported; use Bearer or Basic`);
    }
    if (credential.startsWith(TOKEN_PREFIX)) return this.fromToken(credential);
    if (JWT_RE.test(credential)) return this.fromJwt(credential);
    throw unauthenticated('the credential is neither an Imago API token (imago_...) nor a JWT; create a token with "imago token create"');
  }

  private now(): number {
    return this.opts.now?.() ?? Date.now();
  }

  private async fromToken(token: string): Promise<Principal> {
    const m = TOKEN_RE.exec(token);
    if (!m) throw unauthenticated('the API token is malformed (expected imago_<16 hex>_<43 base64url>); copy it again from "imago token create"');
    const rec = await this.repo.token(m[1]!);
    const given = Buffer.from(hashSecret(m[2]!), 'hex');
    if (!rec || !timingSafeEqual(given, Buffer.from(rec.secretHash, 'hex'))) throw unauthenticated('the API token is not valid (unknown or wrong secret)');
    if (rec.revokedAt) throw unauthenticated(`API token ${rec.id} ("${rec.name}") was revoked at ${rec.revokedAt.toISOString()}; create a new one`);
    const now = this.now();
    if (rec.expiresAt && rec.expiresAt.getTime() <= now)
      throw unauthenticated(`API token ${rec.id} ("${rec.name}") expired at ${rec.expiresAt.toISOString()}; create a new one`);
    this.touch(rec, now);
    return tokenPrincipal(rec);
  }

  /** last_used_at, written at most once a minute per token (not one write per request) */
  private touch(rec: TokenRecord, now: number): void {
    const last = this.touched.get(rec.id) ?? rec.lastUsedAt?.getTime() ?? 0;
    if (now - last < 60_000) return;
    this.touched.set(rec.id, now);
    void this.repo.touchToken(rec.id, now).catch(() => undefined);
  }

  private async fromJwt(jwt: string): Promise<Principal> {
    let unverified: JWTPayload;
    try {
      unverified = decodeJwt(jwt);
    } catch {
      throw unauthenticated('the bearer token is not a well-formed JWT');
    }
    const issuers = await this.repo.issuers();
    const iss = typeof unverified.iss === 'string' ? unverified.iss : '';
    const cfg = issuers.find((i) => i.issuer === iss);
    if (!cfg) throw unauthenticated(`tokens from issuer "${iss.slice(0, 200)}" are not trusted here; an administrator adds it with "imago oidc add"`);
    let payload: JWTPayload;
    try {
      const keys = await this.keysFor(cfg);
      ({ payload } = await jwtVerify(jwt, keys, {
        issuer: cfg.issuer,
        audience: cfg.audience,
        algorithms: ASYMMETRIC,
        clockTolerance: this.opts.clockSkewSec ?? 60,
        currentDate: new Date(this.now()),
      }));
    } catch (e) {
      throw unauthenticated(`the OIDC token from ${cfg.issuer} was refused: ${jwtReason(e)}`);
    }
    const userClaim = payload[cfg.usernameClaim];
    if (typeof userClaim !== 'string' || userClaim === '') throw unauthenticated(`the OIDC token has no "${cfg.usernameClaim}" claim to name the user`);
    const user = userClaim;
    const { roles: ruleRoles, groups } = applyRules(await this.repo.rules(), cfg.issuer, payload, new Set((await this.repo.projects()).map((p) => p.name)));
    const roles = await this.repo.rolesOf(user, groups);
    for (const [p, r] of ruleRoles) roles.set(p, maxRole(roles.get(p), r));
    const u = await this.repo.user(user);
    return { kind: 'oidc', user, label: `${user} (oidc ${cfg.issuer})`, serverAdmin: u?.serverAdmin ?? false, roles };
  }

  private async keysFor(cfg: OidcIssuer): Promise<ReturnType<typeof createRemoteJWKSet>> {
    const cached = this.jwks.get(cfg.issuer);
    if (cached) return cached;
    let url = cfg.jwksUrl;
    if (!url) {
      const discovery = `${cfg.issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
      checkKeyUrl(discovery);
      const res = await fetch(discovery, { signal: AbortSignal.timeout(10_000) });
      if (!res.ok) throw new Error(`OIDC discovery at ${discovery} answered HTTP ${res.status}`);
      const doc = (await res.json()) as { jwks_uri?: unknown };
      if (typeof doc.jwks_uri !== 'string') throw new Error(`OIDC discovery at ${discovery} has no jwks_uri`);
      url = doc.jwks_uri;
    }
    checkKeyUrl(url);
    const set = createRemoteJWKSet(new URL(url), { cooldownDuration: this.opts.jwksCooldownMs ?? 30_000, timeoutDuration: 10_000 });
    this.jwks.set(cfg.issuer, set);
    return set;
  }

  /** Forget cached key sets (after an issuer is changed). */
  forgetIssuer(issuer: string): void {
    this.jwks.delete(issuer);
  }
}

export function tokenPrincipal(rec: TokenRecord): Principal {
  const roles = new Map<string, Role>();
  if (rec.project && rec.role !== 'server-admin') roles.set(rec.project, rec.role);
  return {
    kind: 'token',
    user: rec.user,
    label: `${rec.user} (token ${rec.name} ${rec.id})`,
    serverAdmin: rec.role === 'server-admin',
    roles,
    tokenId: rec.id,
  };
}

/** Keys come over https, or over http from a loopback address only (tests, a local IdP). */
function checkKeyUrl(url: string): void {
  const u = new URL(url);
  const loopback = u.hostname === '127.0.0.1' || u.hostname === 'localhost' || u.hostname === '[::1]';
  if (u.protocol !== 'https:' && !(u.protocol === 'http:' && loopback)) throw new Error(`key URL ${url} must be https`);
}

function jwtReason(e: unknown): string {
  if (e instanceof joseErrors.JWTExpired) return 'it has expired (exp); get a fresh token';
  if (e instanceof joseErrors.JWTClaimValidationFailed) return `claim "${e.claim}" failed: ${e.reason === 'check_failed' ? e.message : e.reason}`;
  if (e instanceof joseErrors.JOSEAlgNotAllowed) return 'its signing algorithm is not allowed (asymmetric algorithms only; never "none")';
  if (e instanceof joseErrors.JWSSignatureVerificationFailed) return "its signature does not verify against the issuer's keys";
  if (e instanceof joseErrors.JWKSNoMatchingKey) return 'no key of the issuer matches its key id (kid)';
  if (e instanceof joseErrors.JWSInvalid || e instanceof joseErrors.JWTInvalid) return `it is malformed (${(e as Error).message})`;
  return (e as Error).message ?? String(e);
}

/**
 * Claim rules → project roles and group memberships. A rule's value is exact, or holds one
 * `{project}` placeholder that captures a project name (only existing projects count), e.g.
 * `urn:mace:egi.eu:group:{project}:role=member#aai.egi.eu` → reader on the VO's project.
 */
export function applyRules(
  rules: readonly ClaimRule[],
  issuer: string,
  claims: JWTPayload,
  projects: ReadonlySet<string>,
): { roles: Map<string, Role>; groups: string[] } {
  const roles = new Map<string, Role>();
  const groups: string[] = [];
  for (const rule of rules) {
    if (rule.issuer && rule.issuer !== issuer) continue;
    const raw = claims[rule.claim];
    const values = (Array.isArray(raw) ? raw : [raw]).filter((v): v is string => typeof v === 'string');
    for (const v of values) {
      let project = rule.project;
      if (rule.value.includes('{project}')) {
        const [pre, post] = rule.value.split('{project}') as [string, string];
        if (!(v.startsWith(pre) && v.endsWith(post) && v.length > pre.length + post.length)) continue;
        project = v.slice(pre.length, v.length - post.length);
        if (!projects.has(project)) continue;
      } else if (v !== rule.value) continue;
      if (rule.group) groups.push(rule.group);
      if (rule.role && project) roles.set(project, maxRole(roles.get(project), rule.role));
    }
  }
  return { roles, groups };
}

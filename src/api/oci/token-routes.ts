/**
 * `/v2/token`: the realm of the door's challenge (auth-challenge.ts).
 *
 * `GET` (distribution's token protocol, what every client speaks): a client presents HTTP Basic
 * (any username, an Imago API token or an OIDC access token as the password) or a Bearer token and
 * gets back a bearer token in the shape docker's token protocol uses (`token`, `access_token`,
 * `expires_in`, `issued_at`). No credentials: 401 asking for Basic.
 *
 * `POST` (distribution's OAuth2 token spec, docs/spec/auth/oauth.md; what docker and containerd
 * use when they hold a refresh token): a form (`application/x-www-form-urlencoded`) with
 * `grant_type=password` (`username`, `password`) or `grant_type=refresh_token` (`refresh_token`),
 * optional `service`, `client_id`, `scope`, `access_type`. The answer is `access_token`, `scope`,
 * `expires_in`, `issued_at`, and `refresh_token` when `access_type=offline` was asked for or the
 * grant was a refresh token (the spec: "the same refresh token and not a new one"). Refusals are
 * RFC 6749 §5.2 bodies: 400 `invalid_request` (a parameter missing or wrong, named),
 * `unsupported_grant_type`, `invalid_grant` (the password or refresh token is not a valid credential).
 *
 * Either way, the token handed out is the checked credential itself, and so is the refresh token:
 * Imago has one kind of credential, and what it may do is decided per request by the one access
 * model, not by scopes frozen into a token (so `scope` echoes the request; revoking the Imago token
 * revokes both). Storing it as a refresh token is what the client does with the password anyway.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { DomainError } from '../../domain/errors.js';
import { needLogin } from '../../domain/access/authorizer.js';
import { withBodyIdleTimeout } from '../http/body-idle-timeout.js';
import { header } from '../http/request-header.js';
import { OCI_SERVICE } from './auth-challenge.js';
import type { OciRoute } from './oci-route.js';

/** What clients are told to cache the token for; re-fetching is cheap and re-checks the credential. */
const EXPIRES_IN_SEC = 300;
/** a token request is a few hundred bytes; a JWT access token as the password a few KiB */
const MAX_FORM_BYTES = 64 * 1024;

export function tokenRoutes(authenticate: (authorization: string | undefined) => Promise<unknown>, opts: { bodyIdleTimeoutMs: number }): OciRoute[] {
  return [
    {
      methods: ['GET'],
      pattern: /^token$/,
      async handler(req, reply) {
        const authorization = header(req, 'authorization');
        if (authorization === undefined || authorization.trim() === '') throw needLogin();
        await authenticate(authorization);
        const token = credentialOf(authorization);
        return reply.header('cache-control', 'no-store').send({ token, access_token: token, expires_in: EXPIRES_IN_SEC, issued_at: new Date().toISOString() });
      },
    },
    {
      methods: ['POST'],
      pattern: /^token$/,
      async handler(req, reply) {
        const type = (header(req, 'content-type') ?? '').split(';')[0]!.trim().toLowerCase();
        if (type !== 'application/x-www-form-urlencoded') {
          return oauthError(
            reply,
            'invalid_request',
            `send the token request as application/x-www-form-urlencoded, not ${type.slice(0, 100) || 'no content type'}`,
          );
        }
        const form = await readForm(req, opts.bodyIdleTimeoutMs);
        if (form === undefined) return oauthError(reply, 'invalid_request', `the token request is over ${MAX_FORM_BYTES} bytes`);
        const service = form.get('service');
        if (service !== null && service !== OCI_SERVICE) {
          return oauthError(reply, 'invalid_request', `service "${service.slice(0, 100)}" is not this registry's; use service=${OCI_SERVICE}`);
        }
        const grant = form.get('grant_type');
        let credential: string;
        if (grant === 'password') {
          const password = form.get('password');
          if (!password) return oauthError(reply, 'invalid_request', 'grant_type=password needs a password: an Imago API token (or an OIDC access token)');
          credential = password;
        } else if (grant === 'refresh_token') {
          const refresh = form.get('refresh_token');
          if (!refresh) return oauthError(reply, 'invalid_request', 'grant_type=refresh_token needs the refresh_token parameter');
          credential = refresh;
        } else {
          return oauthError(
            reply,
            grant === null ? 'invalid_request' : 'unsupported_grant_type',
            grant === null
              ? 'grant_type is missing; use password or refresh_token'
              : `grant_type "${grant.slice(0, 50)}" is not supported; use password or refresh_token`,
          );
        }
        try {
          await authenticate(`Bearer ${credential}`);
        } catch (e) {
          if (e instanceof DomainError && e.code === 'UNAUTHENTICATED') {
            return oauthError(reply, 'invalid_grant', `the ${grant === 'password' ? 'password' : 'refresh token'} is not a valid credential: ${e.message}`);
          }
          throw e;
        }
        const offline = grant === 'refresh_token' || form.get('access_type') === 'offline';
        return reply.header('cache-control', 'no-store').send({
          access_token: credential,
          token: credential,
          scope: form.get('scope') ?? '',
          expires_in: EXPIRES_IN_SEC,
          issued_at: new Date().toISOString(),
          ...(offline ? { refresh_token: credential } : {}),
        });
      },
    },
  ];
}

/** The Imago token or JWT inside an Authorization header the authenticator accepted. */
function credentialOf(authorization: string): string {
  const [scheme, value] = authorization.trim().split(/\s+/, 2) as [string, string];
  if (scheme.toLowerCase() === 'bearer') return value;
  const decoded = Buffer.from(value, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) throw new DomainError('UNAUTHENTICATED', 'HTTP Basic credentials must be "user:token" (the password is an Imago API token)');
  return decoded.slice(colon + 1);
}

/** The form body; undefined when it passes the limit (not read on). */
async function readForm(req: FastifyRequest, idleMs: number): Promise<URLSearchParams | undefined> {
  const announced = Number(header(req, 'content-length') ?? 0);
  if (announced > MAX_FORM_BYTES) return undefined;
  const parts: Buffer[] = [];
  let n = 0;
  for await (const chunk of withBodyIdleTimeout(req.raw, idleMs, 'request')) {
    n += chunk.length;
    if (n > MAX_FORM_BYTES) return undefined;
    parts.push(Buffer.from(chunk));
  }
  return new URLSearchParams(Buffer.concat(parts).toString('utf8'));
}

/** RFC 6749 §5.2: 400 with `error` and `error_description`. */
function oauthError(reply: FastifyReply, error: 'invalid_request' | 'unsupported_grant_type' | 'invalid_grant', description: string): FastifyReply {
  return reply.code(400).header('cache-control', 'no-store').type('application/json').send({ error, error_description: description });
}

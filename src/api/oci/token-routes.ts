/**
 * `/v2/token`: the realm of the door's challenge (auth-challenge.ts). A client presents HTTP Basic
 * (any username, an Imago API token or an OIDC access token as the password) or a Bearer token and
 * gets back a bearer token in the shape docker's token protocol uses (`token`, `access_token`,
 * `expires_in`, `issued_at`). The token handed out is the credential itself, once it has been
 * checked: Imago has one kind of credential, and what it may do is decided per request by the one
 * access model, not by scopes frozen into a token. No credentials: 401 asking for Basic.
 */
import { DomainError } from '../../domain/errors.js';
import { needLogin } from '../../domain/access/authorizer.js';
import { header } from '../http/request-header.js';
import type { OciRoute } from './oci-route.js';

/** What clients are told to cache the token for; re-fetching is cheap and re-checks the credential. */
const EXPIRES_IN_SEC = 300;

export function tokenRoutes(authenticate: (authorization: string | undefined) => Promise<unknown>): OciRoute[] {
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

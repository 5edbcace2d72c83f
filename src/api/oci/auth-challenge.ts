/**
 * How the OCI door asks for credentials, the way docker, oras, skopeo and containerd expect
 * (distribution's token authentication): a 401 carries
 * `WWW-Authenticate: Bearer realm="<this server>/v2/token",service="imago",scope="repository:<name>:<actions>"`;
 * the client gets a token from the realm (token-routes.ts) with HTTP Basic — any username, an Imago
 * API token (or an OIDC access token) as the password — and sends it as `Bearer`. Clients that send
 * Basic on every request directly are served too: the authenticator takes either.
 */
import type { FastifyRequest } from 'fastify';

export const OCI_SERVICE = 'imago';

/** The repository a request path names, and the actions it needs, for the challenge's scope. */
export function scopeOf(req: FastifyRequest): string | undefined {
  const path = req.url.split('?')[0]!;
  const m = /^\/v2\/(.+?)\/(?:blobs|manifests|tags|referrers)\//.exec(path);
  if (!m) return undefined;
  const write = req.method !== 'GET' && req.method !== 'HEAD';
  return `repository:${m[1]}:${write ? 'pull,push' : 'pull'}`;
}

/** The realm: this server's token endpoint, as the client reached the server. */
export function tokenRealm(req: FastifyRequest): string {
  // the Host header is the client's: only a host[:port] goes into the quoted realm
  const host = /^[A-Za-z0-9.\-[\]:]{1,300}$/.test(req.host) ? req.host : 'localhost';
  return `${req.protocol}://${host}/v2/token`;
}

export function challenge(req: FastifyRequest): string {
  // the token endpoint itself takes Basic
  if (req.url.split('?')[0] === '/v2/token') return `Basic realm="${OCI_SERVICE}"`;
  const scope = scopeOf(req);
  return `Bearer realm="${tokenRealm(req)}",service="${OCI_SERVICE}"${scope ? `,scope="${scope}"` : ''}`;
}
